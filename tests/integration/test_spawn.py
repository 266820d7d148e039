"""End to end: the real hub spawns JupyterLab as real Slurm jobs of real Unix users."""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from factoryhub.local import slurm as local_slurm
from tests.support.hub import RunningHub
from tests.support.kernel import run_in_kernel
from tests.support.waiting import squeue_jobs, wait_no_jobs

pytestmark = pytest.mark.slurm


def jobs_of(user: str) -> list[str]:
    """``"<id> <state> <name>"`` of each of the user's live jobs (``squeue --json``)."""
    return [f"{j.job_id} {j.state} {j.name}" for j in squeue_jobs([user])]


def test_two_users_spawn_run_code_as_themselves_and_stop(hub: RunningHub, unix_users: Any) -> None:
    users = unix_users(2)
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda u: hub.spawn(u, {"profile": "cpu-small"}), users))
    assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]
    for user in users:
        hub.wait_ready(user)
        with hub.client() as c:
            status = c.get(f"/user/{user}/api/status")
            assert status.status_code == 200, status.text
            assert "started" in status.json()
        jobs = jobs_of(user)
        assert len(jobs) == 1 and "RUNNING" in jobs[0] and f"factoryhub-server-{user}" in jobs[0]
        job_id = jobs[0].split()[0]
        out = run_in_kernel(
            hub,
            user,
            "import getpass, os; print(getpass.getuser(), os.environ.get('SLURM_JOB_ID'))",
        )
        assert out.split() == [user, job_id]
    # the server listens only on the address the hub reaches it by
    with hub.client() as c:
        server = c.get(f"/hub/api/users/{users[0]}").json()["servers"][""]
    assert "127.0.0.1" in server["url"] or server["url"].startswith("/user/")
    for user in users:
        hub.stop_server(user)
        wait_no_jobs([user])


def test_a_user_cannot_reach_another_users_server(hub: RunningHub, unix_users: Any) -> None:
    owner, other = unix_users(2)
    assert hub.spawn(owner).status_code in (201, 202)
    hub.wait_ready(owner)
    try:
        hub.ensure_user(other)
        with hub.client() as c:
            r = c.post(f"/hub/api/users/{other}/tokens", json={"note": "isolation test"})
            assert r.status_code == 201, r.text
            other_token = r.json()["token"]
        with httpx.Client(base_url=hub.url, headers={"Authorization": f"token {other_token}"}) as c:
            r = c.get(f"/user/{owner}/api/status", follow_redirects=False)
            assert r.status_code in (302, 403), r.status_code
            r = c.post(f"/user/{owner}/api/kernels", follow_redirects=False)
            assert r.status_code in (302, 403), r.status_code
    finally:
        hub.stop_server(owner)
    wait_no_jobs([owner])


INJECTIONS = [
    {"walltime": "01:00:00\n#SBATCH --uid=0"},
    {"walltime": "$(touch /tmp/pwned)"},
    {"profile": "cpu-small; id"},
    {"memory_gb": "2\n#SBATCH --mem=900G"},
    {"memory_gb": "999"},
    {"walltime": "99:00:00"},
    {"req_options": "--uid=0"},
    {"profile": "gpu-1"},  # not in the user's groups
]


@pytest.mark.parametrize(
    "options", INJECTIONS, ids=[next(iter(o)) + str(i) for i, o in enumerate(INJECTIONS)]
)
def test_refused_values_submit_no_job(
    hub: RunningHub, unix_users: Any, options: dict[str, str]
) -> None:
    (user,) = unix_users(1)
    r = hub.spawn(user, options)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert any(
        word in message for word in ("Walltime", "Memory", "Resource profile", "unknown option")
    ), message
    assert jobs_of(user) == []
    with hub.client() as c:
        assert c.get(f"/hub/api/users/{user}").json()["servers"] == {}


def test_spawn_while_slurm_is_down_fails_clearly_and_leaves_no_job(
    hub: RunningHub, unix_users: Any, slurm_outage: Any
) -> None:
    (user,) = unix_users(1)
    slurm_outage.stop()
    started = time.monotonic()
    r = hub.spawn(user)
    # the spawn fails fast enough to be answered, or goes on in the background and fails
    deadline = time.monotonic() + 120
    with hub.client() as c:
        while time.monotonic() < deadline:
            model = c.get(f"/hub/api/users/{user}").json()
            if not model["pending"]:
                break
            time.sleep(0.5)
        assert not model["servers"], model
    # sbatch gives up within seconds, so the API answers with the reason itself
    assert r.status_code == 503, r.text
    assert "did not answer" in r.json()["message"]
    assert "Try again in a few minutes" in r.json()["message"]
    slurm_outage.start()
    # whatever sbatch may have created while the controller was down is cancelled
    time.sleep(2)
    wait_no_jobs([user], timeout=60)
    assert time.monotonic() - started < 240


def test_servers_survive_a_hub_restart(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user)
    before = jobs_of(user)
    hub.stop()
    hub.start()
    with hub.client() as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = c.get(f"/user/{user}/api/status")
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
    assert jobs_of(user) == before
    hub.stop_server(user)
    wait_no_jobs([user])


def set_partition(name: str, state: str) -> None:
    subprocess.run(["scontrol", "update", f"PartitionName={name}", f"State={state}"], check=True)


def test_progress_tells_the_queue_reason_then_the_node(hub: RunningHub, unix_users: Any) -> None:
    """A job held in the queue shows why in plain words, then where it runs."""
    (user,) = unix_users(1)
    hub.ensure_user(user)
    events: list[dict[str, Any]] = []
    set_partition("interactive", "DOWN")
    try:
        with ThreadPoolExecutor(1) as pool:
            posted = pool.submit(hub.spawn, user, {"profile": "cpu-small"})
            with hub.client(timeout=120) as c:
                deadline = time.monotonic() + 30
                while not c.get(f"/hub/api/users/{user}").json()["pending"]:
                    assert time.monotonic() < deadline, "spawn never became pending"
                    time.sleep(0.1)
                with c.stream("GET", f"/hub/api/users/{user}/server/progress") as stream:
                    for line in stream.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        events.append(json.loads(line[5:]))
                        if "queued" in events[-1].get("message", ""):
                            set_partition("interactive", "UP")
                        if events[-1].get("ready") or events[-1].get("failed"):
                            break
            assert posted.result().status_code in (201, 202)
    finally:
        set_partition("interactive", "UP")
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("ready"), messages
    assert any(
        re.search(r"Job \d+ is queued .*partition is down \(PartitionDown\)", m) for m in messages
    ), messages
    node = local_slurm.nodename()
    assert any(re.search(rf"Job \d+ is running on {node}", m) for m in messages), messages
    hub.stop_server(user)
    wait_no_jobs([user])


def test_slurm_outage_keeps_running_servers(
    hub: RunningHub, unix_users: Any, slurm_outage: Any
) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user)
    before = jobs_of(user)
    slurm_outage.stop()
    try:
        # a poll while Slurm is silent: the hub must not take the server as dead
        with hub.client() as c:
            r = c.post(f"/hub/api/users/{user}/server", json={})
            assert r.status_code == 400 and "already running" in r.text, r.text
            assert c.get(f"/hub/api/users/{user}").json()["servers"][""]["ready"]
            assert c.get(f"/user/{user}/api/status").status_code == 200
    finally:
        slurm_outage.start()
    assert jobs_of(user) == before
    hub.stop_server(user)
    wait_no_jobs([user])


def test_servers_survive_a_hub_crash(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user)
    before = jobs_of(user)
    hub.kill_hub_only()  # SIGKILL: no cleanup at all; the proxy keeps running
    hub.start()
    with hub.client() as c:
        r = c.get(f"/user/{user}/api/status")
        assert r.status_code == 200, r.text
    assert jobs_of(user) == before
    hub.stop_server(user)
    wait_no_jobs([user])
