"""The job-tracking benchmark's ``burst`` phase: B users spawning at once under reads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.processes import Hub
from benchmarks.tracking_hub import (
    READY_TIMEOUT_S,
    log,
    server_state,
    slurmctld_instances,
    stop_all,
)
from benchmarks.tracking_stats import summarize

BURST_READ_EVERY_S = 0.1


def phase_burst(hub: Hub, users: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    import httpx

    reads: list[float] = []
    read_codes: Counter[int] = Counter()
    read_errors: list[str] = []
    post_latency: dict[str, float] = {}
    post_codes: dict[str, int | str] = {}
    ready_at: dict[str, float] = {}
    failed: set[str] = set()
    posted: set[str] = set()
    done = threading.Event()
    start_box: list[float] = []  # set by the barrier as it releases everyone at once
    barrier = threading.Barrier(
        len(users) + 1, action=lambda: start_box.append(time.perf_counter())
    )

    def spawner(user: str) -> None:
        with hub.client(timeout=120) as c:
            barrier.wait()
            t = time.perf_counter()
            try:
                r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
                post_codes[user] = r.status_code
            except httpx.HTTPError as e:
                post_codes[user] = f"error: {e!r}"
            post_latency[user] = time.perf_counter() - t
            if post_codes[user] in (201, 202):
                posted.add(user)
            else:
                failed.add(user)

    def reader() -> None:
        with hub.client(timeout=30) as c:
            barrier.wait()
            next_at = time.perf_counter()
            while not done.is_set():
                t = time.perf_counter()
                try:
                    r = c.get("/hub/api/users", params={"limit": 200})
                except httpx.HTTPError as e:
                    read_errors.append(repr(e))
                    r = None
                took = time.perf_counter() - t
                reads.append(took)
                if r is not None:
                    read_codes[r.status_code] += 1
                    if r.status_code == 200:
                        models = {m["name"]: m for m in r.json()}
                        for u in users:
                            state = server_state(models.get(u, {}))
                            if state == "ready" and u not in ready_at:
                                ready_at[u] = time.perf_counter() - start_box[0]
                            elif state == "none" and u in posted and u not in ready_at:
                                failed.add(u)
                if set(ready_at) | failed >= set(users):
                    done.set()
                if time.perf_counter() - start_box[0] > READY_TIMEOUT_S:
                    done.set()
                next_at += BURST_READ_EVERY_S
                done.wait(max(0.0, next_at - time.perf_counter()))

    threads = [threading.Thread(target=spawner, args=(u,), daemon=True) for u in users]
    threads.append(threading.Thread(target=reader, daemon=True))
    ctld = slurmctld_instances()
    log(f"{hub.name} burst: {len(users)} spawns at once")
    for t in threads:
        t.start()
    for t in threads:
        t.join(READY_TIMEOUT_S + 60)
    done.set()
    if not start_box:
        raise RuntimeError(f"{hub.name} burst: the threads never started together")
    wall = time.perf_counter() - start_box[0]
    not_ready = sorted(set(users) - set(ready_at))
    all_codes = Counter(read_codes)
    all_codes.update(c for c in post_codes.values() if isinstance(c, int))
    result: dict[str, Any] = {
        "spawns": len(users),
        "all_ready": not not_ready,
        "ready": len(ready_at),
        "not_ready": not_ready,
        "all_ready_s": round(max(ready_at.values()), 2) if not not_ready else None,
        "first_ready_s": round(min(ready_at.values()), 2) if ready_at else None,
        "window_s": round(wall, 1),
        "slurmctld_restarted_in_window": slurmctld_instances() != ctld,
        "reads": len(reads),
        "read_latency_ms": summarize([x * 1000 for x in reads], digits=1, keep_samples=False),
        "spawn_post_latency_ms": summarize(
            [x * 1000 for x in post_latency.values()], digits=1, keep_samples=False
        ),
        "status_codes": {str(k): v for k, v in sorted(all_codes.items())},
        "non_2xx": sum(v for k, v in all_codes.items() if not 200 <= k < 300),
        "5xx": sum(v for k, v in all_codes.items() if k >= 500),
        "request_errors": len(read_errors)
        + sum(1 for c in post_codes.values() if isinstance(c, str)),
    }
    log(
        f"{hub.name} burst: ready {len(ready_at)}/{len(users)} "
        f"(all in {result['all_ready_s']} s), reads p95 {result['read_latency_ms']['p95']} ms, "
        f"codes {result['status_codes']}"
    )
    log(f"{hub.name} burst: stopping servers")
    stop_all(hub, users)
    return result
