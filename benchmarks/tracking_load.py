"""The job-tracking benchmark's ``load`` phase: N servers running for M minutes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.processes import Hub
from benchmarks.tracking_hub import (
    USER_PREFIX,
    log,
    sdiag,
    server_state,
    slurmctld_instances,
    spawn_all,
    stop_all,
    user_models,
)
from benchmarks.tracking_procs import ProcEvents, ProcSampler
from benchmarks.tracking_stats import net_of, process_rates, rpc_delta, rpc_rates

SETTLE_S = 5.0  # after the last server is ready, before the load window opens


def measure_background(seconds: float) -> dict[str, Any]:
    """slurmctld's RPC rates with no benchmark hub running (other users of the cluster)."""
    before = sdiag()
    time.sleep(seconds)
    after = sdiag()
    return rpc_rates(rpc_delta(before, after), seconds, USER_PREFIX)


def phase_load(
    hub: Hub,
    users: Sequence[str],
    options: Mapping[str, Any],
    minutes: float,
    background: Mapping[str, Any] | None,
) -> dict[str, Any]:
    log(f"{hub.name} load: spawning {len(users)} servers")
    ready_s, retried = spawn_all(hub, users, options)
    log(f"{hub.name} load: all {len(users)} ready in {ready_s:.1f} s; settling {SETTLE_S} s")
    time.sleep(SETTLE_S)
    assert hub.proc is not None
    events: ProcEvents | None = ProcEvents(hub.proc.pid)
    events_error = None
    try:
        events.start()
    except OSError as e:
        events, events_error = None, f"process-event connector unavailable: {e}"
        log(events_error)
    sampler = ProcSampler(hub.proc.pid)
    sampler.start()
    ctld = slurmctld_instances()
    before = sdiag()
    start = time.monotonic()
    window = minutes * 60.0
    while (left := start + window - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        log(f"{hub.name} load: {(time.monotonic() - start) / 60:.1f}/{minutes} min")
    after = sdiag()
    seconds = time.monotonic() - start
    ctld_restarted = slurmctld_instances() != ctld
    sampled = sampler.stop()
    exact = events.stop() if events is not None else None
    with hub.client() as c:
        models = user_models(c)
    still_ready = sum(server_state(models.get(u, {})) == "ready" for u in users)
    delta = rpc_delta(before, after)
    rates = rpc_rates(delta, seconds, USER_PREFIX)
    procs = process_rates(exact if exact is not None else sampled, seconds)
    sampled_rates = process_rates(sampled, seconds)
    result: dict[str, Any] = {
        "servers": len(users),
        "servers_ready_at_end": still_ready,
        "spawn_all_ready_s": round(ready_s, 1),
        "spawns_retried": retried,
        "slurmctld_restarted_in_window": ctld_restarted,
        "window_s": round(seconds, 1),
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
            "process-event connector (every fork)" if exact is not None else "20 ms /proc sampling"
        ),
        "hub_processes_sampled_20ms": {
            "per_minute": sampled_rates["per_minute"],
            "by_name_per_minute": sampled_rates["by_name_per_minute"],
            "samples": sampler.samples,
        },
        "rpc_delta": delta,
    }
    if events is not None and events.lost_batches:
        result["process_events_lost_batches"] = events.lost_batches
    if events_error:
        result["process_events_error"] = events_error
    log(
        f"{hub.name} load: job-info RPCs {rates['job_info_rpcs_per_minute']}/min, "
        f"all {rates['all_rpcs_per_minute']}/min, hub processes {procs['per_minute']}/min "
        f"{procs['by_name_per_minute']}"
    )
    log(f"{hub.name} load: stopping {len(users)} servers")
    stop_all(hub, users)
    return result
