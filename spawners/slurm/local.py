"""A small asynchronous client for Slurm's command-line tools (the "local" access mode).

The hub submits and cancels jobs *as the user* (``runuser -u USER --`` when the hub runs as
root, with an explicit minimal environment: :func:`~.user_env.minimal_env`) and reads the
queue for all jobs in one ``squeue --json`` call. Every answer is read as JSON by
:mod:`~.slurm_json`, the parser the "rest" mode shares; Slurm's text formats are never
parsed, because jobs' names and comments may hold newlines and ``\\x1f``. The one exception
is ``scontrol show reservation`` (Slurm 22.05 has no JSON for it on the command line), whose
objects only the factory's operators write; see :func:`parse_show_line`.

Two kinds of failure are kept apart, because mixing them up loses servers:

- :class:`SlurmUnavailable`: Slurm did not answer (controller down, time-out, an error in
  its answer). A job's state is then *unknown*, never *gone*.
- :class:`SlurmError`: Slurm answered and refused (bad partition, bad account...).
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from factoryhub.spawners.slurm.job_json import (
    PENDING_STATES,
    RUNNING_STATES,
    SUSPENDED_STATES,
    UNAVAILABLE,
    JobInfo,
    SlurmError,
    SlurmUnavailable,
    accounted_state,
    jobs_of,
    listed,
    loads,
    node_view,
    reservation_jobs,
)
from factoryhub.spawners.user_env import SYSTEM_PATH, minimal_env, slurm_vars

__all__ = [
    "PENDING_STATES",
    "RUNNING_STATES",
    "SUSPENDED_STATES",
    "CommandResult",
    "JobInfo",
    "LocalSlurmClient",
    "SlurmError",
    "SlurmUnavailable",
    "check_result",
    "is_invalid_job",
    "parse_show_line",
]

log = logging.getLogger(__name__)

_INVALID_JOB = re.compile(r"Invalid job id specified", re.IGNORECASE)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


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


_SHOW_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")


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


class LocalSlurmClient:
    """Runs sbatch/squeue/scancel/sacct/sinfo on this host.

    ``user_prefix`` is put before commands that must run as the user; ``{username}`` in it is
    replaced. Those commands get :func:`~.user_env.minimal_env` (plus the job's environment
    for ``sbatch``), never the hub's. Queries run as the hub's own user: ``squeue`` shows
    every job unless the site hides them (``PrivateData=jobs``).
    """

    def __init__(
        self,
        user_prefix: Sequence[str] = ("runuser", "-u", "{username}", "--"),
        command_timeout: float = 30.0,
    ) -> None:
        self.user_prefix = tuple(user_prefix)
        self.command_timeout = command_timeout

    def _as_user(self, username: str, argv: Sequence[str]) -> list[str]:
        return [p.replace("{username}", username) for p in self.user_prefix] + list(argv)

    def user_env(self, username: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command run as ``username``: the minimal one, the Slurm
        variables of the hub (SLURM_CONF) and ``extra``."""
        return minimal_env(username, self.home(username), {**slurm_vars(), **(extra or {})})

    async def _run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` with ``env`` (default: the hub's own query environment: the system
        PATH and the Slurm variables; never the hub's whole environment)."""
        # Resolve the program with the hub's own PATH (runuser lives in /usr/sbin), not
        # with the PATH of the environment handed to the job.
        program = shutil.which(argv[0]) or argv[0]
        if env is None:
            env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **slurm_vars()}
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env),
            )
        except FileNotFoundError as e:
            raise SlurmUnavailable(f"{argv[0]} is not installed on the hub host") from e
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None),
                timeout=self.command_timeout,
            )
        except TimeoutError as e:
            proc.kill()
            await proc.wait()
            raise SlurmUnavailable(
                f"{argv[0] if argv else 'command'} did not answer within {self.command_timeout:g} s"
            ) from e
        return CommandResult(
            proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def _run_as(
        self,
        username: str,
        argv: Sequence[str],
        input: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> CommandResult:
        return await self._run(
            self._as_user(username, argv), input=input, env=self.user_env(username, extra)
        )

    async def _json(self, argv: Sequence[str], what: str) -> dict:
        """Run a query whose answer is JSON (``--json``); the document."""
        result = await self._run(argv)
        check_result(result, what)
        return loads(result.stdout, what)

    _raise_for = staticmethod(check_result)

    def home(self, username: str) -> str:
        """The user's home directory (this host's user database)."""
        try:
            return pwd.getpwnam(username).pw_dir
        except KeyError:
            raise SlurmError(f"there is no user {username!r} on this host") from None

    async def _prepare(self, username: str, dirs: Sequence[str], files: Mapping[str, str]) -> None:
        """Make ``dirs`` (0700) and ``files`` (0600) as the user, before the job exists."""
        for d in dirs:
            made = await self._run_as(
                username, ["sh", "-c", 'mkdir -p -m 0700 -- "$1" && chmod 0700 -- "$1"', "sh", d]
            )
            if made.returncode != 0:
                raise SlurmError(f"could not create {d} as {username}: {made.stderr.strip()}")
        for path, text in files.items():
            wrote = await self._run_as(
                username, ["sh", "-c", 'umask 077 && cat > "$1"', "sh", path], input=text
            )
            if wrote.returncode != 0:
                raise SlurmError(f"could not write {path} as {username}: {wrote.stderr.strip()}")

    async def submit(
        self,
        username: str,
        script: str,
        env: Mapping[str, str],
        dirs: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
    ) -> str:
        """Submit ``script`` as ``username`` with the job's environment ``env`` (over the
        minimal one); return the job id. ``dirs`` (mode 0700) and ``files`` (path → text,
        mode 0600) are made first, as the user."""
        await self._prepare(username, dirs, files or {})
        result = await self._run_as(username, ["sbatch", "--parsable"], input=script, extra=env)
        self._raise_for(result, "the job submission")
        # --parsable: "<job id>" or "<job id>;<cluster>", nothing a user wrote
        lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
        job_id = lines[-1].split(";")[0].strip() if lines else ""
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered without a job id: {result.stdout.strip()!r}")
        return job_id

    async def _queue(self) -> dict:
        # squeue --json lists every job the controller still holds (22.05 ignores filters)
        return await self._json(["squeue", "--json", "--states=all"], "the queue query")

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One ``squeue --json`` for all ``job_ids``.

        Jobs Slurm no longer knows are absent from the result. Raises
        :class:`SlurmUnavailable` when Slurm did not answer.
        """
        ids = {j for j in job_ids if j and j.isdigit()}
        if not ids:
            return {}
        return {j.job_id: j for j in jobs_of(await self._queue()) if j.job_id in ids}

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        """Jobs whose name starts with ``prefix``: active ones, or all (``states="all"``:
        ended ones too, while Slurm still lists them). One ``squeue --json`` call."""
        jobs = jobs_of(await self._queue())
        return [j for j in jobs if j.name.startswith(prefix) and (states == "all" or j.active)]

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as ``username``. A job already gone is not an error."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        result = await self._run_as(username, ["scancel", job_id])
        if is_invalid_job(result):
            return
        self._raise_for(result, f"cancelling job {job_id}")

    async def accounted_state(self, job_id: str) -> str:
        """The state Slurm accounting (``sacct --json``) recorded for a job, e.g.
        ``COMPLETED``; "" when it has no record of it."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        data = await self._json(["sacct", "--json", f"--jobs={job_id}"], "the accounting query")
        return accounted_state(data, job_id)

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        """Nodes (``sinfo --json``) or reservations (``scontrol show reservation``) with the
        keys ``scontrol show`` prints, one dict per entity; [] when Slurm has none."""
        if name.startswith("-"):
            raise ValueError(f"cannot show {kind} {name!r}")
        if kind == "node":
            data = await self._json(["sinfo", "--json"], "the nodes")
            nodes = [node_view(n) for n in listed(data, "nodes", "the nodes")]
            return [n for n in nodes if not name or n["NodeName"] == name]
        if kind != "reservation":
            raise ValueError(f"cannot show {kind} {name!r}")
        argv = ["scontrol", "--oneliner", "show", "reservation", *([name] if name else [])]
        result = await self._run(argv)
        said = result.stdout + result.stderr
        if result.returncode != 0 and ("not found" in said or "Invalid" in said):
            return []
        self._raise_for(result, "scontrol show reservation")
        found = [parse_show_line(line) for line in result.stdout.splitlines()]
        return [r for r in found if "ReservationName" in r]

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
        return reservation_jobs(await self._queue(), name)

    async def run_as(
        self, username: str, argv: Sequence[str], input: str | None = None
    ) -> CommandResult:
        """Run a plain command as the user (minimal environment), with ``input`` on its
        standard input."""
        return await self._run_as(username, argv, input=input)
