"""The "local" access mode: Slurm's commands on the hub host, run asynchronously.

The hub submits and cancels jobs *as the user* (``runuser -u USER --`` when the hub runs as
root, with an explicit minimal environment: :func:`~.user_env.minimal_env`) and reads the
queue for all jobs in one ``squeue --json`` call. What each command is and how its answer
is read lives in :mod:`~.commands` (shared with the synchronous client of the notebooks);
this module only runs them. The two failures, :class:`SlurmUnavailable` (no answer: a job's
state is *unknown*, never *gone*) and :class:`SlurmError` (refused), come from the readers.
"""

from __future__ import annotations

import asyncio
import pwd
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from factoryhub.spawners.model.users import fill_user_template
from factoryhub.spawners.slurm import commands
from factoryhub.spawners.slurm.client import (
    CommandResult,
    JobInfo,
    SlurmError,
    SlurmUnavailable,
    SlurmUser,
    by_id,
    named,
)
from factoryhub.spawners.slurm.commands import Command
from factoryhub.spawners.user_env import SYSTEM_PATH, minimal_env, slurm_vars

T = TypeVar("T")


class LocalSlurmClient:
    """Runs sbatch/squeue/scancel/sacct/sinfo/scontrol on this host (a :class:`SlurmClient`).

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

    def home(self, username: str) -> str:
        """The user's home directory (this host's user database)."""
        try:
            return pwd.getpwnam(username).pw_dir
        except KeyError:
            raise SlurmError(f"there is no user {username!r} on this host") from None

    async def user(self, username: str) -> SlurmUser | None:
        """The user in this host's user database (the hub is a submit host: its passwd is the
        cluster's), with the accounts ``sacctmgr`` lists for them; None when this host has
        no such user."""
        try:
            entry = pwd.getpwnam(username)
        except KeyError:
            return None
        accounts = await self._do(commands.associations(username))
        return SlurmUser(username, entry.pw_dir, accounts, uid=entry.pw_uid)

    def user_env(self, username: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command run as ``username``: the minimal one, the Slurm
        variables of the hub (SLURM_CONF) and ``extra``."""
        return minimal_env(username, self.home(username), {**slurm_vars(), **(extra or {})})

    # ------------------------------------------------------------------ running

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

    async def _do(self, command: Command[T]) -> T:
        """Run a query as the hub; its answer."""
        return command.read(await self._run(command.argv, input=command.input))

    async def _do_as(
        self, username: str, command: Command[T], extra: Mapping[str, str] | None = None
    ) -> T:
        """Run ``command`` as ``username`` (the prefix, the minimal environment + ``extra``)."""
        argv = [fill_user_template(p, username=username) for p in self.user_prefix]
        argv += command.argv
        env = self.user_env(username, extra)
        return command.read(await self._run(argv, input=command.input, env=env))

    # ------------------------------------------------------------------ jobs

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
        for d in dirs:
            await self._do_as(username, commands.make_dir(d, username))
        for path, text in (files or {}).items():
            await self._do_as(username, commands.write_file(path, text, username))
        return await self._do_as(username, commands.submit(script), extra=env)

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One ``squeue --json`` for all ``job_ids``; jobs Slurm no longer knows are absent.
        Raises :class:`SlurmUnavailable` when Slurm did not answer."""
        ids = [j for j in job_ids if j and j.isdigit()]
        if not ids:
            return {}
        jobs: list[JobInfo] = await self._do(commands.jobs())
        return by_id(jobs, ids)

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        """Jobs whose name starts with ``prefix``: active ones, or all (``states="all"``:
        ended ones too, while Slurm still lists them). One ``squeue --json`` call."""
        jobs: list[JobInfo] = await self._do(commands.jobs())
        return named(jobs, prefix, states)

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as ``username``. A job already gone is not an error."""
        await self._do_as(username, commands.cancel(job_id))

    async def accounted_state(self, job_id: str) -> str:
        """The state Slurm accounting (``sacct --json``) recorded for a job, e.g.
        ``COMPLETED``; "" when it has no record of it."""
        return await self._do(commands.final_state(job_id))

    # ------------------------------------------------------------------ nodes, reservations

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        """Nodes (``sinfo --json``) or reservations (``scontrol show reservation``) with the
        keys ``scontrol show`` prints, one dict per entity; [] when Slurm has none."""
        if name.startswith("-"):
            raise ValueError(f"cannot show {kind} {name!r}")
        if kind == "node":
            return await self._do(commands.nodes(name))
        if kind == "reservation":
            return await self._do(commands.reservations(name))
        raise ValueError(f"cannot show {kind} {name!r}")

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
        return await self._do(commands.reservation_jobs_of(name))
