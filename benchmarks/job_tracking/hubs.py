"""The job-tracking benchmark's Slurm and hub helpers, shared by its phases."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import cli
from benchmarks.hubs import STOCK_CONFIG, factoryhub_hub, stock_hub
from benchmarks.job_tracking.procs import proc_table
from benchmarks.job_tracking.stats import parse_sdiag
from tests.support.hub import RunningHub, hub_config_path
from tests.support.waiting import QueuedJob, SlurmSilent, squeue_jobs, wait_no_jobs, wait_until

USER_PREFIX = "fhtrack"
# factoryhub's jobs get their own name prefix here, so that the hubs of integration
# tests running beside the benchmark (job names "factoryhub-...") never list them.
JOB_NAME_PREFIX = "fhtrack"
# Both variants' jobs: 512 MB (stock gets DefMemPerCPU=512 without --mem) and shared
# CPUs where a partition allows it, so 20 servers fit the local node (64 declared CPUs,
# 16.8 GB) next to other jobs.
FACTORYHUB_EXTRA_SBATCH = ("--mem=512M", "--oversubscribe")
STOCK_REQ_OPTIONS = "--oversubscribe"

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 180.0
SLURM_PATIENCE_S = 90.0  # how long a slurmctld that does not answer (restarts) is waited for

log = cli.logger("job_tracking")


# ------------------------------------------------------------------------ Slurm


def sdiag() -> dict[str, Any]:
    """slurmctld's RPC counts (``sdiag``: Slurm 22.05 has no JSON form of it); retried
    while slurmctld does not answer."""
    result: list[subprocess.CompletedProcess[str]] = []

    def answered() -> bool:
        result[:] = [subprocess.run(["sdiag"], capture_output=True, text=True, timeout=30)]
        return result[0].returncode == 0

    wait_until(
        answered,
        SLURM_PATIENCE_S,
        lambda: f"sdiag: {result[0].stderr.strip() if result else 'not run'}",
        first=1.0,
    )
    return parse_sdiag(result[0].stdout)


def slurmctld_instances() -> frozenset[tuple[int, int]]:
    """(pid, start time) of the slurmctld processes: a change means it was restarted."""
    return frozenset((pid, e[2]) for pid, e in proc_table().items() if e[1] == "slurmctld")


def jobs_of(users: Sequence[str]) -> list[QueuedJob]:
    """The users' live jobs (``squeue --json``); retried while slurmctld does not answer."""

    def answered() -> tuple[list[QueuedJob]] | None:
        with contextlib.suppress(SlurmSilent):
            return (squeue_jobs(users),)
        return None

    return wait_until(answered, SLURM_PATIENCE_S, lambda: "squeue did not answer", first=1.0)[0]


# ------------------------------------------------------------------------ hubs


def make_hub(variant: str, state: Path, token: str) -> tuple[RunningHub, float]:
    """The variant's hub, with a wrapper config (see module constants); its poll interval."""
    state.mkdir(mode=0o700)
    wrapper = state / "job_tracking_config.py"
    if variant == "stock":
        from jupyterhub.spawner import Spawner

        hub = stock_hub(state, token)
        wrapper.write_text(
            "c = get_config()  # noqa: F821\n"
            f"load_subconfig({str(STOCK_CONFIG)!r})  # noqa: F821\n"
            "# GET /hub/api/proxy needs the proxy scope\n"
            "c.JupyterHub.load_roles = [\n"
            "    dict(r, scopes=[*r['scopes'], 'proxy']) for r in c.JupyterHub.load_roles\n"
            "]\n"
            f"c.BatchSpawnerBase.req_options = {STOCK_REQ_OPTIONS!r}\n"
        )
        hub.config_file = wrapper
        return hub, float(Spawner.poll_interval.default_value)

    site: dict[str, Any] = {}

    def change_site(data: dict[str, Any]) -> None:
        data["slurm"]["job_name_prefix"] = JOB_NAME_PREFIX
        site.update(data)

    hub = factoryhub_hub(state, token, change_site)
    wrapper.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({hub_config_path()!r})  # noqa: F821\n"
        f"c.FactorySlurmSpawner.extra_sbatch_options = {list(FACTORYHUB_EXTRA_SBATCH)!r}\n"
    )
    hub.config_file = wrapper
    return hub, float(site["slurm"]["poll_interval"])


def server_state(model: Mapping[str, Any]) -> str:
    """'ready', 'pending' or 'none' for the user's default server."""
    server = (model.get("servers") or {}).get("")
    if server is None:
        return "pending" if model.get("pending") else "none"
    return "ready" if server.get("ready") else "pending"


def user_models(client: Any) -> dict[str, dict[str, Any]]:
    r = client.get("/hub/api/users", params={"limit": 200})
    r.raise_for_status()
    return {m["name"]: m for m in r.json()}


def spawn(hub: RunningHub, user: str, options: Mapping[str, Any]) -> None:
    with hub.client(timeout=60) as c:
        r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{hub.name}: spawn of {user}: {r.status_code} {r.text[:300]}")


def spawn_all(
    hub: RunningHub, users: Sequence[str], options: Mapping[str, Any]
) -> tuple[float, int]:
    """Spawn every user's server at once; seconds until all are ready, and how many spawns
    failed and were tried once more (a slurmctld restart by someone else, say)."""
    start = time.perf_counter()
    todo, retried = list(users), 0
    for attempt in range(2):
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            errors = [f.exception() for f in [pool.submit(spawn, hub, u, options) for u in todo]]
        try:
            wait_states(hub, users, "ready", READY_TIMEOUT_S)
            return time.perf_counter() - start, retried
        except SpawnFailed as e:
            if attempt:
                raise
            todo = e.users
            retried = len(todo)
            log(f"{hub.name}: {retried} spawns failed ({[str(x) for x in errors if x]}); retrying")
            stop_all(hub, todo)
    raise AssertionError("unreachable")


class SpawnFailed(RuntimeError):
    def __init__(self, message: str, users: list[str]) -> None:
        super().__init__(message)
        self.users = users


def wait_states(hub: RunningHub, users: Sequence[str], want: str, timeout: float) -> None:
    """Wait until every user's default server is in state ``want``; while waiting for
    'ready', a server that is gone raises ``SpawnFailed`` naming its users."""
    states: dict[str, str] = {}
    with hub.client() as c:

        def reached() -> bool:
            models = user_models(c)
            states.update({u: server_state(models.get(u, {})) for u in users})
            gone = [u for u, s in states.items() if s == "none"]
            if want == "ready" and gone:
                raise SpawnFailed(f"{hub.name}: spawn failed for {gone}:\n{hub.log_tail()}", gone)
            return all(s == want for s in states.values())

        wait_until(
            reached,
            timeout,
            lambda: f"{hub.name}: not {want}: { {u: s for u, s in states.items() if s != want} }",
            first=0.5,
            longest=0.5,
        )


def stop_all(hub: RunningHub, users: Sequence[str], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop every server of ``users``; wait until the hub shows none and Slurm has no job."""
    with hub.client(timeout=60) as c:
        models = user_models(c)
        running = [u for u in users if server_state(models.get(u, {})) != "none"]

        def delete(user: str) -> None:
            r = c.delete(f"/hub/api/users/{user}/server")
            if r.status_code not in (202, 204, 400):
                raise RuntimeError(f"{hub.name}: stop of {user}: {r.status_code} {r.text}")

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(running)))) as pool:
            for f in [pool.submit(delete, u) for u in running]:
                f.result()
    wait_states(hub, users, "none", timeout)
    wait_no_jobs(users, timeout)
