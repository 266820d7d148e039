"""Waiting, for the tests and the benchmarks: follow events, bound the wait, say what was
last seen.

A timeout here is a bound, not a wait: ``wait_until`` returns as soon as its predicate holds
(woken at once by an event where there is one), and when it gives up it raises with
``describe()``'s account of what it last saw. ``SpawnWatch`` follows a server's spawn through
the hub's progress stream (``/hub/api/users/<u>/server/progress``, server-sent events) and the
job's state in Slurm (``squeue --json``): it tells ``wait_until`` whether the spawn still
makes progress (new events, a job state that changed, a job waiting in the queue) and
describes it all when a wait fails.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A wait reached its bound; the message says what it waited for and what it saw."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    describe: Callable[[], str],
    *,
    progress: Callable[[], Hashable] | None = None,
    stall: float | None = None,
    wake: threading.Event | None = None,
    first: float = 0.05,
    longest: float = 1.0,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Polls back off from ``first`` to ``longest`` seconds; ``wake`` (an event set by whatever
    delivers news, e.g. a progress stream) cuts a pause short. ``timeout`` bounds the whole
    wait. With ``progress`` and ``stall`` the wait also ends when ``progress()``'s value has
    not changed for ``stall`` seconds: the bound follows the progress, not the clock. An
    exception raised by ``predicate`` (a process that died, a spawn that failed) ends the
    wait at once. On a timeout: ``WaitTimeout`` with ``describe()``'s text."""
    begun = time.monotonic()
    last_change = begun
    seen: Hashable = progress() if progress else None
    pause = first
    while True:
        if wake is not None:
            wake.clear()
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if progress is not None:
            current = progress()
            if current != seen:
                seen, last_change, pause = current, now, first
        if now - begun >= timeout:
            why = f"gave up after {now - begun:.1f} s (the bound)"
        elif stall is not None and now - last_change >= stall:
            why = f"gave up after {now - begun:.1f} s: no progress in the last {stall:.0f} s"
        else:
            rest = min(pause, timeout - (now - begun))
            if wake is not None:
                wake.wait(rest)
            else:
                time.sleep(rest)
            pause = min(pause * 1.5, longest)
            continue
        raise WaitTimeout(f"{why}\n{describe()}")


# --------------------------------------------------------------------------- Slurm's view


@dataclass(frozen=True)
class QueuedJob:
    """A job as ``squeue --json`` (Slurm's v0.0.38 job schema) shows it."""

    job_id: int
    user: str
    name: str
    state: str
    reason: str
    nodes: str
    account: str
    memory_mb: int | None

    @classmethod
    def from_json(cls, job: dict[str, Any]) -> QueuedJob:
        state = job.get("job_state", "")
        if isinstance(state, list):  # newer Slurm: a list of flags
            state = ",".join(state)
        memory = job.get("memory_per_node")
        return cls(
            job_id=int(job["job_id"]),
            user=str(job.get("user_name", "")),
            name=str(job.get("name", "")),
            state=str(state),
            reason=str(job.get("state_reason", "")),
            nodes=str(job.get("nodes", "")),
            account=str(job.get("account", "")),
            memory_mb=memory if isinstance(memory, int) else None,
        )

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"

    @property
    def live(self) -> bool:
        """Pending, running or on its way out; not a finished job squeue still lists."""
        return self.state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED")

    def __str__(self) -> str:
        where = f" on {self.nodes}" if self.nodes else ""
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return f"job {self.job_id} {self.name!r} of {self.user}: {self.state}{reason}{where}"


def squeue_jobs(users: Iterable[str] | None = None, *, live_only: bool = True) -> list[QueuedJob]:
    """The jobs of ``users`` (all users: None) that Slurm lists. Slurm 22.05's ``--json``
    ignores squeue's filters, so the filtering is done here. Raises ``SlurmSilent`` when
    squeue does not answer (a test that stopped slurmctld)."""
    try:
        out = subprocess.run(
            ["squeue", "--json"], capture_output=True, text=True, timeout=15, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise SlurmSilent(str(e)) from None
    wanted = set(users) if users is not None else None
    jobs = [QueuedJob.from_json(j) for j in json.loads(out).get("jobs", [])]
    return [j for j in jobs if (wanted is None or j.user in wanted) and (j.live or not live_only)]


class SlurmSilent(RuntimeError):
    """squeue did not answer."""


def wait_no_jobs(users: Iterable[str], timeout: float = 90) -> None:
    """Wait until Slurm lists no live job of ``users``. A squeue that does not answer (a
    slurmctld restarting) is waited out, not taken for an empty queue; the timeout raises
    ``WaitTimeout`` naming the jobs left."""
    names = sorted(set(users))
    seen: list[str] = ["squeue not asked yet"]

    def none_left() -> bool:
        try:
            left = squeue_jobs(names)
        except SlurmSilent as e:
            seen[:] = [f"squeue did not answer ({e})"]
            return False
        seen[:] = [str(j) for j in left]
        return not left

    wait_until(
        none_left,
        timeout,
        lambda: f"Slurm jobs of {', '.join(names)} left: " + "; ".join(seen),
        first=0.2,
    )


# ------------------------------------------------------------------ the hub's progress stream


def sse_events(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event in ``lines`` (the text/event-stream format: ``data:``
    lines up to a blank line make one event; comments and other fields are skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


class ProgressFollower:
    """Follows one server's spawn progress on the hub, in a thread.

    Connects to the hub's progress stream (retrying while the hub says the server is not
    starting yet: the spawn may not have begun), records every event and sets ``news`` on
    each, and stops after the hub's final event (``ready`` or ``failed``)."""

    def __init__(self, hub_url: str, token: str, user: str, server: str = "") -> None:
        path = f"/hub/api/users/{user}/server" + (f"s/{server}" if server else "")
        self.url = f"{hub_url}{path}/progress"
        self.token = token
        self.name = f"{user}/{server}" if server else user
        self.events: list[dict[str, Any]] = []
        self.last_event_at = 0.0
        self.connection = "not connected yet"
        self.news = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.name}", daemon=True)

    def __enter__(self) -> ProgressFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1)  # a stream between keepalives ends by itself (daemon thread)

    @property
    def final(self) -> dict[str, Any] | None:
        if self.events and (self.events[-1].get("ready") or self.events[-1].get("failed")):
            return self.events[-1]
        return None

    @property
    def ready(self) -> bool:
        return bool(self.final and self.final.get("ready"))

    @property
    def failed(self) -> str:
        """The hub's failure message, if the spawn failed."""
        final = self.final
        return str(final.get("message", "failed")) if final and final.get("failed") else ""

    def _run(self) -> None:
        pause = 0.1
        headers = {"Authorization": f"token {self.token}"}
        timeout = httpx.Timeout(30, read=30)  # the hub sends a keepalive every 8 s
        with httpx.Client(headers=headers, timeout=timeout) as client:
            while not self._stop.is_set() and self.final is None:
                try:
                    self._follow(client)
                except httpx.HTTPError as e:
                    self.connection = f"stream broke: {type(e).__name__}: {e}"
                if self.final is None:
                    self._stop.wait(pause)
                    pause = min(pause * 1.5, 1.0)

    def _follow(self, client: httpx.Client) -> None:
        with client.stream("GET", self.url) as resp:
            if resp.status_code != 200:
                resp.read()
                self.connection = f"HTTP {resp.status_code} (not starting yet?)"
                return
            self.connection = "open"
            for data in sse_events(resp.iter_lines()):
                self.events.append(json.loads(data))
                self.last_event_at = time.monotonic()
                self.news.set()
                if self.final is not None or self._stop.is_set():
                    break
            self.connection = "closed"

    def describe(self) -> str:
        if not self.events:
            return f"progress of {self.name}: no event yet (stream: {self.connection})"
        last = self.events[-1]
        ago = time.monotonic() - self.last_event_at
        return (
            f"progress of {self.name}: {len(self.events)} event(s), the last {ago:.1f} s ago: "
            f"{last.get('progress', '?')}% {last.get('message', '')!r} "
            f"(stream: {self.connection})"
        )


class SpawnWatch:
    """The spawns of some servers as the hub and Slurm tell them; one or more
    ``ProgressFollower`` plus the Slurm jobs of their users, for ``wait_until``.

    ``with SpawnWatch(hub, [user]) as watch: wait_until(..., progress=watch.progress,
    stall=..., wake=watch.news, describe=watch.describe)``."""

    SLURM_EVERY = 2.0  # seconds between squeue calls for progress()
    PENDING_TICK = 10.0  # a job waiting in the queue counts as progress once per tick

    def __init__(
        self,
        hub_url: str,
        token: str,
        servers: Iterable[str | tuple[str, str]],
        log_tail: Callable[[], str] | None = None,
        users: Iterable[str] = (),
    ) -> None:
        pairs = [(s, "") if isinstance(s, str) else s for s in servers]
        self.news = threading.Event()
        self.followers = [ProgressFollower(hub_url, token, u, name) for u, name in pairs]
        for follower in self.followers:
            follower.news = self.news  # one event wakes the waiter for any of them
        self.users = sorted({u for u, _ in pairs} | set(users))
        self.log_tail = log_tail
        self._jobs: list[QueuedJob] = []
        self._slurm_note = "not asked yet"
        self._asked_at = 0.0

    def __enter__(self) -> SpawnWatch:
        for follower in self.followers:
            follower.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for follower in self.followers:
            follower.__exit__(*exc)

    def jobs(self) -> list[QueuedJob]:
        """The users' live jobs, asked of Slurm at most every ``SLURM_EVERY`` seconds."""
        if time.monotonic() - self._asked_at >= self.SLURM_EVERY:
            self._asked_at = time.monotonic()
            try:
                self._jobs, self._slurm_note = squeue_jobs(self.users), "answered"
            except SlurmSilent as e:
                self._slurm_note = f"did not answer ({e})"
        return self._jobs

    def failed(self) -> str:
        """The first failure the hub reported, named by server."""
        for follower in self.followers:
            if follower.failed:
                return f"the hub says the spawn of {follower.name} failed: {follower.failed}"
        return ""

    def progress(self) -> Hashable:
        """Changes while the spawns move: a new event, a job state that changed, and (once
        per tick) a job that waits in Slurm's queue."""
        jobs = self.jobs()
        waiting = any(j.pending for j in jobs)
        return (
            tuple(len(f.events) for f in self.followers),
            tuple((j.job_id, j.state, j.nodes) for j in jobs),
            int(time.monotonic() // self.PENDING_TICK) if waiting else None,
        )

    def describe(self) -> str:
        lines = [f.describe() for f in self.followers]
        self._asked_at = 0.0  # fresh from Slurm for the report
        jobs = self.jobs()
        if self._slurm_note != "answered":
            lines.append(f"Slurm: squeue {self._slurm_note}")
        elif jobs:
            lines.append("Slurm: " + "; ".join(str(j) for j in jobs))
        else:
            lines.append(f"Slurm: no live job of {', '.join(self.users)}")
        if self.log_tail is not None:
            lines.append("hub log tail:\n" + self.log_tail())
        return "\n".join(lines)
