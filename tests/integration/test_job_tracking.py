"""Job tracking against the real Slurm: one shared poller, honest states, no orphans."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from factoryhub.hub.hub_config import hub_tag
from factoryhub.hub.site.loader import load_site
from tests.support.hub import RunningHub
from tests.support.waiting import wait_no_jobs, wait_until

from .test_spawn import jobs_of

pytestmark = pytest.mark.slurm


def server_and_route(hub: RunningHub, user: str) -> tuple[bool, bool]:
    with hub.client() as c:
        server = bool(c.get(f"/hub/api/users/{user}").json()["servers"])
        routes = c.get("/hub/api/proxy").json()
    return server, any(path.startswith(f"/user/{user}/") for path in routes)


def test_scancel_removes_the_server_from_the_api_and_the_routes(
    hub: RunningHub, unix_users: Any
) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user)
    assert server_and_route(hub, user) == (True, True)
    (job_id,) = [line.split()[0] for line in jobs_of(user)]
    subprocess.run(["scancel", job_id], check=True)
    begun = time.monotonic()
    wait_until(
        lambda: server_and_route(hub, user) == (False, False),
        10,
        lambda: f"server and route of {user} after scancel: {server_and_route(hub, user)}",
    )
    took = time.monotonic() - begun
    assert took < 5, took  # the benchmark measures the p95; this is a bound, not a figure
    assert f"job {job_id} was cancelled" in hub.log_tail(200)
    wait_no_jobs([user])


def sbatch_sleep(user: str, comment: str) -> str:
    """A job as a factoryhub server job would look, submitted behind the hub's back."""
    argv = ["runuser", "-u", user, "--", "sbatch", "--parsable", "--output=/dev/null"]
    argv += [f"--job-name=factoryhub-server-{user}", f"--comment={comment}", "--wrap", "sleep 600"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_an_orphan_job_of_this_hub_is_cancelled(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    tag = hub_tag(load_site(hub.site_file))
    out = sbatch_sleep(user, comment=tag)
    other = sbatch_sleep(user, comment="factoryhub:another-hub")  # another hub's: left alone
    try:
        grace = load_site(hub.site_file).slurm.orphan_grace
        wait_until(
            lambda: out not in " ".join(jobs_of(user)),
            grace * 3 + 30,
            lambda: f"orphan {out} still queued: {jobs_of(user)}",
        )
        assert other in " ".join(jobs_of(user))
        assert f"Cancelling orphan job {out}" in hub.log_tail(300)
    finally:
        subprocess.run(["scancel", out, other], check=False)


def test_a_spawn_cut_by_a_hub_crash_is_reconciled(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    hub.ensure_user(user)
    with hub.client(timeout=5) as c:
        try:
            c.post(f"/hub/api/users/{user}/server", json={}, timeout=0.5)
        except Exception:
            pass  # the spawn goes on in the hub
    wait_until(lambda: bool(jobs_of(user)), 20, lambda: f"no job of {user} yet")
    hub.kill_hub_only()  # SIGKILL while the spawn is in flight
    hub.start()
    # adopted (a ready server) or cancelled (no job), never leaked
    grace = load_site(hub.site_file).slurm.orphan_grace

    def settled() -> bool:
        server, _ = server_and_route(hub, user)
        return (server and bool(jobs_of(user))) or (not server and not jobs_of(user))

    wait_until(
        settled,
        grace * 3 + 30,
        lambda: f"{user}: server/route {server_and_route(hub, user)}, jobs {jobs_of(user)}",
    )
    if server_and_route(hub, user)[0]:
        hub.stop_server(user)
    wait_no_jobs([user])


def test_slurm_silent_for_60_s_loses_no_server(
    hub: RunningHub, unix_users: Any, slurm_outage: Any
) -> None:
    users = unix_users(2)
    for user in users:
        assert hub.spawn(user).status_code in (201, 202)
    for user in users:
        hub.wait_ready(user)
    before = {user: jobs_of(user) for user in users}
    slurm_outage.stop()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for user in users:
                assert server_and_route(hub, user) == (True, True), user
            time.sleep(10)
    finally:
        slurm_outage.start()
    time.sleep(3)  # a few polls with Slurm back
    with hub.client() as c:
        for user in users:
            assert server_and_route(hub, user) == (True, True), user
            assert c.get(f"/user/{user}/api/status").status_code == 200
            assert jobs_of(user) == before[user]
    for user in users:
        hub.stop_server(user)
        wait_no_jobs([user])


def test_the_poller_is_one_query_for_all_servers(hub: RunningHub, unix_users: Any) -> None:
    """Hub processes that run Slurm commands per minute do not grow with the servers."""
    users = unix_users(3)
    for user in users:
        assert hub.spawn(user).status_code in (201, 202)
    for user in users:
        hub.wait_ready(user)
    try:
        counts = squeue_children_of(hub, seconds=10)
        # ~1 query per second in total, not one per server per interval
        assert counts <= 14, counts
    finally:
        for user in users:
            hub.stop_server(user)
            wait_no_jobs([user])


def test_the_metrics_report_the_poller_and_spawns(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user)
    try:
        with hub.client() as c:
            text = c.get("/hub/metrics").text
    finally:
        hub.stop_server(user)
        wait_no_jobs([user])
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("factoryhub_")
    }
    assert samples["factoryhub_slurm_poller_queries_total"] > 0
    assert "factoryhub_slurm_poller_query_seconds_count" in samples
    assert samples['factoryhub_servers{state="running"}'] >= 1
    assert samples['factoryhub_spawn_seconds_count{profile="cpu-small"}'] >= 1


def squeue_children_of(hub: RunningHub, seconds: float) -> int:
    """How many squeue processes the hub started in ``seconds`` (sampled every 20 ms)."""
    assert hub.proc is not None
    seen: set[int] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().split()
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm == "squeue" and int(fields[3]) == hub.proc.pid:
                seen.add(int(pid))
        time.sleep(0.02)
    return len(seen)
