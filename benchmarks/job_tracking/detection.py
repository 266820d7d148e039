"""The job-tracking benchmark's ``detection`` phase: a job cancelled behind the hub's back."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from benchmarks.job_tracking.hubs import (
    READY_TIMEOUT_S,
    jobs_of,
    log,
    server_state,
    slurmctld_instances,
    spawn,
    stop_all,
    wait_states,
)
from benchmarks.job_tracking.stats import summarize
from tests.support.hub import RunningHub
from tests.support.waiting import WaitTimeout, wait_until

DETECTION_POLL_S = 0.05
DETECTION_CAP_S = 60.0


def routed(client: httpx.Client, route: str) -> bool:
    return any(k.endswith(route) for k in client.get("/hub/api/proxy").json())


def detection_trial(hub: RunningHub, user: str, options: Mapping[str, Any]) -> tuple[float, str]:
    """Spawn, wait ready (and routed), scancel the job as root: seconds until the hub has
    dropped both the server and its route (DETECTION_CAP_S if it has not by then)."""
    spawn(hub, user, options)
    wait_states(hub, [user], "ready", READY_TIMEOUT_S)
    route = f"/user/{user}/"
    with hub.client(timeout=10) as c:
        wait_until(
            lambda: routed(c, route),
            30,
            lambda: f"{hub.name}: no route {route} for a ready server",
            first=0.1,
            longest=0.1,
        )
        jobs = [str(j.job_id) for j in jobs_of([user])]
        if len(jobs) != 1:
            raise RuntimeError(f"{hub.name}: expected one job of {user}, found {jobs}")
        start = time.perf_counter()
        subprocess.run(["scancel", jobs[0]], check=True, timeout=30)

        def dropped() -> float | None:
            if server_state(c.get(f"/hub/api/users/{user}").json()) != "none":
                return None
            return None if routed(c, route) else time.perf_counter() - start

        try:
            return wait_until(
                dropped,
                DETECTION_CAP_S,
                lambda: "not dropped",
                first=DETECTION_POLL_S,
                longest=DETECTION_POLL_S,
            ), jobs[0]
        except WaitTimeout:
            return DETECTION_CAP_S, jobs[0]


def phase_detection(
    hub: RunningHub, users: Sequence[str], options: Mapping[str, Any], trials: int
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
