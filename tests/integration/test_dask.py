"""Dask on Slurm from a real user server: zero-argument clusters, the dashboard through the
user's own server, the Dask sidebar, and no worker job left behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.hub import RunningHub
from tests.support.kernel import Kernel, kernel

from .idp_fixtures import TEST_PASSWORD
from .oidc_fixtures import TEST_PROJECT, cancel_jobs_of, hub_sign_in

pytestmark = pytest.mark.slurm

USER, OTHER = "fhtest-oidc", "fhtest-oidc-two"  # OTHER is in fhtest-lab too

START_CLUSTER = """
import json, os, time
from dask_jobqueue import SLURMCluster
from distributed import Client
cluster = SLURMCluster()
client = Client(cluster)
begun = time.monotonic()
cluster.scale(2)
client.wait_for_workers(2, timeout=90)
took = time.monotonic() - begun
def where():
    import os
    return [os.getuid(), os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_ACCOUNT")]
print(json.dumps({
    "took": took,
    "link": client.dashboard_link,
    "workers": client.run(where),
    "script": cluster.job_script(),
    "server_job": os.environ["SLURM_JOB_ID"],
    "uid": os.getuid(),
    "sum": client.submit(sum, range(10)).result(),
}))
"""


def squeue_of(user: str) -> list[dict[str, str]]:
    """The user's active jobs, read from ``squeue --json``."""
    from .slurm_fixtures import queue_jobs

    return [
        {"id": str(j["job_id"]), "state": j["job_state"], "name": j["name"],
         "account": j["account"], "comment": j["comment"]}
        for j in queue_jobs(user)
    ]  # fmt: skip


def dask_jobs(user: str, of: str | None = None) -> list[dict[str, str]]:
    """The user's Dask worker jobs that have not been told to end (COMPLETING: cancelled,
    its processes being stopped); with ``of``, only the workers of that server job."""
    return [
        j
        for j in squeue_of(user)
        if j["name"] == f"factoryhub-dask-{user}"
        and j["state"] != "COMPLETING"
        and (of is None or j["comment"].endswith(f"/dask-of/{of}"))
    ]


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    begun = time.monotonic()
    while time.monotonic() - begun < timeout:
        if predicate():
            return time.monotonic() - begun
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s")


def token_of(hub: RunningHub, user: str) -> str:
    with hub.client() as c:
        r = c.post(f"/hub/api/users/{user}/tokens", json={"note": "dask test"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def start_server(hub: RunningHub, user: str) -> str:
    """Sign ``user`` in, start a server in the test project; return the user's token."""
    hub_sign_in(hub, user, TEST_PASSWORD)[0].close()
    token = token_of(hub, user)
    with httpx.Client(
        base_url=hub.url, headers={"Authorization": f"token {token}"}, timeout=60
    ) as c:
        r = c.post(
            f"/hub/api/users/{user}/server",
            json={"project": TEST_PROJECT["name"], "profile": "cpu-small"},
        )
        assert r.status_code in (201, 202), r.text
    hub.wait_ready(user)
    return token


@pytest.fixture(scope="module")
def server(oidc_hub: RunningHub) -> Iterator[tuple[str, Kernel]]:
    """USER's server with a kernel holding a two-worker SLURMCluster()."""
    token = start_server(oidc_hub, USER)
    try:
        with kernel(oidc_hub, USER, token) as k:
            yield token, k
    finally:
        with contextlib.suppress(AssertionError):  # a test may have stopped it already
            oidc_hub.stop_server(USER)
        cancel_jobs_of([USER])


@pytest.fixture(scope="module")
def cluster(server: tuple[str, Kernel]) -> dict[str, Any]:
    _, k = server
    return json.loads(k.execute(START_CLUSTER, timeout=120).strip().splitlines()[-1])


def test_a_zero_argument_cluster_runs_workers_as_slurm_jobs_of_the_user(
    cluster: dict[str, Any],
) -> None:
    assert cluster["sum"] == 45
    workers = list(cluster["workers"].values())
    assert len(workers) == 2
    # the workers run as the user, each in its own Slurm job, under the project's account
    assert {w[0] for w in workers} == {cluster["uid"]}
    assert {w[2] for w in workers} == {TEST_PROJECT["account"]}
    worker_jobs = {w[1] for w in workers}
    assert len(worker_jobs) == 2 and cluster["server_job"] not in worker_jobs
    jobs = dask_jobs(USER, of=cluster["server_job"])
    assert {j["id"] for j in jobs} == worker_jobs
    assert all(j["state"] == "RUNNING" and j["account"] == "fhtest-lab" for j in jobs)
    assert all(j["comment"].endswith(f"/dask-of/{cluster['server_job']}") for j in jobs)
    # what the site file says for this profile, nothing typed by the user
    script = cluster["script"]
    for line in ("#SBATCH -p batch", "#SBATCH -A fhtest-lab", "#SBATCH -t 01:00:00"):
        assert line in script, script
    assert "--interface lo" in script and "--death-timeout 60" in script
    assert f"/home/{USER}/.factoryhub/dask-logs/" in script


def test_worker_logs_land_in_the_users_own_directory(cluster: dict[str, Any]) -> None:
    logs = subprocess.run(
        ["runuser", "-u", USER, "--", "ls", f"/home/{USER}/.factoryhub/dask-logs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for job in {w[1] for w in cluster["workers"].values()}:
        assert any(job in name for name in logs), logs


def test_the_dashboard_opens_through_the_users_server_and_for_nobody_else(
    oidc_hub: RunningHub, server: tuple[str, Kernel], cluster: dict[str, Any]
) -> None:
    token, _ = server
    link = cluster["link"]
    assert link.startswith(f"/user/{USER}/proxy/") and link.endswith("/status"), link
    with httpx.Client(base_url=oidc_hub.url, timeout=30) as c:
        mine = c.get(link, headers={"Authorization": f"token {token}"})
        assert mine.status_code == 200 and "Dask" in mine.text, mine.text[:300]
        plots = c.get(
            link.removesuffix("/status") + "/individual-plots.json",
            headers={"Authorization": f"token {token}"},
        )
        assert plots.status_code == 200 and "Individual Task Stream" in plots.json()
        # not signed in: sent to the login page; another user of the same project: refused
        anonymous = c.get(link, follow_redirects=False)
        assert anonymous.status_code in (302, 303), anonymous.status_code
        assert (
            "/hub/login" in anonymous.headers["location"]
            or "oauth" in anonymous.headers["location"]
        )
        hub_sign_in(oidc_hub, OTHER, TEST_PASSWORD)[0].close()
        other = c.get(link, headers={"Authorization": f"token {token_of(oidc_hub, OTHER)}"})
        assert other.status_code == 403, other.status_code


def test_the_dask_sidebar_finds_the_cluster_and_starts_its_own(
    oidc_hub: RunningHub, server: tuple[str, Kernel], cluster: dict[str, Any]
) -> None:
    token, _ = server
    mine = cluster["server_job"]
    with httpx.Client(
        base_url=f"{oidc_hub.url}/user/{USER}",
        headers={"Authorization": f"token {token}"},
        timeout=120,
    ) as c:
        # the notebook's cluster: the sidebar's check says its dashboard is live
        check = c.get("/dask/dashboard-check/" + quote(cluster["link"], safe=""))
        assert check.status_code == 200, check.text
        answer = check.json()
        assert answer["isActive"] is True, answer
        assert answer["url"].endswith(cluster["link"].removesuffix("/status"))
        assert "Individual Task Stream" in answer["plots"]
        # "New cluster" in the sidebar: a SLURMCluster() from the same configuration
        made = c.put("/dask/clusters")
        assert made.status_code == 200, made.text
        model = made.json()
        try:
            assert model["dashboard_link"].startswith(f"/user/{USER}/proxy/")
            assert [m["id"] for m in c.get("/dask/clusters").json()] == [model["id"]]
            scaled = c.patch(f"/dask/clusters/{model['id']}", json={"workers": 1})
            assert scaled.status_code == 200, scaled.text
            wait_for(lambda: len(dask_jobs(USER, of=mine)) == 3, 60, "the sidebar's worker job")
        finally:
            assert c.delete(f"/dask/clusters/{model['id']}").status_code == 204
        wait_for(lambda: len(dask_jobs(USER, of=mine)) == 2, 30, "the sidebar cluster's cancel")


def test_adapt_starts_workers_when_work_arrives(server: tuple[str, Kernel]) -> None:
    _, k = server
    out = k.execute(
        """
from dask_jobqueue import SLURMCluster
from distributed import Client
adaptive = SLURMCluster()
adaptive.adapt(minimum=0, maximum=1)
with Client(adaptive) as c:
    print(c.submit(lambda x: x + 1, 41).result(timeout=90))
adaptive.close()
""",
        timeout=150,
    )
    assert out.strip().splitlines()[-1] == "42"


def test_worker_jobs_end_with_the_server(
    oidc_hub: RunningHub, server: tuple[str, Kernel], cluster: dict[str, Any]
) -> None:
    """The server stops (the user, the culler): its workers' jobs are cancelled at once."""
    mine = cluster["server_job"]
    assert len(dask_jobs(USER, of=mine)) == 2
    oidc_hub.stop_server(USER)
    took = wait_for(lambda: not dask_jobs(USER, of=mine), 10, "the worker jobs' end")
    assert took < 5, took


def test_worker_jobs_end_when_the_server_job_dies(oidc_hub: RunningHub) -> None:
    """The server's job ends behind the hub's back (walltime, scancel, a node failure):
    the hub's poller cancels the workers within a poll of seeing it."""
    token = start_server(oidc_hub, OTHER)
    try:
        with kernel(oidc_hub, OTHER, token) as k:
            k.execute(
                "from dask_jobqueue import SLURMCluster\nfrom distributed import Client\n"
                "c = SLURMCluster(); cl = Client(c); c.scale(1); cl.wait_for_workers(1, 90)",
                timeout=120,
            )
            assert len(dask_jobs(OTHER)) == 1
            (server_job,) = [
                j["id"] for j in squeue_of(OTHER) if j["name"] == f"factoryhub-server-{OTHER}"
            ]
            subprocess.run(["scancel", server_job], check=True)
            took = wait_for(lambda: not dask_jobs(OTHER), 10, "the worker job's end")
            assert took < 5, took
    finally:
        cancel_jobs_of([OTHER])
