"""Dask on Slurm, measured from inside a real user server. Prints JSON.

1. ``scale``: a fresh ``SLURMCluster()`` (no arguments: the factory's configuration),
   time from ``cluster.scale(2)`` to two workers connected; ``--runs`` times.
   Target: p50 <= 2 s.
2. ``throughput``: the text-corpus pipeline on one generated corpus (same seed, same
   filters): plain pandas in the kernel (``corpus.run_pipeline``: generate, filter,
   deduplicate, tokenize, write one shard), then the data-prep template itself under
   papermill with 1 and with 2 Slurm workers (its own timing: from workers ready to the
   manifest written). ``--repeats`` each, the best kept; documents per second and the
   parallel efficiency of 2 workers against 1.

Everything runs through the real hub and the real local Slurm: a factoryhub hub is
started on its own ports, a user's server is spawned, and the code runs in a kernel of
that server (so ``SLURMCluster()`` reads the configuration the server was started with).

    /opt/factoryhub/venv/bin/python -m benchmarks.dask_scale [--runs 20] [--documents 20000]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from typing import Any

from benchmarks import cli
from benchmarks.hubs import (
    cancel_jobs,
    ensure_unix_user,
    factoryhub_hub,
    measure_spawn,
    stop_server,
)
from tests.support.hub import PROXY_PATH
from tests.support.kernel import Kernel, kernel

USER = "fhbench-dask"
PROFILE = "cpu-small"
TARGET_P50_S = 2.0
PHASES = ("scale", "throughput")

SCALE_CODE = """
import json, time
from dask_jobqueue import SLURMCluster
from distributed import Client
samples = []
for _ in range({runs}):
    cluster = SLURMCluster()
    client = Client(cluster)
    begun = time.monotonic()
    cluster.scale(2)
    client.wait_for_workers(2, timeout=120)
    samples.append(time.monotonic() - begun)
    client.close()
    cluster.close()
print(json.dumps(samples))
"""

THROUGHPUT_CODE = """
import json, pathlib, subprocess, sys, tempfile, time
from factoryhub.helpers import corpus

n, repeats = {documents}, {repeats}
languages, foreign = ["en", "de", "fr", "es", "it", "nl"], ["pl"]  # the template's defaults
result = {{"documents": n}}

def pandas_once():
    begun = time.perf_counter()
    docs, _ = corpus.generate_corpus(n, seed=42, languages=languages, foreign=foreign)
    kept, _ = corpus.run_pipeline(docs, threshold=0.75)
    corpus.write_shard(kept, pathlib.Path(tempfile.mkdtemp()), 0)
    return time.perf_counter() - begun, len(kept)

result["pandas"] = min(pandas_once() for _ in range(repeats))

home = pathlib.Path.home()
notebook = home / "factoryhub-templates" / "data-prep" / "text-corpus.ipynb"
for workers in (1, 2):
    runs = []
    for _ in range(repeats):
        summary = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
        params = dict(n_docs=n, n_partitions={partitions}, n_workers=workers,
                      cluster_kind="slurm", summary_path=str(summary),
                      output_dir=str(home / "factoryhub-data" / "bench-corpus"))
        done = subprocess.run(
            [sys.executable, "-m", "papermill", str(notebook), "/dev/null", "-k", "python3",
             "-y", json.dumps(params)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        s = json.loads(summary.read_text())
        runs.append((s["seconds"], s["documents_out"]))
    result[f"dask_{{workers}}"] = min(runs)
print(json.dumps(result))
"""


log = cli.logger("dask_scale")


def throughput_figures(raw: dict[str, Any]) -> dict[str, Any]:
    n = raw["documents"]
    out: dict[str, Any] = {"documents": n}
    for name in ("pandas", "dask_1", "dask_2"):
        seconds, kept = raw[name]
        out[name] = {
            "seconds": round(seconds, 3),
            "documents_per_s": round(n / seconds, 1),
            "documents_kept": kept,
        }
    one, two = out["dask_1"]["seconds"], out["dask_2"]["seconds"]
    out["speedup_2_vs_1"] = round(one / two, 3)
    out["parallel_efficiency_2"] = round(one / (2 * two), 3)
    out["dask_1_vs_pandas"] = round(out["pandas"]["seconds"] / one, 3)
    kept = {out[k]["documents_kept"] for k in ("pandas", "dask_1", "dask_2")}
    out["same_result"] = len(kept) == 1
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(__doc__, prog="python -m benchmarks.dask_scale")
    parser.add_argument("--runs", type=int, default=20, help="scale(2) measurements")
    parser.add_argument("--documents", type=int, default=20000, help="corpus size")
    parser.add_argument("--partitions", type=int, default=8, help="Dask partitions (shards)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--only", default="scale,throughput", help="subset of scale,throughput")
    args = parser.parse_args(argv)
    args.only = cli.subset(parser, "--only", args.only, PHASES)
    return args


def measure(kernel: Kernel, args: argparse.Namespace) -> dict[str, Any]:
    """The phases, in a kernel of the benchmark user's server."""
    out: dict[str, Any] = {}
    if "scale" in args.only:
        log(f"scale(2) x {args.runs}")
        code = SCALE_CODE.format(runs=args.runs)
        samples = json.loads(kernel.execute(code, timeout=600).splitlines()[-1])
        scale = out["scale_to_2_workers"] = cli.summarize(samples)
        scale["target_p50_s"] = TARGET_P50_S
        scale["met"] = scale["p50_s"] <= TARGET_P50_S
    if "throughput" in args.only:
        log(f"corpus pipeline on {args.documents} documents")
        code = THROUGHPUT_CODE.format(
            documents=args.documents, partitions=args.partitions, repeats=args.repeats
        )
        raw = json.loads(kernel.execute(code, timeout=1800).splitlines()[-1])
        out["corpus_throughput"] = throughput_figures(raw)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_unix_user(USER)
    cancel_jobs(USER)
    state = cli.private_state("fhbench-dask-")
    hub = factoryhub_hub(state, cli.new_token())
    try:
        hub.start()
        hub.ensure_user(USER)
        spawn = measure_spawn(hub, USER, {"profile": PROFILE})
        log(f"server of {USER} ready in {spawn:.2f} s")
        with kernel(hub, USER) as k:
            out = measure(k, args)
        stop_server(hub, USER)
    finally:
        hub.stop()
        cancel_jobs(USER)
        shutil.rmtree(state, ignore_errors=True)
    out["metadata"] = cli.metadata(
        profile=PROFILE,
        runs=args.runs,
        documents=args.documents,
        partitions=args.partitions,
        repeats=args.repeats,
        versions=cli.versions(),
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_as_root("dask_scale", run, parse_args(argv), [PROXY_PATH])


if __name__ == "__main__":
    raise SystemExit(main())
