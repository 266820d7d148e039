"""The Reports service's record of every run and schedule (SQLite).

A run goes queued → running → succeeded | failed | cancelled, and never back: the store
refuses any other move, so a restarted service that reconciles runs with Slurm cannot
resurrect a finished run. State lives here, not in memory, so a restart loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from factoryhub.spawners.private_state import private_file

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
MOVES = {
    "queued": {"running", "succeeded", "failed", "cancelled"},
    "running": {"succeeded", "failed", "cancelled"},
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report TEXT NOT NULL,
    user TEXT NOT NULL,
    parameters TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    run_as TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    schedule_id INTEGER,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    notebook_path TEXT NOT NULL DEFAULT '',
    html_path TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    failed_cell INTEGER,
    upload_token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_user ON runs (user, id);
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report TEXT NOT NULL,
    user TEXT NOT NULL,
    cron TEXT NOT NULL,
    parameters TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL,
    last_fired TEXT NOT NULL,
    paused TEXT NOT NULL DEFAULT '',
    site INTEGER NOT NULL DEFAULT 0
);
"""
# columns added since the first release: (table, column, definition)
ADDED_COLUMNS = (
    ("schedules", "paused", "TEXT NOT NULL DEFAULT ''"),
    ("schedules", "site", "INTEGER NOT NULL DEFAULT 0"),
    # sha256 of the run's upload token (rest access mode); "" when none is valid
    ("runs", "upload_token", "TEXT NOT NULL DEFAULT ''"),
)


class StoreError(ValueError):
    """A change the store refuses (unknown run, a move a run's status cannot make)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Run:
    id: int
    report: str
    user: str
    parameters: dict[str, Any]
    project: str
    account: str
    run_as: str
    status: str
    job_id: str
    schedule_id: int | None
    created: str
    started: str | None
    finished: str | None
    notebook_path: str
    html_path: str
    error: str
    failed_cell: int | None

    @property
    def duration_s(self) -> float | None:
        if not self.started or not self.finished:
            return None
        start, end = datetime.fromisoformat(self.started), datetime.fromisoformat(self.finished)
        return (end - start).total_seconds()


@dataclass(frozen=True)
class Schedule:
    id: int
    report: str
    user: str
    cron: str
    parameters: dict[str, Any]
    project: str
    enabled: bool
    created: str
    last_fired: str
    paused: str = ""  # why the schedule does not fire ("" when it does)
    site: bool = False  # a site report (reports.site_reports), run as the service user


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = private_file(path)  # 0600 in a 0700 folder, before SQLite writes a byte
        with self._db() as db:
            db.executescript(SCHEMA)
            for table, column, definition in ADDED_COLUMNS:
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ runs

    def add_run(
        self,
        report: str,
        user: str,
        parameters: Mapping[str, Any],
        *,
        project: str = "",
        account: str = "",
        run_as: str = "",
        schedule_id: int | None = None,
    ) -> Run:
        """A new queued run of ``report``, asked for by ``user``, to run as ``run_as``
        (default: ``user``) under ``account``."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO runs (report, user, parameters, project, account, run_as, status, "
                "schedule_id, created) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (
                    report,
                    user,
                    json.dumps(dict(parameters)),
                    project,
                    account,
                    run_as or user,
                    schedule_id,
                    _now(),
                ),
            )
            run_id = cur.lastrowid
        assert run_id is not None
        return self.run(run_id)

    def run(self, run_id: int) -> Run:
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id}")
        return _run(row)

    def runs(self, user: str | None = None, limit: int = 200) -> list[Run]:
        """Newest first; only ``user``'s when given."""
        query = "SELECT * FROM runs"
        args: tuple[str, ...] = ()
        if user is not None:
            query, args = query + " WHERE user = ?", (user,)
        with self._db() as db:
            rows = db.execute(f"{query} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_run(r) for r in rows]

    def unfinished(self) -> list[Run]:
        """Runs still queued or running: what the service reconciles with Slurm on start."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY id"
            ).fetchall()
        return [_run(r) for r in rows]

    def count_runs(self, user: str, *, active: bool = False, since: str = "") -> int:
        """How many runs ``user`` asked for: queued or running ones (``active``), or those
        created at or after ``since`` (an ISO time in UTC)."""
        query, args = "SELECT COUNT(*) FROM runs WHERE user = ?", [user]
        if active:
            query += " AND status IN ('queued', 'running')"
        if since:
            query, args = query + " AND created >= ?", [*args, since]
        with self._db() as db:
            return int(db.execute(query, args).fetchone()[0])

    def set_job(self, run_id: int, job_id: str) -> Run:
        if not job_id.isdigit():
            raise StoreError(f"not a Slurm job id: {job_id!r}")
        with self._db() as db:
            db.execute("UPDATE runs SET job_id = ? WHERE id = ?", (job_id, run_id))
        return self.run(run_id)

    def move(self, run_id: int, status: str, **fields: Any) -> Run:
        """Change a run's status (and its output fields); refuse impossible moves."""
        allowed_fields = {"notebook_path", "html_path", "error", "failed_cell"}
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        if set(fields) - allowed_fields:
            raise StoreError(f"unknown fields: {', '.join(sorted(set(fields) - allowed_fields))}")
        run = self.run(run_id)
        if status == run.status:
            return run
        if status not in MOVES.get(run.status, set()):
            raise StoreError(f"run {run_id} is {run.status}; it cannot become {status}")
        stamps: dict[str, Any] = {}
        if status == "running" or (status in FINAL and run.started is None):
            stamps["started"] = _now()
        if status in FINAL:
            stamps["finished"] = _now()
            stamps["upload_token"] = ""  # an ended run takes no upload
        changes = {"status": status, **stamps, **fields}
        assignments = ", ".join(f"{k} = ?" for k in changes)
        with self._db() as db:
            db.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?",  # noqa: S608 - keys checked above
                (*changes.values(), run_id),
            )
        return self.run(run_id)

    def set_upload_token(self, run_id: int, digest: str) -> None:
        """Keep the sha256 ``digest`` of the token with which ``run_id``'s job uploads its
        outputs (never the token itself: the store's file does not let anyone upload)."""
        with self._db() as db:
            db.execute("UPDATE runs SET upload_token = ? WHERE id = ?", (digest, run_id))

    def take_upload_token(self, run_id: int, digest: str) -> bool:
        """Whether ``digest`` is ``run_id``'s upload token, in which case it is used up: one
        statement, so two uploads at once cannot both be let in."""
        if not digest:
            return False
        with self._db() as db:
            cursor = db.execute(
                "UPDATE runs SET upload_token = '' WHERE id = ? AND upload_token = ?"
                " AND status IN ('queued', 'running')",
                (run_id, digest),
            )
        return cursor.rowcount == 1

    # ------------------------------------------------------------------ schedules

    def add_schedule(
        self,
        report: str,
        user: str,
        cron: str,
        parameters: Mapping[str, Any],
        project: str = "",
        site: bool = False,
    ) -> Schedule:
        now = _now()
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO schedules (report, user, cron, parameters, project, created, "
                "last_fired, site) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (report, user, cron, json.dumps(dict(parameters)), project, now, now, int(site)),
            )
            schedule_id = cur.lastrowid
        assert schedule_id is not None
        return self.schedule(schedule_id)

    def schedule(self, schedule_id: int) -> Schedule:
        with self._db() as db:
            row = db.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        if row is None:
            raise StoreError(f"no schedule {schedule_id}")
        return _schedule(row)

    def schedules(self, enabled_only: bool = False) -> list[Schedule]:
        where = "WHERE enabled = 1" if enabled_only else "WHERE 1 = 1"
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM schedules {where} ORDER BY id").fetchall()  # noqa: S608 - fixed text
        return [_schedule(r) for r in rows]

    def fired(self, schedule_id: int, when: datetime) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE schedules SET last_fired = ? WHERE id = ?",
                (when.isoformat(timespec="seconds"), schedule_id),
            )

    def delete_schedule(self, schedule_id: int) -> None:
        """Remove a schedule; its past runs stay in the history."""
        self.schedule(schedule_id)
        with self._db() as db:
            db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def enable(self, schedule_id: int, enabled: bool) -> Schedule:
        with self._db() as db:
            db.execute("UPDATE schedules SET enabled = ? WHERE id = ?", (int(enabled), schedule_id))
        return self.schedule(schedule_id)

    def pause(self, schedule_id: int, reason: str) -> Schedule:
        """Stop firing, saying why (``""``: fire again)."""
        with self._db() as db:
            db.execute("UPDATE schedules SET paused = ? WHERE id = ?", (reason, schedule_id))
        return self.schedule(schedule_id)

    def count_schedules(self, user: str) -> int:
        """``user``'s own schedules (site reports are nobody's)."""
        with self._db() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM schedules WHERE user = ? AND site = 0", (user,)
            ).fetchone()
        return int(row[0])


def _run(row: sqlite3.Row) -> Run:
    data = dict(row)
    data.pop("upload_token", None)  # the store's business only
    data["parameters"] = json.loads(data["parameters"])
    return Run(**data)


def _schedule(row: sqlite3.Row) -> Schedule:
    data = dict(row)
    data["parameters"] = json.loads(data["parameters"])
    data["enabled"] = bool(data["enabled"])
    data["site"] = bool(data["site"])
    return Schedule(**data)
