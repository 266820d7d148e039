"""The benchmarks' hubs, users and jobs.

Two hubs, each on loopback ports of its own away from the integration tests' (18000-18400):
factoryhub's (its own ``jupyterhub_config.py``, local sign-in, no projects unless a benchmark
adds them) and stock batchspawner's (``stock_batchspawner_config.py``). Both are run by
``tests.support.hub.RunningHub``, the runner of the integration tests. Benchmark users are
created with a Slurm association when missing; their jobs are read with ``squeue --json``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cli import logger
from tests.support.hub import PROXY_PATH, RunningHub, local_signin, site_for
from tests.support.waiting import wait_no_jobs, wait_until

VENV = Path(os.environ.get("FHBENCH_VENV", "/opt/factoryhub/venv"))  # the user servers'
STOCK_CONFIG = Path(__file__).resolve().parent / "stock_batchspawner_config.py"
# (public, hub API, proxy API)
STOCK_PORTS = (28100, 28181, 28101)
FACTORYHUB_PORTS = (28000, 28081, 28001)
PROFILE = "cpu-small"
POLL_S = 0.05  # readiness polling while a spawn is measured
SPAWN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 90.0

log = logger("benchmarks")


def ensure_unix_user(name: str) -> None:
    """A benchmark user who may submit jobs (Slurm enforces associations here)."""
    from factoryhub.local.accounting import ensure_default_association

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        log(f"created Unix user {name}")
    ensure_default_association(name)


def cancel_jobs(user: str) -> None:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(["scancel", f"--user={user}"], capture_output=True, timeout=30)


def is_server_status(response: httpx.Response) -> bool:
    """A 200 from jupyter_server's ``/api/status`` (not some page of the hub)."""
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "started" in body


def server_gone(client: httpx.Client, user: str) -> bool:
    """The hub lists no server, running or pending, for ``user``."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        model = client.get(f"/hub/api/users/{user}").json()
        return not model.get("servers") and not model.get("pending")
    return False


def measure_spawn(
    hub: RunningHub, user: str, options: Mapping[str, Any], timeout: float = SPAWN_TIMEOUT_S
) -> float:
    """Seconds from the spawn POST to the first 200 of /user/U/api/status via the proxy,
    polled every ``POLL_S``; a spawn that failed ends the wait (checked every second)."""
    status_path = f"/user/{user}/api/status"
    with hub.client(timeout=10) as c:
        start = time.perf_counter()
        r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
        if r.status_code not in (201, 202):
            raise RuntimeError(f"{hub.name}: spawn of {user}: {r.status_code} {r.text}")
        next_check = [start + 1.0]

        def answered() -> float | None:
            with contextlib.suppress(httpx.HTTPError):
                if is_server_status(c.get(status_path)):
                    return time.perf_counter() - start
            if time.perf_counter() > next_check[0]:
                next_check[0] = time.perf_counter() + 1.0
                if server_gone(c, user):
                    raise RuntimeError(f"{hub.name}: server of {user} is gone:\n{hub.log_tail()}")
            return None

        return wait_until(
            answered,
            timeout,
            lambda: f"{hub.name}: {user} not reachable in {timeout} s:\n{hub.log_tail()}",
            first=POLL_S,
            longest=POLL_S,
        )


def stop_server(hub: RunningHub, user: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the user's server (if any); wait until the hub forgets it and its job is gone."""
    hub.stop_server(user, timeout=timeout, bound=timeout, missing_ok=True)
    wait_no_jobs([user], timeout)


def factoryhub_hub(
    state_dir: Path, token: str, change_site: Callable[[dict[str, Any]], None] | None = None
) -> RunningHub:
    """factoryhub's hub with local sign-in and no projects (the benchmark users are in no
    project's group: spawns are measured, not refused); ``change_site(site)`` may change the
    site file before it is written."""
    import yaml

    site = local_signin(site_for(state_dir, FACTORYHUB_PORTS, VENV))
    if change_site is not None:
        change_site(site)
    site_file = state_dir / "factory.yaml"
    site_file.write_text(yaml.safe_dump(site))
    return RunningHub(
        state_dir=state_dir,
        site_file=site_file,
        token=token,
        log_path=state_dir / "hub.log",
        url=f"http://127.0.0.1:{FACTORYHUB_PORTS[0]}",
        name="factoryhub",
        free_ports=FACTORYHUB_PORTS,
    )


def stock_hub(state_dir: Path, token: str) -> RunningHub:
    """Stock batchspawner's hub (``stock_batchspawner_config.py``, configured through the
    ``FHBENCH_*`` variables it reads)."""
    public, api, proxy_api = STOCK_PORTS
    hub = RunningHub(
        state_dir=state_dir,
        site_file=None,
        token=token,
        log_path=state_dir / "hub.log",
        url=f"http://127.0.0.1:{public}",
        config_file=STOCK_CONFIG,
        name="stock",
        free_ports=STOCK_PORTS,
    )
    hub.extra_env.update(
        FHBENCH_STATE_DIR=str(state_dir),
        FHBENCH_PUBLIC_PORT=str(public),
        FHBENCH_API_PORT=str(api),
        FHBENCH_PROXY_API_PORT=str(proxy_api),
        FHBENCH_ADMIN_TOKEN_FILE=str(hub.token_file),
        FHBENCH_VENV=str(VENV),
        FHBENCH_PROXY_CMD=str(PROXY_PATH),
    )
    return hub
