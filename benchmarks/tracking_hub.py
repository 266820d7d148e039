"""The job-tracking benchmark's Slurm and hub helpers, shared by its sub-benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.processes import STOCK_CONFIG, Hub, factoryhub_hub, stock_hub
from benchmarks.tracking_procs import proc_table
from benchmarks.tracking_stats import parse_sdiag

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


def log(message: str) -> None:
    print(f"[job_tracking {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ Slurm


def slurm_output(argv: Sequence[str], patience: float = 90.0) -> str:
    """stdout of a Slurm command; retried while slurmctld does not answer (restarts)."""
    deadline = time.monotonic() + patience
    while True:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        time.sleep(1.0)


def sdiag() -> dict[str, Any]:
    return parse_sdiag(slurm_output(["sdiag"]))


def slurmctld_instances() -> frozenset[tuple[int, int]]:
    """(pid, start time) of the slurmctld processes: a change means it was restarted."""
    return frozenset((pid, e[2]) for pid, e in proc_table().items() if e[1] == "slurmctld")


def jobs_of(users: Sequence[str]) -> list[tuple[str, str]]:
    """(job id, user) of the users' active jobs."""
    out = slurm_output(["squeue", "--noheader", f"--user={','.join(users)}", "--format=%i %u"])
    pairs = [line.split() for line in out.splitlines() if line.strip()]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]


def wait_no_jobs(users: Sequence[str], timeout: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while jobs := jobs_of(users):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still there after {timeout} s: {jobs}")
        time.sleep(0.3)


# ------------------------------------------------------------------------ hubs


def make_hub(variant: str, state: Path, token_file: Path, token: str) -> tuple[Hub, float]:
    """The variant's hub, with a wrapper config (see module constants); its poll interval."""
    state.mkdir(mode=0o700)
    if variant == "stock":
        from jupyterhub.spawner import Spawner

        hub = stock_hub(state, token_file, token)
        wrapper = state / "job_tracking_config.py"
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

    import yaml

    hub = factoryhub_hub(state, token_file, token)
    site_file = Path(hub.env["FACTORYHUB_SITE_FILE"])
    site = yaml.safe_load(site_file.read_text())
    site["slurm"]["job_name_prefix"] = JOB_NAME_PREFIX
    # No projects: every user may use every profile, under their default Slurm account
    # (the benchmark users are in no project's group).
    site["projects"] = []
    site["courses"] = {"enabled": False, "list": []}  # courses name projects
    site_file.write_text(yaml.safe_dump(site))
    wrapper = state / "job_tracking_config.py"
    wrapper.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(hub.config_file)!r})  # noqa: F821\n"
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


def spawn(hub: Hub, user: str, options: Mapping[str, Any]) -> None:
    with hub.client(timeout=60) as c:
        r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{hub.name}: spawn of {user}: {r.status_code} {r.text[:300]}")


def spawn_all(hub: Hub, users: Sequence[str], options: Mapping[str, Any]) -> tuple[float, int]:
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


def wait_states(hub: Hub, users: Sequence[str], want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with hub.client() as c:
        while True:
            models = user_models(c)
            states = {u: server_state(models.get(u, {})) for u in users}
            if want == "ready" and any(s == "none" for s in states.values()):
                gone = [u for u, s in states.items() if s == "none"]
                raise SpawnFailed(f"{hub.name}: spawn failed for {gone}:\n{hub.log_tail()}", gone)
            if all(s == want for s in states.values()):
                return
            if time.monotonic() > deadline:
                late = {u: s for u, s in states.items() if s != want}
                raise RuntimeError(f"{hub.name}: not {want} in {timeout} s: {late}")
            time.sleep(0.5)


def stop_all(hub: Hub, users: Sequence[str], timeout: float = STOP_TIMEOUT_S) -> None:
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
