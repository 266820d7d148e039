"""A real multi-node Slurm (issue 20): compute nodes in podman containers
(``factoryhub.local.multinode``, images/node), slurmctld and the hub on this host. What a
factory's users do across nodes, as they do it: a server on a compute node reached through
the proxy, Dask workers on other nodes, a 2-node training, a node that dies, a full cluster.

The hub runs as root in the "local" access mode against the cluster by ``SLURM_CONF``; its
API listens on the cluster network's gateway (the nodes call it there), its proxy on
loopback. The test's own users are ``fhmn1``... (the cluster keeps no accounting).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from factoryhub.local import kube_podman, multinode
from factoryhub.local import slurm as local_slurm
from tests.support.hub import RunningHub, local_signin, site_for
from tests.support.kernel import run_in_kernel
from tests.support.waiting import squeue_jobs, wait_no_jobs

pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.images]

CLUSTER = multinode.Cluster()
PORTS = (18600, 18681, 18601)  # public (loopback), hub API (the gateway), proxy API
USERS = ("fhmn1", "fhmn2")


def _node_image() -> str:
    done = subprocess.run(
        ["python3", str(Path(__file__).resolve().parents[2] / "images" / "build.py"),
         "base", "node"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


@pytest.fixture(scope="module")
def cluster(slurm: Any) -> Iterator[multinode.Cluster]:
    """The cluster up, the test users in it; ``SLURM_CONF`` names it for this module (the
    Slurm commands of the tests and of the hub they start)."""
    image = _node_image()
    for user in USERS:
        local_slurm.create_unix_user(user)
    with pytest.MonkeyPatch.context() as patch:
        try:
            multinode.up(CLUSTER, image)
            patch.setenv("SLURM_CONF", str(CLUSTER.conf))
            yield CLUSTER
        finally:
            for user in USERS:
                multinode.slurm(CLUSTER, "scancel", "-u", user)
            print(f"multinode: stopped {', '.join(multinode.down(CLUSTER))}")


@pytest.fixture(scope="module")
def hub(
    cluster: multinode.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("multinode-hub")
    state.chmod(0o700)
    site = local_signin(site_for(state, PORTS))
    site["hub"]["api_url"] = f"http://{cluster.gateway}:{PORTS[1]}"
    site["dask"]["interface"] = ""  # the interface the server reaches the hub by: eth0
    (state / "factory.yaml").write_text(yaml.safe_dump(site))
    running = RunningHub(
        state_dir=state,
        site_file=state / "factory.yaml",
        token=secrets.token_hex(32),
        log_path=RunningHub.artifacts() / "hub-multinode.log",
        url=f"http://127.0.0.1:{PORTS[0]}",
        name="multinode",
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_server_lands_on_a_compute_node_and_listens_only_there(hub: RunningHub) -> None:
    user = USERS[0]
    r = hub.spawn(user)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(user, timeout=120)
    (job,) = squeue_jobs([user])
    node = CLUSTER.node(job.nodes)  # a compute node, never this host
    assert job.nodes != local_slurm.nodename()
    # it listens on the node's address on the cluster network, and only there
    sockets = kube_podman.podman("exec", node.container, "ss", "-Hltn").stdout
    with hub.client() as c:
        assert c.get(f"/user/{user}/api/status").status_code == 200  # through the proxy
    said = run_in_kernel(
        hub, user, "import getpass, socket; print(getpass.getuser(), socket.gethostname())"
    )
    assert said.split() == [user, node.name], said
    listening = [line.split()[3] for line in sockets.splitlines()]
    jupyter = [a for a in listening if not a.endswith(":6818")]  # slurmd's own
    assert jupyter and all(a.startswith(f"{node.address}:") for a in jupyter), listening
    hub.stop_server(user)
    wait_no_jobs([user])
