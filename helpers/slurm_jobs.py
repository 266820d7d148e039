"""The user's own Slurm jobs, from a notebook: list, submit, cancel.

Runs ``squeue --json``/``sacct --json``/``sbatch``/``scancel`` as the notebook's user (a
user server runs on a node that can submit). Reading Slurm's JSON and the difference between
"Slurm did not answer" and "Slurm refused" are the spawner's own
(``factoryhub.spawners.slurm.job_json``): jobs' names and comments are their users' and may hold
newlines, so Slurm's text formats are never parsed.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from factoryhub.spawners.slurm.job_json import accounted_state, jobs_of, loads
from factoryhub.spawners.slurm.local import (
    CommandResult,
    JobInfo,
    SlurmError,
    SlurmUnavailable,
    check_result,
    is_invalid_job,
)

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

TIMEOUT_S = 30.0


def _run(
    argv: Sequence[str], input: str | None = None, env: dict[str, str] | None = None
) -> CommandResult:
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
        )
    except FileNotFoundError as e:
        raise SlurmUnavailable(f"{argv[0]} is not installed here") from e
    except subprocess.TimeoutExpired as e:
        raise SlurmUnavailable(f"{argv[0]} did not answer within {TIMEOUT_S:g} s") from e
    return CommandResult(done.returncode, done.stdout, done.stderr)


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


def _json(argv: Sequence[str], what: str) -> dict:
    result = _run(argv)
    check_result(result, what)
    return loads(result.stdout, what)


def _queue() -> list[JobInfo]:
    # squeue --json lists every job Slurm still holds (Slurm 22.05 ignores its filters)
    return jobs_of(_json(["squeue", "--json", "--states=all"], "the queue query"))


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
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    data = _json(["sacct", "--json", f"--jobs={job_id}"], "the accounting query")
    return accounted_state(data, job_id)


def clean_environment() -> dict[str, str]:
    """This process's environment without the Slurm variables of the job it runs in (the
    user's server): a new job must not inherit its parent job's id, sizes or limits."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}


def submit(script: str) -> str:
    """Submit a job script (as the user, with the server's Slurm variables left out);
    return the job id."""
    result = _run(["sbatch", "--parsable"], input=script, env=clean_environment())
    check_result(result, "the job submission")
    job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered without a job id: {result.stdout.strip()!r}")
    return job_id


def cancel(job_id: str) -> None:
    """Cancel one of the user's jobs; one already gone is not an error."""
    if not job_id.replace("_", "").isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    result = _run(["scancel", job_id])
    if not is_invalid_job(result):
        check_result(result, f"cancelling job {job_id}")
