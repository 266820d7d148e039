"""The job-tracking benchmark's ``detection`` phase: a job cancelled behind the hub's back."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.processes import Hub
from benchmarks.tracking_hub import (
    READY_TIMEOUT_S,
    jobs_of,
    log,
    server_state,
    slurmctld_instances,
    spawn,
    stop_all,
    wait_states,
)
from benchmarks.tracking_stats import summarize

DETECTION_POLL_S = 0.05
DETECTION_CAP_S = 60.0


def detection_trial(hub: Hub, user: str, options: Mapping[str, Any]) -> tuple[float, str]:
    """Spawn, wait ready (and routed), scancel the job as root: seconds until the hub has
    dropped both the server and its route (DETECTION_CAP_S if it has not by then)."""
    spawn(hub, user, options)
    wait_states(hub, [user], "ready", READY_TIMEOUT_S)
    route = f"/user/{user}/"
    with hub.client(timeout=10) as c:
        deadline = time.monotonic() + 30
        while not any(k.endswith(route) for k in c.get("/hub/api/proxy").json()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{hub.name}: no route {route} for a ready server")
            time.sleep(0.1)
        jobs = [j for j, u in jobs_of([user]) if u == user]
        if len(jobs) != 1:
            raise RuntimeError(f"{hub.name}: expected one job of {user}, found {jobs}")
        start = time.perf_counter()
        subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
        while True:
            if server_state(c.get(f"/hub/api/users/{user}").json()) == "none":
                routes = c.get("/hub/api/proxy").json()
                if not any(k.endswith(route) for k in routes):
                    return time.perf_counter() - start, jobs[0]
            if time.perf_counter() - start >= DETECTION_CAP_S:
                return DETECTION_CAP_S, jobs[0]
            time.sleep(DETECTION_POLL_S)


def phase_detection(
    hub: Hub, users: Sequence[str], options: Mapping[str, Any], trials: int
) -> dict[str, Any]:
    samples: list[float] = []
    quiet: list[float] = []  # trials during which slurmctld was not restarted
    disturbed: list[int] = []
    errors: list[str] = []
    for i in range(trials):
        user = users[i % len(users)]
        ctld = slurmctld_instances()
        try:
            elapsed, job = detection_trial(hub, user, options)
        except Exception as e:
            errors.append(f"trial {i + 1} ({user}): {e}"[:500])
            log(f"{hub.name} detection {i + 1}/{trials} FAILED: {e}")
        else:
            samples.append(elapsed)
            restarted = slurmctld_instances() != ctld
            if restarted:
                disturbed.append(i + 1)
            else:
                quiet.append(elapsed)
            note = " (slurmctld restarted meanwhile)" if restarted else ""
            log(f"{hub.name} detection {i + 1}/{trials}: {elapsed:.3f} s ({user}, job {job}){note}")
        with contextlib.suppress(Exception):
            stop_all(hub, [user])  # a no-op unless the hub missed it or the trial failed
    if not samples:
        raise RuntimeError(f"every detection trial failed: {errors}")
    return {
        "trials": trials,
        "timeouts": sum(1 for x in samples if x >= DETECTION_CAP_S),
        "cap_s": DETECTION_CAP_S,
        **summarize(samples),
        "failed_trials": errors,
        "trials_with_slurmctld_restart": disturbed,
        "without_slurmctld_restart": summarize(quiet) if quiet and disturbed else None,
    }
