"""The job-tracking benchmark's ``burst`` phase: B users spawning at once under reads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from benchmarks.job_tracking.hubs import (
    READY_TIMEOUT_S,
    log,
    server_state,
    slurmctld_instances,
    stop_all,
)
from benchmarks.job_tracking.stats import summarize
from tests.support.hub import RunningHub

BURST_READ_EVERY_S = 0.1


def milliseconds(seconds: Iterable[float]) -> dict[str, Any]:
    return summarize([x * 1000 for x in seconds], digits=1, keep_samples=False)


class Burst:
    """B spawner threads and one reader, released together by a barrier. The spawners POST
    once each; the reader does ``GET /hub/api/users`` every ``BURST_READ_EVERY_S`` until
    every server is ready or gone (or ``READY_TIMEOUT_S`` passed), timing each read."""

    def __init__(self, hub: RunningHub, users: Sequence[str], options: Mapping[str, Any]):
        self.hub, self.users, self.options = hub, list(users), dict(options)
        self.reads: list[float] = []
        self.read_codes: Counter[int] = Counter()
        self.read_errors: list[str] = []
        self.post_latency: dict[str, float] = {}
        self.post_codes: dict[str, int | str] = {}
        self.ready_at: dict[str, float] = {}
        self.failed: set[str] = set()
        self.posted: set[str] = set()
        self.done = threading.Event()
        self.start_box: list[float] = []  # set by the barrier as it releases everyone at once
        self.barrier = threading.Barrier(
            len(users) + 1, action=lambda: self.start_box.append(time.perf_counter())
        )

    def run(self) -> float:
        """All threads, to the end; the seconds from the release to now."""
        threads = [threading.Thread(target=self.spawner, args=(u,)) for u in self.users]
        threads.append(threading.Thread(target=self.reader))
        for t in threads:
            t.daemon = True
        for t in threads:
            t.start()
        for t in threads:
            t.join(READY_TIMEOUT_S + 60)
        self.done.set()
        if not self.start_box:
            raise RuntimeError(f"{self.hub.name} burst: the threads never started together")
        return time.perf_counter() - self.start_box[0]

    def spawner(self, user: str) -> None:
        with self.hub.client(timeout=120) as c:
            self.barrier.wait()
            t = time.perf_counter()
            try:
                r = c.post(f"/hub/api/users/{user}/server", json=self.options)
                self.post_codes[user] = r.status_code
            except httpx.HTTPError as e:
                self.post_codes[user] = f"error: {e!r}"
            self.post_latency[user] = time.perf_counter() - t
            if self.post_codes[user] in (201, 202):
                self.posted.add(user)
            else:
                self.failed.add(user)

    def reader(self) -> None:
        with self.hub.client(timeout=30) as c:
            self.barrier.wait()
            next_at = time.perf_counter()
            while not self.done.is_set():
                self.read_once(c)
                if set(self.ready_at) | self.failed >= set(self.users):
                    self.done.set()
                if time.perf_counter() - self.start_box[0] > READY_TIMEOUT_S:
                    self.done.set()
                next_at += BURST_READ_EVERY_S
                self.done.wait(max(0.0, next_at - time.perf_counter()))

    def read_once(self, c: httpx.Client) -> None:
        """One timed read; the servers it shows ready (or gone) are recorded."""
        t = time.perf_counter()
        try:
            r = c.get("/hub/api/users", params={"limit": 200})
        except httpx.HTTPError as e:
            self.read_errors.append(repr(e))
            self.reads.append(time.perf_counter() - t)
            return
        self.reads.append(time.perf_counter() - t)
        self.read_codes[r.status_code] += 1
        if r.status_code != 200:
            return
        models = {m["name"]: m for m in r.json()}
        for u in self.users:
            state = server_state(models.get(u, {}))
            if state == "ready" and u not in self.ready_at:
                self.ready_at[u] = time.perf_counter() - self.start_box[0]
            elif state == "none" and u in self.posted and u not in self.ready_at:
                self.failed.add(u)

    def result(self, wall: float, restarted: bool) -> dict[str, Any]:
        not_ready = sorted(set(self.users) - set(self.ready_at))
        codes = Counter(self.read_codes)
        codes.update(c for c in self.post_codes.values() if isinstance(c, int))
        ready = self.ready_at.values()
        return {
            "spawns": len(self.users),
            "all_ready": not not_ready,
            "ready": len(self.ready_at),
            "not_ready": not_ready,
            "all_ready_s": round(max(ready), 2) if not not_ready else None,
            "first_ready_s": round(min(ready), 2) if ready else None,
            "window_s": round(wall, 1),
            "slurmctld_restarted_in_window": restarted,
            "reads": len(self.reads),
            "read_latency_ms": milliseconds(self.reads),
            "spawn_post_latency_ms": milliseconds(self.post_latency.values()),
            "status_codes": {str(k): v for k, v in sorted(codes.items())},
            "non_2xx": sum(v for k, v in codes.items() if not 200 <= k < 300),
            "5xx": sum(v for k, v in codes.items() if k >= 500),
            "request_errors": len(self.read_errors)
            + sum(1 for c in self.post_codes.values() if isinstance(c, str)),
        }


def phase_burst(
    hub: RunningHub, users: Sequence[str], options: Mapping[str, Any]
) -> dict[str, Any]:
    burst = Burst(hub, users, options)
    ctld = slurmctld_instances()
    log(f"{hub.name} burst: {len(users)} spawns at once")
    wall = burst.run()
    result = burst.result(wall, restarted=slurmctld_instances() != ctld)
    log(
        f"{hub.name} burst: ready {result['ready']}/{len(users)} "
        f"(all in {result['all_ready_s']} s), reads p95 {result['read_latency_ms']['p95']} ms, "
        f"codes {result['status_codes']}"
    )
    log(f"{hub.name} burst: stopping servers")
    stop_all(hub, users)
    return result
