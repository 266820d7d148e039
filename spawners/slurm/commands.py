"""Slurm's commands as data: the argv of each, and how to read what it answers (sans-IO).

A :class:`Command` holds an argv, its standard input and a reader that turns the command's
:class:`~.client.CommandResult` into an answer or one of the two failures. Running it is
the caller's: the hub's asynchronous local client (:mod:`~.local`, as the user through
``runuser``), the synchronous one that notebooks and the local tools use
(:mod:`~.blocking`), and tests, which answer commands from a script. So every argv is
written once, and every answer is read once, by :mod:`~.job_json` (v0.0.38 JSON, shared
with slurmrestd).

Slurm's text is never read, with two exceptions that no user can write into:
``sbatch --parsable`` (a job id, maybe ``;cluster``) and ``scontrol --oneliner show
reservation`` (Slurm 22.05's command line has no JSON for reservations; only the factory's
operators name and define them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from factoryhub.spawners.slurm.accounts import accounts_in, associations_argv
from factoryhub.spawners.slurm.client import CommandResult, JobInfo, SlurmError, SlurmUnavailable
from factoryhub.spawners.slurm.job_json import (
    UNAVAILABLE,
    AccountedJob,
    accounted_jobs,
    accounted_state,
    jobs_of,
    listed,
    loads,
    node_view,
    reservation_jobs,
)

__all__ = [
    "Command",
    "accounted",
    "associations",
    "cancel",
    "check_result",
    "final_state",
    "is_invalid_job",
    "job_state",
    "jobs",
    "make_dir",
    "nodes",
    "parse_show_line",
    "queue",
    "reservation_jobs_of",
    "reservations",
    "state_of",
    "submit",
    "usage",
    "usage_argv",
    "write_file",
]

T = TypeVar("T")

QUEUE_ARGV = ("squeue", "--json", "--states=all")  # 22.05 ignores squeue's filters with --json
SACCT_TIME = "%Y-%m-%dT%H:%M:%S"
_INVALID_JOB = re.compile(r"Invalid job id specified", re.IGNORECASE)
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")  # a job, or one task of an array
_ACCOUNT = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHOW_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")


@dataclass(frozen=True)
class Command(Generic[T]):
    """One run of one of Slurm's commands: ``argv``, its standard ``input``, what it is (for
    messages) and ``read``, which turns its result into the answer or raises."""

    argv: tuple[str, ...]
    what: str
    read: Callable[[CommandResult], T]
    input: str | None = None


# ---------------------------------------------------------------------- results


def check_result(result: CommandResult, what: str) -> None:
    """Raise :class:`SlurmUnavailable` (no answer) or :class:`SlurmError` (refused)."""
    if result.returncode == 0:
        return
    message = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
    if UNAVAILABLE.search(message):
        raise SlurmUnavailable(f"Slurm did not answer ({what}): {message}")
    raise SlurmError(f"Slurm refused {what}: {message}")


def is_invalid_job(result: CommandResult) -> bool:
    """True when Slurm said the job id is unknown (a job long gone)."""
    return result.returncode != 0 and bool(_INVALID_JOB.search(result.stderr))


def _json(what: str, parse: Callable[[dict[str, Any]], T]) -> Callable[[CommandResult], T]:
    """A reader of a ``--json`` answer: the failures, then ``parse`` of the document."""

    def read(result: CommandResult) -> T:
        check_result(result, what)
        return parse(loads(result.stdout, what))

    return read


def job_id_arg(job_id: str) -> str:
    """``job_id`` when it is one (it goes on a command line); ValueError otherwise."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return job_id


# ---------------------------------------------------------------------- jobs


def queue() -> Command[dict[str, Any]]:
    """The queue as Slurm's v0.0.38 document (every job slurmctld still holds)."""
    return Command(QUEUE_ARGV, "the queue query", _json("the queue query", dict))


def jobs() -> Command[list[JobInfo]]:
    """Every job slurmctld still holds, ended ones too."""
    return Command(QUEUE_ARGV, "the queue query", _json("the queue query", jobs_of))


def state_of(jobs: Sequence[JobInfo], job_id: str) -> str:
    """The state of ``job_id`` among ``jobs``; "" when Slurm no longer lists it."""
    return next((j.state for j in jobs if j.job_id == job_id), "")


def job_state(job_id: str) -> Command[str]:
    """The state of one job in the queue ("" when Slurm no longer lists it)."""
    job_id_arg(job_id)
    return Command(
        QUEUE_ARGV,
        "the queue query",
        _json("the queue query", lambda data: state_of(jobs_of(data), job_id)),
    )


def reservation_jobs_of(name: str) -> Command[list[tuple[str, int, str]]]:
    """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
    what = "the queue query"
    return Command(QUEUE_ARGV, what, _json(what, lambda data: reservation_jobs(data, name)))


def _job_id(result: CommandResult) -> str:
    check_result(result, "the job submission")
    # --parsable: "<job id>" or "<job id>;<cluster>", nothing a user wrote
    lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered without a job id: {result.stdout.strip()!r}")
    return job_id


def submit(script: str, options: Sequence[str] = ()) -> Command[str]:
    """``sbatch --parsable`` with ``script`` on its standard input; the job id."""
    return Command(("sbatch", "--parsable", *options), "the job submission", _job_id, script)


def cancel(job_id: str) -> Command[None]:
    """``scancel``; a job already gone is not an error."""
    what = f"cancelling job {job_id_arg(job_id)}"

    def read(result: CommandResult) -> None:
        if not is_invalid_job(result):
            check_result(result, what)

    return Command(("scancel", job_id), what, read)


# ---------------------------------------------------------------------- accounting


def final_state(job_id: str) -> Command[str]:
    """The state accounting recorded for a job (``COMPLETED``...); "" when none."""
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    what = "the accounting query"
    argv = ("sacct", "--json", f"--jobs={job_id}")
    return Command(argv, what, _json(what, lambda data: accounted_state(data, job_id)))


def usage_argv(start: datetime, end: datetime, accounts: Sequence[str] = ()) -> list[str]:
    """``sacct --json`` for every user's jobs (one record per job) that ran in the period."""
    argv = ["sacct", "--json", "--allusers", "--allocations"]
    argv += ["-S", start.strftime(SACCT_TIME), "-E", end.strftime(SACCT_TIME)]
    if accounts:
        bad = [a for a in accounts if not _ACCOUNT.match(a)]
        if bad:
            raise ValueError(f"not a Slurm account name: {', '.join(map(repr, bad))}")
        argv.append(f"--accounts={','.join(accounts)}")
    return argv


def usage(
    start: datetime, end: datetime, accounts: Sequence[str] = ()
) -> Command[list[AccountedJob]]:
    """Every user's accounting records of the period (of ``accounts`` only, when given)."""
    what = "the accounting query"
    return Command(tuple(usage_argv(start, end, accounts)), what, _json(what, accounted_jobs))


def accounted(job_id: str) -> Command[list[AccountedJob]]:
    """Every accounting record of ``job_id`` (a restarted Slurm may reuse an id)."""
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    what = "the accounting query"
    return Command(("sacct", "--json", f"--jobs={job_id}"), what, _json(what, accounted_jobs))


def associations(username: str) -> Command[frozenset[str]]:
    """The accounts ``username`` has an association with (empty: Slurm does not know them)."""
    what = f"the associations of {username}"

    def read(result: CommandResult) -> frozenset[str]:
        check_result(result, what)
        return frozenset(accounts_in(result.stdout, username))

    return Command(associations_argv(username), what, read)


# ---------------------------------------------------------------------- nodes, reservations


def _nodes(data: Mapping[str, Any], name: str) -> list[dict[str, str]]:
    found = [node_view(n) for n in listed(data, "nodes", "the nodes")]
    return [n for n in found if not name or n["NodeName"] == name]


def nodes(name: str = "") -> Command[list[dict[str, str]]]:
    """Every node (or node ``name``) with the keys of ``scontrol show node``."""
    return Command(("sinfo", "--json"), "the nodes", _json("the nodes", lambda d: _nodes(d, name)))


def parse_show_line(line: str) -> dict[str, str]:
    """One line of ``scontrol --oneliner show reservation`` as a dict (values may hold
    spaces). Only for objects the factory's operators write (reservations): never for jobs,
    whose names and comments their users write."""
    marks = list(_SHOW_KEY.finditer(line))
    found: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        found[mark.group(1)] = line[mark.end() : end].strip()
    return found


def _reservations(result: CommandResult) -> list[dict[str, str]]:
    said = result.stdout + result.stderr
    if result.returncode != 0 and ("not found" in said or "Invalid" in said):
        return []
    check_result(result, "scontrol show reservation")
    found = [parse_show_line(line) for line in result.stdout.splitlines()]
    return [r for r in found if "ReservationName" in r]


def reservations(name: str = "") -> Command[list[dict[str, str]]]:
    """Every reservation (or reservation ``name``) with ``scontrol show``'s keys."""
    if name.startswith("-"):
        raise ValueError(f"cannot show reservation {name!r}")
    argv = ("scontrol", "--oneliner", "show", "reservation", *([name] if name else []))
    return Command(argv, "scontrol show reservation", _reservations)


# ---------------------------------------------------------------------- as the user


def _done(what: str) -> Callable[[CommandResult], None]:
    def read(result: CommandResult) -> None:
        if result.returncode != 0:
            raise SlurmError(f"could not {what}: {result.stderr.strip()}")

    return read


def make_dir(path: str, username: str) -> Command[None]:
    """``mkdir -m 0700`` (and chmod 0700 when it was there), meant to run as ``username``."""
    script = 'mkdir -p -m 0700 -- "$1" && chmod 0700 -- "$1"'
    what = f"create {path} as {username}"
    return Command(("sh", "-c", script, "sh", path), what, _done(what))


def write_file(path: str, text: str, username: str) -> Command[None]:
    """Write ``text`` to ``path`` (0600), meant to run as ``username``."""
    what = f"write {path} as {username}"
    return Command(("sh", "-c", 'umask 077 && cat > "$1"', "sh", path), what, _done(what), text)
