"""Multi-node: spawns on remote compute nodes, Dask across nodes, 2-node training scaling.

Run as root on a machine with the local factory's Slurm (for munge) and podman::

    /opt/factoryhub/venv/bin/python benchmarks/multinode.py [--runs N] [--json-out PATH]

It brings up the multi-node test cluster (``factoryhub.local.multinode``: compute nodes in
podman containers) and a factoryhub hub on it, then measures, side by side in one run:

- ``spawn``: ``bare`` = ``jupyter lab`` started directly on a compute node (``podman exec``
  as the user; from the start to the first 200 of ``/api/status`` from this host) against
  ``factoryhub`` = a spawn through the hub onto a compute node (from the spawn POST to the
  first 200 through the proxy), round-robin, after one warm-up of each.
- ``dask_scale4``: ``SLURMCluster()`` in a server, seconds from ``scale(4)`` until four
  workers (on at least two nodes) have joined.
- ``training``: the train-batch job (CPU, 2 processes a node, the tiny model) on 1 node and
  on 2 nodes; tokens/s of each and the scaling efficiency, tokens/s(2) / (2 x tokens/s(1)).

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks import cli
from benchmarks.hubs import (
    POLL_S,
    ensure_unix_user,
    factoryhub_hub,
    is_server_status,
    measure_spawn,
    stop_server,
)
from factoryhub.local import kube_podman, multinode
from tests.support.kernel import kernel
from tests.support.waiting import squeue_jobs, wait_until

log = cli.logger("multinode")
USER = "fhbench-mn"
BARE_PORT = 28300
CLUSTER = multinode.Cluster()

DASK = """
import json, socket, time
from dask_jobqueue import SLURMCluster
from distributed import Client
cluster = SLURMCluster(); client = Client(cluster)
begun = time.monotonic()
cluster.scale(4); client.wait_for_workers(4, timeout=300)
took = time.monotonic() - begun
hosts = sorted(set(client.run(socket.gethostname).values()))
client.close(); cluster.close()
print(json.dumps({"seconds": took, "hosts": hosts}))
"""

TRAIN = """
import json, os, shutil
from factoryhub.helpers.train_job import TrainJob, TrainJobRequest
out = os.path.expanduser("~/factoryhub-runs/bench-{nodes}")
shutil.rmtree(out, ignore_errors=True)
request = TrainJobRequest(out_dir=out, data="", nodes={nodes}, gpus_per_node=0,
    procs_per_node_cpu=2, cpus_per_node=2, memory_gb=1, partition="batch",
    walltime="00:20:00", account="", model_size="tiny", steps={steps}, batch_size=16,
    learning_rate=3e-3).validated()
job = TrainJob.submit(request)
state = job.wait(timeout=1200, every=2.0)
rates = [m["tokens_per_s"] for m in job.metrics() if "tokens_per_s" in m]
print(json.dumps({{"state": state, "tokens_per_s": rates[len(rates) // 2:]}}))
"""


def measure_bare(node: multinode.Node, token: str) -> float:
    """``jupyter lab`` as USER on ``node``; seconds until /api/status answers from here."""
    home = pwd.getpwnam(USER).pw_dir
    argv = [
        "podman", "exec", "--user", USER, "--workdir", home, "--env", f"HOME={home}",
        node.container, f"{multinode.VENV}/bin/jupyter", "lab", "--no-browser",
        f"--ip={node.address}", f"--port={BARE_PORT}", f"--IdentityProvider.token={token}",
    ]  # fmt: skip
    url = f"http://{node.address}:{BARE_PORT}/api/status"
    with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=5) as client:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answered() -> float | None:
            with contextlib.suppress(httpx.HTTPError):
                if is_server_status(client.get(url)):
                    return time.perf_counter() - start
            return None

        try:
            return wait_until(answered, 120, lambda: "bare jupyter lab did not answer",
                              first=POLL_S, longest=POLL_S)  # fmt: skip
        finally:
            kube_podman.podman(
                "exec", node.container, "pkill", "-u", USER, "-f", "jupyter-lab", check=False
            )
            proc.wait(10)


def spawns(hub: Any, runs: int) -> dict[str, list[float]]:
    node = CLUSTER.nodes[0]  # where Slurm puts a lone server (first fit), as the hub does
    samples: dict[str, list[float]] = {"bare": [], "factoryhub": []}
    for i in range(runs + 1):  # the first of each is a warm-up
        bare = measure_bare(node, secrets.token_hex(16))
        spawned = measure_spawn(hub, USER, {})
        (job,) = squeue_jobs([USER])
        assert job.nodes in {n.name for n in CLUSTER.nodes}, job
        stop_server(hub, USER)
        if i:
            samples["bare"].append(bare)
            samples["factoryhub"].append(spawned)
        log(f"spawn {i}: bare {bare:.2f} s, factoryhub {spawned:.2f} s (on {job.nodes})")
    return samples


def in_a_server(hub: Any, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"dask_scale4_s": [], "dask_hosts": []}
    measure_spawn(hub, USER, {})
    try:
        with kernel(hub, USER) as k:
            for i in range(runs):
                said = json.loads(k.execute(DASK, timeout=400).strip().splitlines()[-1])
                out["dask_scale4_s"].append(said["seconds"])
                out["dask_hosts"].append(len(said["hosts"]))
                log(f"dask {i}: {said['seconds']:.2f} s on {said['hosts']}")
            for nodes in (1, 2):
                code = TRAIN.format(nodes=nodes, steps=300)
                said = json.loads(k.execute(code, timeout=1300).strip().splitlines()[-1])
                assert said["state"] == "COMPLETED", said
                out[f"train_{nodes}_node_tokens_per_s"] = said["tokens_per_s"]
                log(f"training on {nodes} node(s): {said}")
    finally:
        stop_server(hub, USER)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_unix_user(USER)
    state = cli.private_state("fhbench-multinode-")
    multinode.up(CLUSTER, multinode.node_image())
    os.environ.update(CLUSTER.env)

    def on_the_cluster(site: dict[str, Any]) -> None:
        site["hub"]["api_url"] = (
            f"http://{CLUSTER.gateway}:{site['hub']['api_url'].rsplit(':', 1)[1]}"
        )
        site["dask"]["interface"] = ""

    hub = factoryhub_hub(state, cli.new_token(), on_the_cluster)
    hub.start()
    hub.ensure_user(USER)
    try:
        samples = spawns(hub, args.runs)
        server = in_a_server(hub, args.dask_runs)
    finally:
        hub.stop()
        multinode.down(CLUSTER)
    one = cli.summarize(server["train_1_node_tokens_per_s"], suffix="", digits=0)
    two = cli.summarize(server["train_2_node_tokens_per_s"], suffix="", digits=0)
    return {
        **cli.metadata(nodes=len(CLUSTER.nodes), cpus_per_node=CLUSTER.cpus),
        "spawn": {name: cli.summarize(s) for name, s in samples.items()},
        "dask_scale4": {**cli.summarize(server["dask_scale4_s"]), "hosts": server["dask_hosts"]},
        "training_tokens_per_s": {"1_node": one["p50"], "2_nodes": two["p50"]},
        "training_scaling_efficiency": round(two["p50"] / (2 * one["p50"]), 3),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="measured spawns of each kind")
    parser.add_argument("--dask-runs", type=int, default=3, help="measured scale(4) calls")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_as_root("multinode", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
