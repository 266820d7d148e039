"""What trainers changed on their course pages, and what they did there, in SQLite.

The site file stays as the operator wrote it ("config only sets"); a trainer's edits of a
course (participants, dates, reservation, description) are kept here and laid over the
site file's course by :meth:`Course.with_edits`. The Courses service writes; the hub's
spawner and authenticator only read (a missing database means: no edits yet).

Tables: ``edits`` (one row per course: the current edits as JSON) and ``events`` (every
edit, start-all, stop-all, collection and materials update, with who and when).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryhub.spawners.private_state import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    course TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    course TEXT NOT NULL,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_course ON events (course, id);
"""


@dataclass(frozen=True)
class Event:
    id: int
    course: str
    at: float
    who: str
    kind: str
    detail: dict[str, Any]


class CourseStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self, write: bool) -> sqlite3.Connection | None:
        if not write and not self.path.exists():
            return None
        if write:
            private_file(self.path)  # 0600 in a 0700 folder, before SQLite writes a byte
        db = sqlite3.connect(self.path, timeout=10)
        if write:
            db.executescript(SCHEMA)
        return db

    def edits(self) -> dict[str, dict[str, Any]]:
        """Every course's edits, by course name ({} before the first edit)."""
        db = self._connect(write=False)
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT course, data FROM edits").fetchall()
        except sqlite3.OperationalError:  # created, tables not yet
            return {}
        finally:
            db.close()
        return {course: json.loads(data) for course, data in rows}

    def save_edits(self, course: str, changes: Mapping[str, Any], who: str) -> dict[str, Any]:
        """Merge ``changes`` into the course's edits, log the edit, return the new edits."""
        db = self._connect(write=True)
        assert db is not None
        with db:
            row = db.execute("SELECT data FROM edits WHERE course = ?", (course,)).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **changes}
            _store_edits(db, course, merged, who, "edit", changes)
        db.close()
        return merged

    def answer(self, course: str, who: str, accept: bool) -> dict[str, Any]:
        """Record ``who``'s answer to their invitation to ``course`` (in the course's edits,
        where spawner and authenticator read it); returns the new edits."""
        db = self._connect(write=True)
        assert db is not None
        with db:
            row = db.execute("SELECT data FROM edits WHERE course = ?", (course,)).fetchone()
            data = json.loads(row[0]) if row else {}
            accepted = set(data.get("accepted_users") or ()) - {who}
            declined = set(data.get("declined_users") or ()) - {who}
            (accepted if accept else declined).add(who)
            data.update(accepted_users=sorted(accepted), declined_users=sorted(declined))
            kind = "invitation-accepted" if accept else "invitation-declined"
            _store_edits(db, course, data, who, kind, {"participant": who})
        db.close()
        return data

    def log(self, course: str, who: str, kind: str, detail: Mapping[str, Any]) -> None:
        db = self._connect(write=True)
        assert db is not None
        with db:
            db.execute(
                "INSERT INTO events (course, at, who, kind, detail) VALUES (?, ?, ?, ?, ?)",
                (course, time.time(), who, kind, json.dumps(dict(detail))),
            )
        db.close()

    def events(self, course: str, limit: int = 50) -> list[Event]:
        db = self._connect(write=False)
        if db is None:
            return []
        try:
            rows = db.execute(
                "SELECT id, course, at, who, kind, detail FROM events WHERE course = ? "
                "ORDER BY id DESC LIMIT ?",
                (course, limit),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def _store_edits(
    db: sqlite3.Connection,
    course: str,
    data: Mapping[str, Any],
    who: str,
    kind: str,
    detail: Mapping[str, Any],
) -> None:
    """Replace the course's edits with ``data`` and log the change, in ``db``'s transaction."""
    now = time.time()
    db.execute(
        "INSERT INTO edits (course, data, updated_by, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(course) DO UPDATE SET data = excluded.data, "
        "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (course, json.dumps(dict(data)), who, now),
    )
    db.execute(
        "INSERT INTO events (course, at, who, kind, detail) VALUES (?, ?, ?, ?, ?)",
        (course, now, who, kind, json.dumps(dict(detail))),
    )
