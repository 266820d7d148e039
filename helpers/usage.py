"""Who used the factory, and how much: jobs from Slurm accounting (``sacct --json``) as a
table, and CPU and GPU hours per project (Slurm account), per user and per day.

    from factoryhub.helpers import usage
    period = usage.period(days=30)
    jobs = usage.jobs_in(period)            # runs sacct --json --allusers for the period
    usage.per_project(jobs)                 # jobs, users, CPU and GPU hours per account
    usage.per_day(jobs, period)             # CPU hours per day and account

Hours are allocated hours: cores (the allocated ``cpu`` TRES) or GPUs (``gres/gpu``) times the
time the job ran, whether it kept them busy or not; that is what a project is charged for.
Jobs are cut at the period's edges (what ``sacct --truncate`` does to its text output), so a
job that ran across them counts only with its time inside; a job still running counts up to
now or the period's end, whichever comes first.

Slurm's JSON is read by factoryhub's one parser (``factoryhub.spawners.slurm.job_json``): job
names are their users' and may hold newlines and ``|``, so sacct's text is never parsed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from factoryhub.spawners.slurm import blocking, commands
from factoryhub.spawners.slurm.client import SlurmUnavailable
from factoryhub.spawners.slurm.job_json import AccountedJob, accounted_jobs, loads

__all__ = [
    "COLUMNS",
    "AccountingUnavailable",
    "Period",
    "jobs_in",
    "parse_sacct",
    "per_day",
    "per_project",
    "per_user",
    "period",
    "run_sacct",
    "sacct_command",
]

#: The columns of :func:`parse_sacct`'s table.
COLUMNS = (
    "job_id",
    "user",
    "account",
    "partition",
    "state",
    "start",
    "end",
    "elapsed_s",
    "cpus",
    "gpus",
    "cpu_hours",
    "gpu_hours",
    "name",
)
TIMEOUT_S = 120.0


class AccountingUnavailable(RuntimeError):
    """``sacct`` is missing, or Slurm accounting (slurmdbd) did not answer."""


@dataclass(frozen=True)
class Period:
    """From ``start`` (included) to ``end`` (excluded), in the cluster's local time."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        """``2026-11-01 to 2026-11-30`` for whole days, else with the times of day."""
        midnight = datetime.min.time()
        since = (
            f"{self.start:%Y-%m-%d}"
            if self.start.time() == midnight
            else f"{self.start:%Y-%m-%d %H:%M}"
        )
        if self.end.time() == midnight:
            return f"{since} to {self.end - timedelta(days=1):%Y-%m-%d}"
        return f"{since} to {self.end:%Y-%m-%d %H:%M}"

    @property
    def days(self) -> pd.DatetimeIndex:
        """Every calendar day the period touches."""
        last = self.end - timedelta(microseconds=1)
        return pd.date_range(self.start.date(), last.date(), freq="D")


def _parse_when(text: str, *, end: bool) -> datetime:
    """An ISO date or date and time; a date alone as an ``end`` means the whole day."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"not an ISO date (2026-11-01) or date and time: {text!r}") from e
    if moment.tzinfo is not None:
        moment = moment.astimezone().replace(tzinfo=None)  # sacct speaks local time
    is_date = len(text) == 10  # YYYY-MM-DD, no time of day
    return moment + timedelta(days=1) if end and is_date else moment


def period(days: int = 30, start: str = "", end: str = "", now: datetime | None = None) -> Period:
    """The report's period: ``days`` days up to ``end`` (default: now). ``start`` and ``end``
    are ISO dates or dates and times; an ``end`` date is included whole (``end="2026-11-30"``
    runs to midnight after it); a ``start`` overrides ``days``."""
    now = (now or datetime.now()).replace(microsecond=0)
    until = _parse_when(end, end=True) if end else now
    if start:
        since = _parse_when(start, end=False)
    else:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        since = until - timedelta(days=days)
    if since >= until:
        raise ValueError(f"the period starts ({since}) after it ends ({until})")
    return Period(since, until)


def sacct_command(start: datetime, end: datetime, accounts: Sequence[str] = ()) -> list[str]:
    """``sacct --json`` for every user's jobs (one record per job) that ran in the period."""
    return commands.usage_argv(start, end, accounts)


def run_sacct(argv: Sequence[str], timeout: float = TIMEOUT_S) -> str:
    """Run ``sacct``; its standard output, or :class:`AccountingUnavailable` saying why not."""
    try:
        done = blocking.run_argv(argv, timeout=timeout)
    except SlurmUnavailable as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise AccountingUnavailable(
                f"{argv[0]} is not installed here: usage reports read Slurm accounting with "
                "sacct, run them on a node of the cluster"
            ) from e
        raise AccountingUnavailable(
            f"Slurm accounting did not answer within {timeout:g} s (is slurmdbd running?)"
        ) from e
    if done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise AccountingUnavailable(
            f"Slurm accounting did not answer: {message} (usage reports need "
            "AccountingStorageType=accounting_storage/slurmdbd and a running slurmdbd)"
        )
    return done.stdout


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame[["start", "end"]] = frame[["start", "end"]].astype("datetime64[ns]")
    return frame.astype(
        {"elapsed_s": "int64", "cpus": "int64", "gpus": "int64",
         "cpu_hours": "float64", "gpu_hours": "float64"}
    )  # fmt: skip


def _time(epoch: int) -> pd.Timestamp:
    """An epoch as local time (sacct's periods are local); 0 (not started, running) is NaT."""
    return pd.Timestamp(datetime.fromtimestamp(epoch)) if epoch > 0 else pd.NaT


def _cut(job: AccountedJob, when: Period | None, now: float) -> tuple[int, int, int]:
    """(start, end, elapsed seconds) of ``job`` inside ``when`` (no cut without one)."""
    if when is None or job.start <= 0:
        return job.start, job.end, job.elapsed_s if job.start > 0 else 0
    first, last = int(when.start.timestamp()), int(when.end.timestamp())
    start, end = max(job.start, first), min(job.end or min(int(now), last), last)
    if start == job.start and end == job.end:
        return start, end, job.elapsed_s  # inside the period: Slurm's own figure
    return start, max(end, start), max(end - start, 0)


def parse_sacct(text: str, when: Period | None = None, now: float | None = None) -> pd.DataFrame:
    """The jobs of a ``sacct --json`` answer, one row each (columns :data:`COLUMNS`), cut at
    the edges of ``when`` when given (a running job then ends ``now``, or at the period's end).
    Without ``when``, running jobs have ``end`` NaT; jobs never started have ``start`` NaT."""
    try:
        records = accounted_jobs(loads(text, "the accounting query"))
    except SlurmUnavailable as e:
        raise AccountingUnavailable(str(e)) from None
    now = time.time() if now is None else now
    rows = []
    for job in records:
        start, end, elapsed = _cut(job, when, now)
        rows.append(
            {
                "job_id": job.job_id,
                "user": job.user,
                "account": job.account,
                "partition": job.partition,
                "state": job.state,
                "start": _time(start),
                "end": _time(end),
                "elapsed_s": elapsed,
                "cpus": job.cpus,
                "gpus": job.gpus,
                "cpu_hours": elapsed * job.cpus / 3600,
                "gpu_hours": elapsed * job.gpus / 3600,
                "name": job.name,
            }
        )
    if not rows:
        return _empty()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame[["start", "end"]] = frame[["start", "end"]].astype("datetime64[ns]")
    return frame


def jobs_in(
    when: Period, accounts: Sequence[str] = (), timeout: float = TIMEOUT_S, truncate: bool = True
) -> pd.DataFrame:
    """Every user's jobs that ran in ``when`` (of ``accounts`` only, when given), cut at its
    edges unless ``truncate`` is False."""
    text = run_sacct(sacct_command(when.start, when.end, accounts), timeout)
    return parse_sacct(text, when if truncate else None)


def _summary(jobs: pd.DataFrame, by: str) -> pd.DataFrame:
    other = "users" if by == "account" else "projects"
    other_column = "user" if by == "account" else "account"
    table = jobs.groupby(by).agg(
        jobs=("job_id", "count"),
        **{other: (other_column, "nunique")},
        cpu_hours=("cpu_hours", "sum"),
        gpu_hours=("gpu_hours", "sum"),
    )
    return table.sort_values(["cpu_hours", "gpu_hours", "jobs"], ascending=False)


def per_project(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per account: jobs, distinct users, CPU hours, GPU hours; the most CPU hours first."""
    return _summary(jobs, "account")


def per_user(jobs: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Per user: jobs, distinct projects, CPU hours, GPU hours; the ``top`` users by CPU hours
    (then GPU hours), all users when ``top`` is None."""
    table = _summary(jobs, "user")
    return table if top is None else table.head(top)


def per_day(
    jobs: pd.DataFrame, when: Period | None = None, by: str = "account", hours: str = "cpu_hours"
) -> pd.DataFrame:
    """``hours`` (``cpu_hours`` or ``gpu_hours``) per calendar day (rows) and ``by`` (columns).

    A job that ran across midnight counts on each day with its share of the time; each job's
    shares add up to its hours. With ``when``, every day of the period is a row (0 where
    nothing ran)."""
    ran = jobs[jobs["start"].notna() & (jobs[hours] > 0)]
    start = ran["start"]
    # a job still running (end NaT without --truncate) ran until start + elapsed
    end = ran["end"].fillna(start + pd.to_timedelta(ran["elapsed_s"], unit="s"))
    end = end.where(end > start, start + pd.Timedelta(seconds=1))
    first, last = start.dt.normalize(), (end - pd.Timedelta(microseconds=1)).dt.normalize()
    n_days = ((last - first).dt.days + 1).to_numpy()
    rows = np.repeat(np.arange(len(ran)), n_days)
    offsets = np.arange(n_days.sum()) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    day = first.to_numpy()[rows] + offsets * np.timedelta64(1, "D")
    piece_start = np.maximum(start.to_numpy()[rows], day)
    piece_end = np.minimum(end.to_numpy()[rows], day + np.timedelta64(1, "D"))
    share = (piece_end - piece_start) / (end - start).to_numpy()[rows]
    pieces = pd.DataFrame(
        {"day": day, by: ran[by].to_numpy()[rows], hours: ran[hours].to_numpy()[rows] * share}
    )
    table = pieces.pivot_table(index="day", columns=by, values=hours, aggfunc="sum", fill_value=0.0)
    table = table.astype("float64")
    if when is not None:
        table = table.reindex(when.days, fill_value=0.0)
    table.index.name = "day"
    table.columns.name = by
    totals = table.sum().sort_values(ascending=False)
    return table[totals.index]
