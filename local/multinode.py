"""A multi-node Slurm for the tests and for trying: compute nodes in podman containers.

``make cluster-up`` / ``cluster-down``, and ``tests/integration/test_multinode.py``. The
cluster (:class:`Cluster`, ClusterName ``fhmulti``) has its own slurmctld on this host, at the
gateway of a podman network made for it (10.89.80.1), and one container of ``images/node`` per
compute node (``fhnode1`` at .11, ``fhnode2`` at .12, ...), each running munged with the local
factory's munge key and ``slurmd``. Every node mounts, as a real cluster's nodes mount
shared file systems, the users' Python environment ``/opt/factoryhub/venv`` (read-only),
their homes (``/home``), the cluster's ``slurm.conf`` and this host's ``/etc/passwd`` and
``/etc/group`` (one uid per person everywhere). It keeps no accounting: registered in the
local factory's slurmdbd it would be a second cluster there, and every association added
without a cluster's name would then have to exist on both.

The single-node factory of ``make up`` is left as it is: the hub and the tools use this
cluster by ``SLURM_CONF`` (:attr:`Cluster.conf`). Only this network's addresses and loopback
are used.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from factoryhub.local import kube_podman, pids
from factoryhub.local.slurm_layout import nodename

NODE_IMAGE = "localhost/factoryhub-node"
MUNGE_KEY = Path("/etc/munge/munge.key")
VENV = Path("/opt/factoryhub/venv")


class ClusterError(RuntimeError):
    """The cluster did not come up (or down); the message says where it stopped."""


@dataclass(frozen=True)
class Node:
    name: str
    address: str

    @property
    def container(self) -> str:
        return f"factoryhub-{self.name}"


@dataclass(frozen=True)
class Cluster:
    name: str = "fhmulti"
    network: str = "factoryhub-multi"
    subnet: str = "10.89.80.0/24"
    size: int = 3
    cpus: int = 2
    real_memory: int = 4096  # MB per node (Slurm's figure: the nodes share this host's memory)
    ctld_port: int = 6917
    slurmd_timeout: int = 20
    state_dir: Path = pids.STATE_ROOT / "multinode"

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def nodes(self) -> list[Node]:
        net = ipaddress.ip_network(self.subnet)
        return [Node(f"fhnode{i}", str(net[10 + i])) for i in range(1, self.size + 1)]

    @property
    def conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands on this host need to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def render_conf(cluster: Cluster) -> str:
    from factoryhub.local.slurm import _template

    return _template("multinode-slurm.conf.j2").render(
        generator="factoryhub.local.multinode",
        cluster=cluster.name,
        network=cluster.network,
        gateway=cluster.gateway,
        hostname=nodename(),
        ctld_port=cluster.ctld_port,
        slurmd_timeout=cluster.slurmd_timeout,
        state_dir=cluster.state_dir / "state",
        run_dir=cluster.state_dir / "run",
        log_dir=cluster.state_dir / "log",
        nodes=cluster.nodes,
        node_names=",".join(n.name for n in cluster.nodes),
        cpus=cluster.cpus,
        real_memory=cluster.real_memory,
    )


def _folders(cluster: Cluster) -> None:
    slurm = pwd.getpwnam("slurm")
    cluster.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    (cluster.state_dir / "etc").mkdir(mode=0o755, exist_ok=True)
    for sub in ("state", "run", "log"):
        folder = cluster.state_dir / sub
        folder.mkdir(mode=0o750, exist_ok=True)
        os.chown(folder, slurm.pw_uid, slurm.pw_gid)
    text = render_conf(cluster)
    if not cluster.conf.is_file() or cluster.conf.read_text() != text:
        cluster.conf.write_text(text)
    cluster.conf.chmod(0o644)  # every user's sbatch reads it


def _node_up(cluster: Cluster, node: Node, image: str) -> None:
    found = kube_podman.podman("container", "inspect", node.container, check=False)
    if found.returncode == 0:
        kube_podman.podman("start", node.container)
        return
    mounts = [
        f"{VENV}:{VENV}:ro",
        "/home:/home",
        f"{cluster.conf}:/etc/slurm/slurm.conf:ro",
        f"{MUNGE_KEY}:/etc/munge/munge.key:ro",
        "/etc/passwd:/etc/passwd:ro",
        "/etc/group:/etc/group:ro",
    ]
    # every node knows the others by name (a cluster's DNS): torchrun's rendezvous host is
    # the first node's name
    hosts = [f"{n.name}:{n.address}" for n in cluster.nodes if n != node]
    kube_podman.podman(
        "run", "-d", "--name", node.container, "--hostname", node.name,
        "--network", cluster.network, "--ip", node.address,
        "--env", f"FACTORYHUB_NODE={node.name}",
        *[arg for m in mounts for arg in ("--volume", m)],
        *[arg for h in hosts for arg in ("--add-host", h)],
        image,
    )  # fmt: skip


def _ctld_pid(cluster: Cluster) -> int | None:
    pid = pids.read_pidfile(cluster.state_dir / "run" / "slurmctld.pid")
    return pid if pids.alive(pid, comm="slurmctld") else None


def _ctld_up(cluster: Cluster) -> int:
    pid = _ctld_pid(cluster)
    if pid is not None:
        return pid
    done = subprocess.run(
        # -c: a test cluster starts empty, without the jobs of its last run
        ["/usr/sbin/slurmctld", "-c", "-f", str(cluster.conf)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    log = cluster.state_dir / "log" / "slurmctld.log"
    if done.returncode != 0:
        raise ClusterError(f"slurmctld did not start: {done.stdout}{done.stderr}\n{pids.tail(log)}")
    deadline = time.monotonic() + 30
    while (pid := _ctld_pid(cluster)) is None:
        if time.monotonic() > deadline:
            raise ClusterError(f"slurmctld of {cluster.name} did not come up:\n{pids.tail(log)}")
        time.sleep(0.2)
    return pid


def slurm(cluster: Cluster, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A Slurm command of this host, on ``cluster``."""
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C.UTF-8", **cluster.env}
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def node_states(cluster: Cluster) -> dict[str, str]:
    """Node name -> its state as ``sinfo --json`` says; {} while slurmctld does not answer."""
    import json

    done = slurm(cluster, "sinfo", "--json", timeout=15)
    if done.returncode != 0:
        return {}
    return {
        n["name"]: "+".join([n["state"], *n.get("state_flags", [])])
        for n in json.loads(done.stdout).get("nodes", [])
    }


def up(cluster: Cluster, image: str, timeout: float = 90) -> list[str]:
    """Network, node containers, slurmctld; waits until every node is idle. What started."""
    kube_podman.ensure_network(cluster.network, cluster.subnet, cluster.gateway)
    _folders(cluster)
    for node in cluster.nodes:
        _node_up(cluster, node, image)
    started = [n.name for n in cluster.nodes]
    started.append(f"slurmctld {_ctld_up(cluster)}")
    deadline = time.monotonic() + timeout
    while True:
        states = node_states(cluster)
        if states and all(states.get(n.name, "").lower() == "idle" for n in cluster.nodes):
            return started
        if time.monotonic() > deadline:
            raise ClusterError(f"the nodes of {cluster.name} are not idle: {states or 'no answer'}")
        time.sleep(0.5)


def down(cluster: Cluster) -> list[str]:
    """Stop slurmctld and remove the node containers and the network."""
    gone = []
    pid = _ctld_pid(cluster)
    if pid is not None:
        pids.terminate(pid, timeout=15)
        gone.append("slurmctld")
    for node in cluster.nodes:
        if kube_podman.podman("rm", "-f", "-t", "5", node.container, check=False).returncode == 0:
            gone.append(node.name)
    if kube_podman.podman("network", "rm", "-f", cluster.network, check=False).returncode == 0:
        gone.append(f"network {cluster.network}")
    return gone


def node_image() -> str:
    """The node image of this checkout, built or reused by images/build.py."""
    return kube_podman.built_image("node")


def summary(cluster: Cluster) -> str:
    nodes = ", ".join(f"{n.name} {n.address}" for n in cluster.nodes)
    return f"""
  The cluster {cluster.name} is up: {nodes} (containers factoryhub-fhnodeN)
  Use it:        export SLURM_CONF={cluster.conf}; sinfo; srun -N2 hostname
  A hub on it:   FACTORYHUB_SITE_FILE=... SLURM_CONF={cluster.conf} with hub.api_url on
                 http://{cluster.gateway}:PORT (the nodes call the hub there)
  Kill a node:   podman kill factoryhub-fhnode1   (back: podman start ..., then
                 scontrol update nodename=fhnode1 state=resume)
  Logs:          {cluster.state_dir / "log" / "slurmctld.log"}; a node's:
                 podman exec factoryhub-fhnode1 cat /var/log/slurm/slurmd.log
  Stop:          make cluster-down
"""
