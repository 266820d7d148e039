"""A small asynchronous client for Slurm's command-line tools.

The hub submits and cancels jobs *as the user* (``runuser -u USER --`` when the
hub runs as root) and queries the queue for many jobs in one ``squeue`` call.
Two kinds of failure are kept apart, because mixing them up loses servers:

- :class:`SlurmUnavailable`: Slurm did not answer (controller down, time-out).
  A job's state is then *unknown*, never *gone*.
- :class:`SlurmError`: Slurm answered and refused (bad partition, bad account…).
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Long job states as squeue prints them (%T).
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
SUSPENDED_STATES = frozenset({"SUSPENDED", "STOPPED"})

# stderr of the Slurm tools when the controller could not be reached.
_UNAVAILABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted"
    r"|Connection refused|Communication connection failure|Slurm backup controller in standby"
    r"|slurm_load_jobs error: Unexpected message received",
    re.IGNORECASE,
)
_INVALID_JOB = re.compile(r"Invalid job id specified", re.IGNORECASE)

_FIELDS = ("%i", "%T", "%r", "%N", "%S", "%e", "%j", "%u", "%P", "%k", "%V")
_SEP = "\x1f"  # unit separator: never part of a Slurm field
QUEUE_FORMAT = _SEP.join(_FIELDS)  # squeue --format=... for JobInfo.parse


class SlurmUnavailable(RuntimeError):
    """Slurm did not answer; nothing is known about the jobs asked for."""


class SlurmError(RuntimeError):
    """Slurm answered and refused the request."""


@dataclass(frozen=True)
class JobInfo:
    """One job as the queue reports it."""

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    start_time: str = ""
    end_time: str = ""
    name: str = ""
    user: str = ""
    partition: str = ""
    comment: str = ""
    submit_time: str = ""

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def active(self) -> bool:
        """Pending, running or suspended: the job still holds (or waits for) a place."""
        return self.pending or self.running or self.state in SUSPENDED_STATES

    @classmethod
    def parse(cls, line: str) -> JobInfo:
        parts = [p.strip() for p in line.split(_SEP)]
        parts += [""] * (len(_FIELDS) - len(parts))
        job_id, state, reason, nodes, start, end, name, user, partition, comment, submit = parts[
            : len(_FIELDS)
        ]
        clean = {"N/A", "None", "(null)", "Unknown"}
        return cls(
            job_id=job_id,
            state=state.split()[0] if state else "",
            reason="" if reason in clean else reason,
            nodes="" if nodes in clean else nodes,
            start_time="" if start in clean else start,
            end_time="" if end in clean else end,
            name=name,
            user=user,
            partition=partition,
            comment="" if comment in clean else comment,
            submit_time="" if submit in clean else submit,
        )


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def parse_queue(stdout: str) -> list[JobInfo]:
    """The jobs of an ``squeue --noheader --format=QUEUE_FORMAT`` answer."""
    return [JobInfo.parse(ln) for ln in stdout.splitlines() if ln.strip()]


def check_result(result: CommandResult, what: str) -> None:
    """Raise :class:`SlurmUnavailable` (no answer) or :class:`SlurmError` (refused)."""
    if result.returncode == 0:
        return
    message = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
    if _UNAVAILABLE.search(message):
        raise SlurmUnavailable(f"Slurm did not answer ({what}): {message}")
    raise SlurmError(f"Slurm refused {what}: {message}")


def is_invalid_job(result: CommandResult) -> bool:
    """True when Slurm said the job id is unknown (a job long gone)."""
    return result.returncode != 0 and bool(_INVALID_JOB.search(result.stderr))


_SHOW_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")


def parse_show_line(line: str) -> dict[str, str]:
    """One line of ``scontrol --oneliner show ...`` as a dict (values may hold spaces)."""
    marks = list(_SHOW_KEY.finditer(line))
    found: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        found[mark.group(1)] = line[mark.end() : end].strip()
    return found


class LocalSlurmClient:
    """Runs sbatch/squeue/scancel on this host.

    ``user_prefix`` is put before commands that must run as the user; ``{username}``
    in it is replaced. Queries run as the hub's own user: ``squeue`` shows every
    job unless the site hides them (``PrivateData=jobs``).
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

    async def _run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        # Resolve the program with the hub's own PATH (runuser lives in /usr/sbin), not
        # with the PATH of the environment handed to the job.
        program = shutil.which(argv[0]) or argv[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env) if env is not None else None,
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
            made = await self._run(
                self._as_user(
                    username,
                    ["sh", "-c", 'mkdir -p -m 0700 -- "$1" && chmod 0700 -- "$1"', "sh", d],
                )
            )
            if made.returncode != 0:
                raise SlurmError(f"could not create {d} as {username}: {made.stderr.strip()}")
        for path, text in files.items():
            wrote = await self._run(
                self._as_user(username, ["sh", "-c", 'umask 077 && cat > "$1"', "sh", path]),
                input=text,
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
        """Submit ``script`` as ``username``; return the job id. ``dirs`` (mode 0700) and
        ``files`` (path → text, mode 0600) are made first, as the user."""
        await self._prepare(username, dirs, files or {})
        argv = self._as_user(username, ["sbatch", "--parsable"])
        result = await self._run(argv, input=script, env=env)
        self._raise_for(result, "the job submission")
        lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
        job_id = lines[-1].split(";")[0].strip() if lines else ""
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered without a job id: {result.stdout.strip()!r}")
        return job_id

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One ``squeue`` call for all ``job_ids``.

        Jobs Slurm no longer knows are absent from the result. Raises
        :class:`SlurmUnavailable` when Slurm did not answer.
        """
        ids = sorted({j for j in job_ids if j and j.isdigit()}, key=int)
        if not ids:
            return {}
        argv = [
            "squeue",
            "--noheader",
            "--states=all",
            f"--jobs={','.join(ids)}",
            f"--format={QUEUE_FORMAT}",
        ]
        result = await self._run(argv)
        if is_invalid_job(result):
            # Every id asked for is unknown to Slurm (squeue errors only then).
            return {}
        self._raise_for(result, "the queue query")
        return {j.job_id: j for j in parse_queue(result.stdout) if j.job_id in ids}

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        """Jobs whose name starts with ``prefix``: active ones, or those in ``states``
        (``"all"``: ended ones too, while Slurm still lists them). One ``squeue`` call."""
        argv = ["squeue", "--noheader", f"--format={QUEUE_FORMAT}"]
        if states:
            argv.append(f"--states={states}")
        result = await self._run(argv)
        self._raise_for(result, "the queue query")
        return [j for j in parse_queue(result.stdout) if j.name.startswith(prefix)]

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as ``username``. A job already gone is not an error."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        result = await self._run(self._as_user(username, ["scancel", job_id]))
        if is_invalid_job(result):
            return
        self._raise_for(result, f"cancelling job {job_id}")

    async def accounted_state(self, job_id: str) -> str:
        """The state Slurm accounting (``sacct``) recorded for a job, e.g. ``COMPLETED``;
        "" when it has no record of it."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        argv = [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--jobs={job_id}",
            "--format=State",
        ]
        result = await self._run(argv)
        self._raise_for(result, "the accounting query")
        states = [ln.split()[0] for ln in result.stdout.splitlines() if ln.strip()]
        return states[0] if states else ""

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        """``scontrol show KIND [NAME]`` (node, partition, reservation), one dict per entity;
        [] when Slurm has no such entity."""
        if kind not in ("node", "partition", "reservation") or name.startswith("-"):
            raise ValueError(f"cannot show {kind} {name!r}")
        result = await self._run(
            ["scontrol", "--oneliner", "show", kind, *([name] if name else [])]
        )
        said = result.stdout + result.stderr
        if result.returncode != 0 and ("not found" in said or "Invalid" in said):
            return []
        self._raise_for(result, f"scontrol show {kind}")
        return [parse_show_line(line) for line in result.stdout.splitlines() if "=" in line]

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        """(state, CPUs, memory such as "2G") of every active job in reservation ``name``."""
        argv = ["squeue", "--noheader", f"--reservation={name}", "--format=%T|%C|%m"]
        result = await self._run(argv)
        if result.returncode != 0 and "Invalid" in result.stdout + result.stderr:
            return []
        self._raise_for(result, "the queue query")
        jobs = []
        for line in result.stdout.splitlines():
            state, cpus, memory = [*line.split("|"), "", "", ""][:3]
            if cpus.strip().isdigit():
                jobs.append((state.strip(), int(cpus), memory.strip()))
        return jobs

    async def run_as(
        self, username: str, argv: Sequence[str], input: str | None = None
    ) -> CommandResult:
        """Run a plain command as the user (e.g. creating the log directory), with ``input``
        on its standard input."""
        return await self._run(self._as_user(username, argv), input=input)
