"""What the hub side may ask of Slurm, declared once: the :class:`SlurmClient` Protocol, the
types its answers come in and the two failures it tells apart.

Both access modes satisfy the Protocol, "local" (:class:`~.local.LocalSlurmClient`, Slurm's
commands run on the hub host) and "rest" (:class:`~.rest.RestSlurmClient`, slurmrestd), and
so must a test's scripted client; nothing on the hub side names a concrete client except
:func:`~.access.make_client`, which picks one from the site file.

Two kinds of failure are kept apart, because mixing them up loses servers:

- :class:`SlurmUnavailable`: Slurm did not answer, or answered something that is not a
  v0.0.38 document (a controller down, an error list, a truncated answer). A job's state is
  then *unknown*, never *gone*.
- :class:`SlurmError`: Slurm answered and refused (bad partition, bad account...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "PENDING_STATES",
    "RUNNING_STATES",
    "SUSPENDED_STATES",
    "CommandResult",
    "JobInfo",
    "SlurmClient",
    "SlurmError",
    "SlurmUnavailable",
    "SlurmUser",
    "by_id",
    "named",
]

# Long job states as Slurm names them (job_state).
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
SUSPENDED_STATES = frozenset({"SUSPENDED", "STOPPED"})


class SlurmUnavailable(RuntimeError):
    """Slurm did not answer; nothing is known about the jobs asked for."""


class SlurmError(RuntimeError):
    """Slurm answered and refused the request."""


@dataclass(frozen=True)
class CommandResult:
    """What one of Slurm's commands answered (the local mode and the notebooks' helper)."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class JobInfo:
    """One job as the queue reports it (times: local ``2026-11-23T12:08:22``, "" for none)."""

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


@dataclass(frozen=True)
class SlurmUser:
    """A person as the cluster knows them: who may use the factory, and as what.

    ``accounts`` are the Slurm accounts the user has an association with (what they may
    charge). ``uid`` is the user's uid where the source tells it: this host's user database
    in the "local" mode; ``None`` in the "rest" mode, because slurmrestd 22.05's user record
    (``/slurmdb/v0.0.38/user/<name>``) carries none (name, associations, default account,
    administrator level, coordinators, flags). ``home`` is where their files are.
    """

    name: str
    home: str
    accounts: frozenset[str] = frozenset()
    default_account: str = ""
    uid: int | None = None


def by_id(jobs: Iterable[JobInfo], job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """The jobs among ``jobs`` whose ids are asked for (ids that are not numbers never are)."""
    ids = {j for j in job_ids if j and j.isdigit()}
    return {j.job_id: j for j in jobs if j.job_id in ids}


def named(jobs: Iterable[JobInfo], prefix: str, states: str = "") -> list[JobInfo]:
    """Jobs whose name starts with ``prefix``: active ones, or all (``states="all"``)."""
    return [j for j in jobs if j.name.startswith(prefix) and (states == "all" or j.active)]


@runtime_checkable
class SlurmClient(Protocol):
    """What the spawner, the shared poller and the Reports and Courses services use.

    Jobs are submitted and cancelled *as* their user; queries (the queue, accounting, nodes,
    reservations) run as the hub. Every method raises :class:`SlurmUnavailable` when Slurm
    did not answer and :class:`SlurmError` when it refused.
    """

    def home(self, username: str) -> str:
        """The user's home directory on the cluster."""
        ...

    async def user(self, username: str) -> SlurmUser | None:
        """The user as the cluster knows them; None when it does not. "local": this host's
        user database (a submit host's passwd is the cluster's) and ``sacctmgr``'s
        associations; "rest": Slurm's accounting (the user's record, asked as the query
        user), the home from the site's template: no lookup on the hub's host."""
        ...

    async def submit(
        self,
        username: str,
        script: str,
        env: Mapping[str, str],
        dirs: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
    ) -> str:
        """Submit ``script`` as ``username`` with the job's environment ``env``; the job id.
        ``dirs`` (0700) and ``files`` (path → text, 0600) exist, as the user's, before the
        script's own commands run."""
        ...

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One queue query for all ``job_ids``; jobs Slurm no longer lists are absent."""
        ...

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        """Jobs whose name starts with ``prefix``: active ones, or all (``states="all"``:
        ended ones too, while Slurm still lists them). One queue query."""
        ...

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as ``username``; a job already gone is not an error."""
        ...

    async def accounted_state(self, job_id: str) -> str:
        """The state accounting recorded for a job (``COMPLETED``...); "" when none."""
        ...

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        """Nodes (``kind="node"``) or reservations (``"reservation"``), one dict each with
        the keys ``scontrol show`` prints (those factoryhub reads); [] when there are none."""
        ...

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
        ...
