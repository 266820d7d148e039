"""One Slurm query per interval for all of this hub's jobs.

Every spawner reads its job's state from here instead of running ``squeue`` itself, so the
load on the controller does not grow with the number of servers. The client reads Slurm's
JSON (``squeue --json`` or slurmrestd, :mod:`~.job_json`): a job is known by its id, state
and user as Slurm reports them, never by its name or comment, which its user writes (a
name is only the prefix filter; a comment only marks this hub's jobs and Dask workers, and
whatever it claims, the poller cancels nothing but the job that carries it, as its owner).
States are honest:

- Slurm did not answer → *unknown*: nothing is concluded, servers are kept;
- a watched job missing from the answer, or in an ended state → it has ended only once a
  second answer, asked for right away, says so too; then its watcher is called (the
  spawner tells the hub, which drops the server and its route);
- jobs that carry this hub's tag but that no spawner watches, older than a grace period,
  are orphans (a spawn in flight when the hub died, a lost stop): they are cancelled and
  logged;
- Dask worker jobs (tagged with their server's job id) whose server job has ended are
  cancelled at once (after the same second look).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from tornado.ioloop import IOLoop

from factoryhub.spawners.slurm import metrics
from factoryhub.spawners.slurm.access import make_client
from factoryhub.spawners.slurm.client import JobInfo, SlurmClient, SlurmError, SlurmUnavailable
from factoryhub.spawners.slurm.comments import parent_job

log = logging.getLogger(__name__)

EndCallback = Callable[[JobInfo | None], Awaitable[None]]

# Why a job ended, in words for its owner (Slurm's long job states).
END_REASONS = {
    "TIMEOUT": "reached the end of its walltime",
    "CANCELLED": "was cancelled (scancel)",
    "NODE_FAIL": "was ended because its node failed",
    "PREEMPTED": "was preempted by a job with higher priority",
    "OUT_OF_MEMORY": "ran out of memory",
    "FAILED": "ended with an error",
    "COMPLETED": "ended: JupyterLab exited",
    "BOOT_FAIL": "could not start: its node failed to boot",
    "DEADLINE": "reached its deadline",
}


def end_message(job_id: str, job: JobInfo | None) -> str:
    if job is None:
        what = "is no longer known to Slurm"
    else:
        what = END_REASONS.get(job.state, f"ended ({job.state})")
    return f"Your server's job {job_id} {what}. Start a new server when you need one."


@dataclass
class PollerStats:
    queries: int = 0
    failures: int = 0
    seconds: float = 0.0
    orphans_cancelled: int = 0


class SlurmPoller:
    def __init__(
        self,
        slurm: SlurmClient,
        *,
        name_prefix: str,
        tag: str,
        interval: float = 1.0,
        confirm_delay: float = 0.2,
        orphan_grace: float = 120.0,
        orphan_every: float = 30.0,
    ) -> None:
        self.slurm = slurm
        self.name_prefix = name_prefix
        self.tag = tag
        self.interval = interval
        self.confirm_delay = confirm_delay
        self.orphan_grace = orphan_grace
        self.orphan_every = min(orphan_every, orphan_grace)
        self.jobs: dict[str, JobInfo] = {}
        self.answered_at: float | None = None  # monotonic time of the last answer
        self.failing_since: float | None = None
        self.stats = PollerStats()
        self._watch: dict[str, EndCallback] = {}
        self._suspect: set[str] = set()
        self._dask_suspect: set[str] = set()
        self._owned: set[str] = set()
        self._ended: dict[str, JobInfo | None] = {}
        self._started_at = time.monotonic()
        self._last_orphan_check = 0.0
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ watchers

    def watch(self, job_id: str, on_end: EndCallback) -> None:
        self._watch[job_id] = on_end
        self._owned.add(job_id)
        self._suspect.discard(job_id)

    def unwatch(self, job_id: str) -> None:
        """Stop watching (the hub itself ends the job); it stays owned, so not an orphan."""
        self._watch.pop(job_id, None)
        self._suspect.discard(job_id)

    def disown(self, job_id: str) -> None:
        """No server owns the job any more (its cancel failed): reap it as an orphan."""
        self.unwatch(job_id)
        self._owned.discard(job_id)

    def state(self, job_id: str) -> str:
        """'ended' once confirmed; else 'unknown' (no answer yet, or Slurm silent) or
        'active' (listed as active, or seen ended only once so far)."""
        if job_id in self._ended:
            return "ended"
        if self.answered_at is None or self.failing_since is not None:
            return "unknown"
        return "active"

    def ended_job(self, job_id: str) -> JobInfo | None:
        """The last record of a job that has ended (None: Slurm no longer lists it)."""
        return self._ended.get(job_id)

    # ------------------------------------------------------------ the loop

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def poke(self) -> None:
        """Ask Slurm now rather than at the next interval (after a submission)."""
        self._poke.set()

    async def _run(self) -> None:
        while True:
            await self.refresh()
            delay = self.confirm_delay if self._suspect or self._dask_suspect else self.interval
            self._poke.clear()
            try:
                await asyncio.wait_for(self._poke.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def refresh(self) -> None:
        begun = time.monotonic()
        try:
            jobs = await self.slurm.jobs_named(self.name_prefix, states="all")
        except (SlurmUnavailable, SlurmError) as e:
            self.stats.failures += 1
            metrics.POLLER_FAILURES.inc()
            metrics.SERVERS.labels("unknown").set(len(self._watch))
            if self.failing_since is None:
                self.failing_since = begun
                log.warning("Slurm did not answer; job states are unknown until it does: %s", e)
            return
        finally:
            took = time.monotonic() - begun
            self.stats.queries += 1
            self.stats.seconds += took
            metrics.POLLER_QUERIES.inc()
            metrics.POLLER_LATENCY.observe(took)
        if self.failing_since is not None:
            log.info("Slurm answers again after %.0f s", begun - self.failing_since)
            self.failing_since = None
        self.jobs = {j.job_id: j for j in jobs}
        self.answered_at = time.monotonic()
        self._count_states()
        await self._conclude()
        await self._end_dask_workers()
        settled = self.answered_at - self._started_at >= self.orphan_grace
        if settled and self.answered_at - self._last_orphan_check >= self.orphan_every:
            self._last_orphan_check = self.answered_at
            await self._reap_orphans()

    def _count_states(self) -> None:
        counts = {"pending": 0, "running": 0, "unknown": 0}
        for job_id in self._watch:
            job = self.jobs.get(job_id)
            if job is not None and job.pending:
                counts["pending"] += 1
            elif job is not None and job.running:
                counts["running"] += 1
        for state, n in counts.items():
            metrics.SERVERS.labels(state).set(n)

    async def _conclude(self) -> None:
        """A watched job seen ended twice in a row has ended: tell its watcher."""
        for job_id in list(self._watch):
            job = self.jobs.get(job_id)
            if job is not None and job.active:
                self._suspect.discard(job_id)
                continue
            if job_id not in self._suspect:
                self._suspect.add(job_id)  # confirm with the next answer, asked for soon
                continue
            self._suspect.discard(job_id)
            callback = self._watch.pop(job_id)
            self._ended[job_id] = job
            metrics.ENDED.labels(job.state if job else "GONE").inc()
            try:
                await callback(job)
            except Exception:
                log.exception("Handling the end of job %s failed", job_id)

    # ------------------------------------------------------------ Dask workers

    async def _end_dask_workers(self) -> None:
        """Cancel Dask worker jobs whose server job has ended (seen so in two answers in a
        row): a user's workers never outlive their server by more than one poll."""
        doomed: set[str] = set()
        for job in self.jobs.values():
            parent_id = parent_job(job.comment, self.tag) if job.active else None
            if parent_id is None:
                continue
            parent = self.jobs.get(parent_id)
            if parent is not None and parent.active:
                continue
            doomed.add(job.job_id)
            if job.job_id not in self._dask_suspect:
                continue
            log.info(
                "Cancelling Dask worker job %s of %s: its server job %s has ended",
                job.job_id,
                job.user,
                parent_id,
            )
            try:
                await self.slurm.cancel(job.user, job.job_id)
            except (SlurmUnavailable, SlurmError) as e:
                log.error("Cancelling Dask worker job %s failed: %s", job.job_id, e)
                continue
            metrics.DASK_WORKERS_CANCELLED.inc()
        self._dask_suspect = doomed

    # ------------------------------------------------------------ orphans

    def _age_seconds(self, job: JobInfo) -> float:
        try:
            submitted = datetime.fromisoformat(job.submit_time)
        except ValueError:
            return 0.0
        return (datetime.now() - submitted).total_seconds()

    async def _reap_orphans(self) -> None:
        """Cancel this hub's jobs that no server owns (only once the hub has been up for the
        grace period: before that it may still be loading the servers it owns)."""
        for job in self.jobs.values():
            if (
                job.comment == self.tag
                and job.active
                and job.job_id not in self._owned
                and self._age_seconds(job) >= self.orphan_grace
            ):
                log.warning(
                    "Cancelling orphan job %s (%s of %s): no server of this hub owns it",
                    job.job_id,
                    job.name,
                    job.user,
                )
                try:
                    await self.slurm.cancel(job.user, job.job_id)
                except (SlurmUnavailable, SlurmError) as e:
                    log.error("Cancelling orphan job %s failed: %s", job.job_id, e)
                    continue
                self._owned.add(job.job_id)
                self.stats.orphans_cancelled += 1
                metrics.ORPHANS.inc()


_pollers: dict[str, SlurmPoller] = {}


@dataclass(frozen=True)
class PollerSettings:
    """What this hub's poller is made of: the spawner's settings of the same names (the
    ``FactorySlurmSpawner`` traits, which the hub's configuration sets from the site file),
    the command prefix and time-out of the local access mode included."""

    hub_tag: str
    job_name_prefix: str
    slurm_poll_interval: float
    orphan_grace: float
    slurm_access: str
    slurm_rest: Mapping[str, Any]
    user_command_prefix: Sequence[str]
    slurm_command_timeout: float

    @classmethod
    def of(cls, source: object) -> PollerSettings:
        """The settings of ``source``: a spawner, or anything with these attributes."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def client(self) -> SlurmClient:
        """The Slurm client these settings describe."""
        return make_client(
            self.slurm_access,
            self.slurm_rest,
            self.user_command_prefix,
            self.slurm_command_timeout,
        )


def poller_for(settings: PollerSettings, slurm: SlurmClient | None = None) -> SlurmPoller:
    """This hub process's one poller for ``settings.hub_tag``, running; made on first use,
    with ``slurm`` or else the client the settings describe. The hub's start and every
    spawner get theirs here, so both get the same one, however it was first asked for."""
    return shared_poller(
        settings.hub_tag,
        lambda: SlurmPoller(
            slurm or settings.client(),
            name_prefix=f"{settings.job_name_prefix}-",
            tag=settings.hub_tag,
            interval=settings.slurm_poll_interval,
            orphan_grace=settings.orphan_grace,
        ),
    )


def start_with_hub(settings: Callable[[], PollerSettings]) -> None:
    """Run this hub's poller from the hub's start, not only once a spawner needs it: after a
    crash no server may own a job at all, and its orphans must still be found. Called from
    ``jupyterhub_config.py``; ``settings`` is asked for when the hub's event loop runs, once
    its configuration is complete."""
    IOLoop.current().add_callback(lambda: poller_for(settings()))


def shared_poller(tag: str, factory: Callable[[], SlurmPoller]) -> SlurmPoller:
    """The one poller of this hub process for ``tag``, created by ``factory`` on first use
    and running (prefer :func:`poller_for`, which builds it from the settings)."""
    poller = _pollers.get(tag)
    if poller is None:
        poller = _pollers[tag] = factory()
    poller.ensure_running()
    return poller
