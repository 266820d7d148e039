"""The job-tracking benchmark's ``load`` phase: N servers running for M minutes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.job_tracking.hubs import (
    USER_PREFIX,
    log,
    sdiag,
    server_state,
    slurmctld_instances,
    spawn_all,
    stop_all,
    user_models,
)
from benchmarks.job_tracking.procs import ProcEvents, ProcSampler
from benchmarks.job_tracking.stats import net_of, process_rates, rpc_delta, rpc_rates
from tests.support.hub import RunningHub

SETTLE_S = 5.0  # after the last server is ready, before the load window opens


def measure_background(seconds: float) -> dict[str, Any]:
    """slurmctld's RPC rates with no benchmark hub running (other users of the cluster)."""
    before = sdiag()
    time.sleep(seconds)
    after = sdiag()
    return rpc_rates(rpc_delta(before, after), seconds, USER_PREFIX)


@dataclass
class Window:
    """What the load window saw: slurmctld's counts before and after, the processes the
    hub started (exact, and as sampled), and whether slurmctld was restarted meanwhile."""

    before: dict[str, Any]
    after: dict[str, Any]
    seconds: float
    ctld_restarted: bool
    exact: list[str] | None
    events_lost_batches: int
    events_error: str | None
    sampled: list[str]
    samples: int


def start_events(pid: int) -> ProcEvents:
    """The exact process count of ``pid``'s descendants, started (OSError: not allowed)."""
    events = ProcEvents(pid)
    events.start()
    return events


def watch_window(hub: RunningHub, minutes: float) -> Window:
    """Count the hub's processes and slurmctld's RPCs for ``minutes``."""
    assert hub.proc is not None
    events_error = None
    try:
        events: ProcEvents | None = start_events(hub.proc.pid)
    except OSError as e:
        events, events_error = None, f"process-event connector unavailable: {e}"
        log(events_error)
    sampler = ProcSampler(hub.proc.pid)
    sampler.start()
    ctld = slurmctld_instances()
    before = sdiag()
    start = time.monotonic()
    while (left := start + minutes * 60.0 - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        log(f"{hub.name} load: {(time.monotonic() - start) / 60:.1f}/{minutes} min")
    after = sdiag()
    seconds = time.monotonic() - start
    return Window(
        before=before,
        after=after,
        seconds=seconds,
        ctld_restarted=slurmctld_instances() != ctld,
        sampled=sampler.stop(),
        samples=sampler.samples,
        exact=events.stop() if events is not None else None,
        events_lost_batches=events.lost_batches if events is not None else 0,
        events_error=events_error,
    )


def window_result(w: Window, background: Mapping[str, Any] | None) -> dict[str, Any]:
    """The window's figures: RPC rates (net of the background), hub processes per minute."""
    delta = rpc_delta(w.before, w.after)
    rates = rpc_rates(delta, w.seconds, USER_PREFIX)
    procs = process_rates(w.exact if w.exact is not None else w.sampled, w.seconds)
    sampled_rates = process_rates(w.sampled, w.seconds)
    result: dict[str, Any] = {
        "slurmctld_restarted_in_window": w.ctld_restarted,
        "window_s": round(w.seconds, 1),
        **rates,
        "job_info_rpcs_per_minute_net_of_background": net_of(
            rates, background, "job_info_rpcs_per_minute"
        ),
        "all_rpcs_per_minute_net_of_background": net_of(rates, background, "all_rpcs_per_minute"),
        "hub_processes_per_minute": procs["per_minute"],
        "hub_processes_by_name_per_minute": procs["by_name_per_minute"],
        # Each squeue the hub runs is one job-table query (REQUEST_JOB_INFO for
        # factoryhub's, REQUEST_JOB_INFO_SINGLE for stock's `squeue -j`): the hub's own
        # share of the job-info RPCs, free of other clients of the controller.
        "hub_squeue_per_minute": procs["by_name_per_minute"].get("squeue", 0.0),
        "hub_processes_method": (
            "process-event connector (every fork)"
            if w.exact is not None
            else "20 ms /proc sampling"
        ),
        "hub_processes_sampled_20ms": {
            "per_minute": sampled_rates["per_minute"],
            "by_name_per_minute": sampled_rates["by_name_per_minute"],
            "samples": w.samples,
        },
        "rpc_delta": delta,
    }
    if w.events_lost_batches:
        result["process_events_lost_batches"] = w.events_lost_batches
    if w.events_error:
        result["process_events_error"] = w.events_error
    return result


def phase_load(
    hub: RunningHub,
    users: Sequence[str],
    options: Mapping[str, Any],
    minutes: float,
    background: Mapping[str, Any] | None,
) -> dict[str, Any]:
    log(f"{hub.name} load: spawning {len(users)} servers")
    ready_s, retried = spawn_all(hub, users, options)
    log(f"{hub.name} load: all {len(users)} ready in {ready_s:.1f} s; settling {SETTLE_S} s")
    time.sleep(SETTLE_S)
    window = watch_window(hub, minutes)
    with hub.client() as c:
        models = user_models(c)
    result: dict[str, Any] = {
        "servers": len(users),
        "servers_ready_at_end": sum(server_state(models.get(u, {})) == "ready" for u in users),
        "spawn_all_ready_s": round(ready_s, 1),
        "spawns_retried": retried,
        **window_result(window, background),
    }
    log(
        f"{hub.name} load: job-info RPCs {result['job_info_rpcs_per_minute']}/min, "
        f"all {result['all_rpcs_per_minute']}/min, hub processes "
        f"{result['hub_processes_per_minute']}/min {result['hub_processes_by_name_per_minute']}"
    )
    log(f"{hub.name} load: stopping {len(users)} servers")
    stop_all(hub, users)
    return result
