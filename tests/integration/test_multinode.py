"""A real multi-node Slurm (issue 20): compute nodes in podman containers
(``factoryhub.local.multinode``, images/node), slurmctld and the hub on this host. What a
factory's users do across nodes, as they do it: a server on a compute node reached through
the proxy, Dask workers on other nodes, a 2-node training, a node that dies, a full cluster.

The hub runs as root in the "local" access mode against the cluster by ``SLURM_CONF``; its
API listens on the cluster network's gateway (the nodes call it there), its proxy on
loopback. The test's own users are ``fhmn1``... (the cluster keeps no accounting).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from factoryhub.local import kube_podman, multinode
from factoryhub.local import slurm as local_slurm
from tests.support.hub import RunningHub, local_signin, site_for
from tests.support.kernel import kernel, run_in_kernel
from tests.support.waiting import ProgressFollower, squeue_jobs, wait_no_jobs, wait_until

from .test_form import signed_in
from .test_home_page import job_card
from .test_templates import read_in_home, run_template

pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.images]

CLUSTER = multinode.Cluster()
PORTS = (18600, 18681, 18601)  # public (loopback), hub API (the gateway), proxy API
USERS = ("fhmn1", "fhmn2", "fhmn3", "fhmn4")
PASSWORD = "fhmn-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def cluster(slurm: Any) -> Iterator[multinode.Cluster]:
    """The cluster up, the test users in it; ``SLURM_CONF`` names it for this module (the
    Slurm commands of the tests and of the hub they start)."""
    image = multinode.node_image()
    for user in USERS:
        local_slurm.create_unix_user(user, PASSWORD, groups=("factoryhub",))  # may sign in
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


SCALE_FOUR = """
import json, socket
from dask_jobqueue import SLURMCluster
from distributed import Client
cluster = SLURMCluster()
client = Client(cluster)
cluster.scale(4)
client.wait_for_workers(4, timeout=150)
hosts = client.run(socket.gethostname)
print(json.dumps({"hosts": sorted(hosts.values()), "sum": client.submit(sum, range(100)).result(),
                  "scheduler": cluster.scheduler_address}))
"""


def _dask_jobs(user: str) -> list[str]:
    return [f"{j.job_id}:{j.state}" for j in squeue_jobs([user]) if "-dask-" in j.name]


def test_dask_workers_spread_over_nodes_and_end_with_the_server(hub: RunningHub) -> None:
    """SLURMCluster() with no arguments in a server on one node; scale(4) puts workers on
    other nodes too (2 cores a node), which reach the scheduler on the server's node."""
    user = USERS[1]
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user, timeout=120)
    (server,) = squeue_jobs([user])
    try:
        with kernel(hub, user) as k:
            said = json.loads(k.execute(SCALE_FOUR, timeout=200).strip().splitlines()[-1])
            assert said["sum"] == 4950
            assert len(said["hosts"]) == 4 and len(set(said["hosts"])) >= 2, said
            assert CLUSTER.node(server.nodes).address in said["scheduler"], said
            assert len(_dask_jobs(user)) == 4
            hub.stop_server(user)  # with the cluster still up in the kernel
    finally:
        hub.stop_server(user, missing_ok=True)
    wait_until(lambda: not _dask_jobs(user), 30, lambda: f"worker jobs left: {_dask_jobs(user)}")
    wait_no_jobs([user])


def _node_state(name: str) -> str:
    return multinode.node_states(CLUSTER).get(name, "").lower()


def test_a_node_that_dies_ends_its_server_with_the_reason(hub: RunningHub) -> None:
    """podman kill a compute node under a running server: Slurm fails its job (NODE_FAIL),
    the hub ends the server and the home page says why; back in service, nothing is left."""
    user = USERS[2]
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user, timeout=120)
    (job,) = squeue_jobs([user])
    node = CLUSTER.node(job.nodes)
    kube_podman.podman("kill", node.container)
    try:
        with hub.client() as c:

            def ended() -> bool:
                model = c.get(f"/hub/api/users/{user}").json()
                return not model.get("servers") and not model.get("pending")

            wait_until(ended, 180, lambda: f"the hub still has the server of {user}")
        client = signed_in(hub, user, PASSWORD)
        try:
            card = job_card(client.get("/hub/home").text)
        finally:
            client.close()
        assert f"job {job.job_id} was ended because its node failed" in card, card
    finally:
        kube_podman.podman("start", node.container)

    def back() -> bool:
        state = _node_state(node.name)
        if "down" in state or "drain" in state:
            multinode.slurm(CLUSTER, "scontrol", "update", f"nodename={node.name}", "state=resume")
        return state == "idle"

    wait_until(back, 120, lambda: f"{node.name} is not back in service: {_node_state(node.name)}")
    assert not squeue_jobs([user]), squeue_jobs([user])  # no orphan


def test_a_spawn_on_a_full_cluster_says_why_it_waits_and_starts_when_a_node_frees(
    hub: RunningHub,
) -> None:
    user, filler = USERS[3], USERS[0]
    wait_until(
        lambda: {_node_state(n.name) for n in CLUSTER.nodes} == {"idle"},
        60, lambda: f"nodes not idle: {multinode.node_states(CLUSTER)}")  # fmt: skip
    blocker = multinode.slurm(
        CLUSTER, "runuser", "-u", filler, "--", "sbatch", "--parsable", "--exclusive",
        f"--nodes={CLUSTER.size}", "--time=3", "--output=/dev/null", "--wrap", "sleep 600",
    )  # fmt: skip
    assert blocker.returncode == 0, blocker.stderr
    blocker_id = blocker.stdout.strip()
    try:
        wait_until(
            lambda: [j.state for j in squeue_jobs([filler])] == ["RUNNING"],
            60, lambda: f"the filler job does not run: {squeue_jobs([filler])}")  # fmt: skip
        with ProgressFollower(hub.url, hub.token, user) as progress:
            assert hub.spawn(user).status_code == 202
            waiting = wait_until(
                lambda: next((e["message"] for e in progress.events
                              if "Slurm expects it to start at" in e.get("message", "")), None),
                60, progress.describe)  # fmt: skip
            assert "(Resources)" in waiting or "(Priority)" in waiting, waiting
            (queued,) = squeue_jobs([user])
            assert queued.pending
            multinode.slurm(CLUSTER, "scancel", blocker_id)  # a node frees
            hub.wait_ready(user, timeout=120)
    finally:
        multinode.slurm(CLUSTER, "scancel", blocker_id)
        hub.stop_server(user, missing_ok=True)
    print(f"queued: {waiting}")


MONITOR_ROWS = """
import json
from factoryhub.helpers import slurm_jobs
from factoryhub.helpers.job_monitor import describe
print(json.dumps([describe(j) for j in slurm_jobs.my_jobs()]))
"""


def test_a_two_node_training_learns_and_checkpoints_once(hub: RunningHub) -> None:
    """train-batch with nodes=2 (2 processes a node on the CPU): srun + torchrun's rendezvous
    across the nodes, the loss falls, rank 0 alone writes the checkpoint, and the job monitor
    (in a second kernel, while it runs) shows both nodes."""
    user = USERS[0]
    assert hub.spawn(user).status_code in (201, 202)
    hub.wait_ready(user, timeout=120)
    out = "~/factoryhub-runs/two-nodes"
    params = {"nodes": 2, "procs_per_node_cpu": 2, "cpus_per_node": 2, "memory_gb": 1,
              "steps": 150, "out_dir": out}  # fmt: skip
    ran: dict[str, Any] = {}
    try:
        with kernel(hub, user) as k, kernel(hub, user) as watcher:
            k.execute(f"import shutil, os; shutil.rmtree(os.path.expanduser({out!r}), True)")
            trainer = threading.Thread(
                target=lambda: ran.update(run_template(k, "training/train-batch.ipynb", params))
            )
            trainer.start()

            def training_row() -> list[str] | None:
                rows = json.loads(watcher.execute(MONITOR_ROWS).strip().splitlines()[-1])
                running = [r for r in rows if r[1] == "training" and r[3] == "RUNNING"]
                return running[0] if running else None

            cells = wait_until(training_row, 120, lambda: "no training job runs", longest=0.5)
            trainer.join(600)
            home = k.execute("import os; print(os.path.expanduser('~'))").strip()
            done = read_in_home(k, f"{home}/factoryhub-runs/two-nodes/done.json")
            files = k.execute(
                f"import os; print(sorted(os.listdir({home!r} + '/factoryhub-runs/two-nodes')))"
            )
    finally:
        hub.stop_server(user)
    s = ran["summary"]
    assert s["state"] == "COMPLETED", s
    assert s["last_loss"] < s["first_loss"] - 0.5, s
    assert done["world_size"] == 4 and done["status"] == "completed", done
    assert files.count("checkpoint") == 1 and "checkpoint.pt" in files, files  # rank 0's
    nodes = multinode.slurm(CLUSTER, "scontrol", "show", "hostnames", cells[4]).stdout.split()
    assert len(nodes) == 2 and set(nodes) <= {n.name for n in CLUSTER.nodes}, cells
