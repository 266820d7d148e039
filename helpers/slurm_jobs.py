"""The user's own Slurm jobs, from a notebook: list, submit, cancel.

Runs ``squeue --json``/``sacct --json``/``sbatch``/``scancel`` as the notebook's user (a
user server runs on a node that can submit), through the hub's own Slurm package: the same
commands, the same reading of Slurm's JSON and the same difference between "Slurm did not
answer" and "Slurm refused" (``factoryhub.spawners.slurm.commands``), run synchronously
(``factoryhub.spawners.slurm.blocking``). Jobs' names and comments are their users' and may
hold newlines, so Slurm's text formats are never parsed.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime

from factoryhub.spawners.slurm import blocking, commands
from factoryhub.spawners.slurm.client import JobInfo, SlurmError, SlurmUnavailable

__all__ = [
    "JobInfo",
    "MyJob",
    "SlurmError",
    "SlurmUnavailable",
    "cancel",
    "job_kind",
    "my_jobs",
    "submit",
]


def job_kind(name: str) -> str:
    """What a job is, from the names factoryhub gives its jobs."""
    for marker, kind in (
        ("-server-", "JupyterLab server"),
        ("-dask-", "Dask worker"),
        ("-train-", "training"),
        ("-report-", "report"),
    ):
        if marker in name:
            return kind
    return "batch job"


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class MyJob:
    """One of the user's jobs, with times worked out for people."""

    info: JobInfo
    now: datetime

    @property
    def kind(self) -> str:
        return job_kind(self.info.name)

    @property
    def elapsed_s(self) -> float | None:
        start = _parse_time(self.info.start_time)
        return (self.now - start).total_seconds() if start and self.info.running else None

    @property
    def remaining_s(self) -> float | None:
        end = _parse_time(self.info.end_time)
        return max(0.0, (end - self.now).total_seconds()) if end and self.info.running else None


def _queue() -> list[JobInfo]:
    return blocking.run(commands.jobs())


def my_jobs(user: str | None = None) -> list[MyJob]:
    """The user's pending and running jobs, newest first."""
    user = user or getpass.getuser()
    now = datetime.now()
    jobs = [MyJob(j, now) for j in _queue() if j.user == user and j.active]
    return sorted(jobs, key=lambda j: int(j.info.job_id), reverse=True)


def job(job_id: str) -> JobInfo | None:
    """One job as the queue reports it, ended ones too while Slurm lists them (None: gone)."""
    return next((j for j in _queue() if j.job_id == job_id), None)


def final_state(job_id: str) -> str:
    """The state Slurm's accounting recorded for a job ("" if it has none yet)."""
    return blocking.run(commands.final_state(job_id))


def clean_environment() -> dict[str, str]:
    """This process's environment without the Slurm variables of the job it runs in (the
    user's server): a new job must not inherit its parent job's id, sizes or limits."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}


def submit(script: str) -> str:
    """Submit a job script (as the user, with the server's Slurm variables left out);
    return the job id."""
    return blocking.run(commands.submit(script), env=clean_environment())


def cancel(job_id: str) -> None:
    """Cancel one of the user's jobs; one already gone is not an error."""
    blocking.run(commands.cancel(job_id))
