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
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.kernel_client import Kernel
from benchmarks.processes import cancel_jobs, ensure_unix_user, factoryhub_hub, versions

USER = "fhbench-dask"
PROFILE = "cpu-small"
TARGET_P50_S = 2.0

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


def log(message: str) -> None:
    print(f"[dask_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(pct(0.95), 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
        "samples_s": [round(s, 3) for s in samples],
    }


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="scale(2) measurements")
    parser.add_argument("--documents", type=int, default=20000, help="corpus size")
    parser.add_argument("--partitions", type=int, default=8, help="Dask partitions (shards)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--only", default="scale,throughput", help="subset of scale,throughput")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = set(args.only.split(","))
    ensure_unix_user(USER)
    cancel_jobs(USER)
    state = Path(tempfile.mkdtemp(prefix="fhbench-dask-"))
    state.chmod(0o700)
    token = secrets.token_hex(32)
    token_file = state / "admin-api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    hub = factoryhub_hub(state, token_file, token)
    out: dict[str, Any] = {}
    try:
        hub.start()
        hub.ensure_user(USER)
        spawn = hub.measure_spawn(USER, {"profile": PROFILE})
        log(f"server of {USER} ready in {spawn:.2f} s")
        with httpx.Client(
            base_url=hub.url, headers={"Authorization": f"token {token}"}, timeout=600
        ) as client:
            kernel = Kernel(hub.url, USER, client, token)
            try:
                if "scale" in phases:
                    log(f"scale(2) x {args.runs}")
                    code = SCALE_CODE.format(runs=args.runs)
                    samples = json.loads(kernel.execute(code, timeout=600).splitlines()[-1])
                    out["scale_to_2_workers"] = summarize(samples)
                    out["scale_to_2_workers"]["target_p50_s"] = TARGET_P50_S
                    out["scale_to_2_workers"]["met"] = (
                        out["scale_to_2_workers"]["p50_s"] <= TARGET_P50_S
                    )
                if "throughput" in phases:
                    log(f"corpus pipeline on {args.documents} documents")
                    code = THROUGHPUT_CODE.format(
                        documents=args.documents,
                        partitions=args.partitions,
                        repeats=args.repeats,
                    )
                    raw = json.loads(kernel.execute(code, timeout=1800).splitlines()[-1])
                    out["corpus_throughput"] = throughput_figures(raw)
            finally:
                with contextlib.suppress(Exception):
                    kernel.shutdown()
        hub.stop_server(USER)
    finally:
        hub.stop()
        cancel_jobs(USER)
        shutil.rmtree(state, ignore_errors=True)
    out["metadata"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "profile": PROFILE,
        "runs": args.runs,
        "documents": args.documents,
        "partitions": args.partitions,
        "repeats": args.repeats,
        "versions": versions(),
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the benchmark starts a hub and submits jobs as a test user")
        return 2
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
