"""End to end: the idle culler stops idle servers (cancelling their Slurm jobs), not busy ones.

A hub of its own (the session ``hub`` culls after an hour): the shortest timeout the site
file allows (60 s), checked every 10 s; its servers then report activity every 15 s
(``JUPYTERHUB_ACTIVITY_INTERVAL``, a quarter of the timeout).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import REPO, RunningHub
from tests.support.kernel import Kernel
from tests.support.waiting import WaitTimeout, wait_until

from .hub_fixtures import write_site
from .test_spawn import jobs_of, wait_no_jobs

pytestmark = pytest.mark.slurm

PORTS = (18300, 18381, 18301)  # public, hub API, proxy API
TIMEOUT = 60  # the site file's minimum
EVERY = 10  # the site file's minimum
SLACK = 30  # the stop itself: the hub's API call, scancel, squeue showing the job gone
# The busy cell runs silently (no output, like a long training step): the server's
# factoryhub extension counts a busy kernel as activity, so it must not be culled.
BUSY_SECONDS = 180
BUSY_CELL = f"import time\nprint('started', flush=True)\ntime.sleep({BUSY_SECONDS})\n"


def culler_pids(api_port: int) -> list[int]:
    """Pids of jupyterhub-idle-culler processes talking to the hub API on ``api_port``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyterhub_idle_culler" not in cmdline:
            continue
        url = next((e for e in environ if e.startswith(b"JUPYTERHUB_API_URL=")), b"")
        if f":{api_port}/".encode() in url:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def culler_hub(slurm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("culler-hub-state")
    state.chmod(0o700)
    site = write_site(
        state / "factory.yaml",
        state,
        ports=PORTS,
        idle_culler={"enabled": True, "timeout": TIMEOUT, "every": EVERY},
    )
    running = RunningHub(
        state_dir=state,
        site_file=site,
        token=secrets.token_hex(32),
        log_path=REPO / "test-artifacts" / "hub-idle-culler.log",
        url=f"http://127.0.0.1:{PORTS[0]}",
    )
    running.log_path.parent.mkdir(exist_ok=True)
    running.start()
    try:
        pids = wait_until(
            lambda: culler_pids(PORTS[1]),
            60,
            lambda: f"the hub started no idle culler:\n{running.log_tail()}",
        )
        yield running
    finally:
        running.stop()

    # the hub stops its managed service with itself
    def alive() -> list[int]:
        return [p for p in pids if Path(f"/proc/{p}").exists()]

    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not alive(), 10, lambda: f"culler {alive()} alive")
    left = alive()
    for pid in left:  # the culler this fixture's hub started, by pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the idle culler outlived its hub: {left}"


def start_cell(hub: RunningHub, user: str, code: str, timeout: float = 60) -> str:
    """Start ``code`` in a new kernel of the user's server; return once the kernel is busy
    with it (without waiting for it to finish) and close the websocket, as a browser tab
    closed while a cell runs. Returns the kernel id."""
    with hub.client() as c:
        k = Kernel(hub.url, user, c, hub.token)
        k.begin(code, timeout)
        return k.kernel_id


def server_of(hub: RunningHub, user: str) -> dict[str, Any] | None:
    with hub.client() as c:
        return c.get(f"/hub/api/users/{user}").json()["servers"].get("")


def test_idle_server_is_culled_busy_one_is_not(culler_hub: RunningHub, unix_users: Any) -> None:
    hub = culler_hub
    idle, busy = unix_users(2)
    log_start = hub.log_path.stat().st_size

    def culled(user: str) -> bool:
        with hub.log_path.open("rb") as log:
            log.seek(log_start)
            return f"Culling server {user} (".encode() in log.read()

    try:
        with ThreadPoolExecutor(2) as pool:
            responses = list(
                pool.map(lambda u: hub.spawn(u, {"profile": "cpu-small"}), (idle, busy))
            )
        assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]
        hub.wait_ready(idle)
        idle_ready = time.monotonic()
        hub.wait_ready(busy)
        assert len(jobs_of(idle)) == 1 and len(jobs_of(busy)) == 1
        start_cell(hub, busy, BUSY_CELL)

        # the idle server: gone from the hub, its job from the queue, within the bound
        deadline = idle_ready + TIMEOUT + EVERY + SLACK
        while server_of(hub, idle) is not None or jobs_of(idle):
            assert time.monotonic() < deadline, (
                f"idle server of {idle} not culled within {TIMEOUT + EVERY + SLACK} s: "
                f"server {server_of(hub, idle)}, jobs {jobs_of(idle)}\n{hub.log_tail()}"
            )
            # the busy one stays all along
            assert server_of(hub, busy) is not None, f"busy server culled:\n{hub.log_tail()}"
            time.sleep(1)
        culled_after = time.monotonic() - idle_ready
        # the hub counts from the spawn's start, a few seconds before it was ready
        assert culled_after >= TIMEOUT - 15, f"culled after only {culled_after:.0f} s"
        assert culled(idle), hub.log_tail()

        # two more rounds of the culler: the busy server, started with the idle one, stays
        until = time.monotonic() + 2 * EVERY + 5
        while time.monotonic() < until:
            server = server_of(hub, busy)
            assert server is not None and server["ready"], f"busy server culled:\n{hub.log_tail()}"
            time.sleep(1)
        assert len(jobs_of(busy)) == 1 and "RUNNING" in jobs_of(busy)[0]
        assert not culled(busy), hub.log_tail()
    finally:
        for user in (idle, busy):
            if server_of(hub, user) is not None:
                hub.stop_server(user)
    for user in (idle, busy):
        wait_no_jobs(user)
