"""Spawn latency: bare ``jupyter lab`` vs stock batchspawner vs factoryhub, on one Slurm.

Run as root on a machine with the local Slurm up::

    /opt/factoryhub/venv/bin/python benchmarks/spawn_latency.py [--runs N] [--json-out PATH]

Variants, measured round-robin (bare, stock, factoryhub, bare, ...) after one unmeasured
warm-up of each, so that drift of the machine affects all of them alike:

- ``bare``: ``jupyter lab`` started directly as a benchmark user (no Slurm, no hub); from
  process start to the first 200 from ``/api/status``.
- ``stock``: stock batchspawner ``SlurmSpawner`` in a hub of its own
  (``benchmarks/stock_batchspawner_config.py``); from the spawn POST to the first 200
  from ``/user/U/api/status`` through the proxy.
- ``factoryhub``: factoryhub's hub and spawner, measured like ``stock``.

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.processes import (
    POLL_S,
    PROFILE,
    PROXY_CMD,
    USERS,
    VARIANTS,
    Hub,
    cancel_jobs,
    ensure_unix_user,
    factoryhub_hub,
    log,
    measure_bare,
    stock_hub,
    versions,
    wait_no_jobs,
)

# ------------------------------------------------------------------------ statistics


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """n, median (p50), p95 (inclusive quantiles, n=20), min, max and the samples, in s."""
    if not samples:
        raise ValueError("no samples")
    data = [float(s) for s in samples]
    if len(data) == 1:
        p95 = data[0]
    else:
        p95 = statistics.quantiles(data, n=20, method="inclusive")[18]
    return {
        "n": len(data),
        "p50_s": round(statistics.median(data), 3),
        "p95_s": round(p95, 3),
        "min_s": round(min(data), 3),
        "max_s": round(max(data), 3),
        "samples_s": [round(s, 3) for s in data],
    }


def compare(results: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios of the medians and whether the targets are met (None where a variant is missing)."""
    p50 = {name: r["p50_s"] for name, r in results.items()}
    fh, bare, stock = p50.get("factoryhub"), p50.get("bare"), p50.get("stock")
    fh_over_bare = round(fh / bare, 3) if fh is not None and bare else None
    stock_over_fh = round(stock / fh, 3) if stock is not None and fh else None
    ratios = {
        "factoryhub_p50_over_bare_p50": fh_over_bare,
        "stock_p50_over_factoryhub_p50": stock_over_fh,
    }
    targets = {
        "factoryhub_p50_le_1.2x_bare": None if fh_over_bare is None else fh_over_bare <= 1.2,
        "factoryhub_1.8x_faster_than_stock_p50": (
            None if stock_over_fh is None else stock_over_fh >= 1.8
        ),
    }
    return ratios, targets


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="measured spawns per variant")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the temp dir (hub logs, databases)"
    )
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        parser.error(f"--variants: unknown or empty: {unknown or names}")
    args.variants = [v for v in VARIANTS if v in names]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[str] = args.variants
    users = [USERS[v] for v in variants]
    for user in users:
        ensure_unix_user(user)
        cancel_jobs(user)
    for user in users:
        wait_no_jobs(user)

    state = Path(tempfile.mkdtemp(prefix="fhbench-"))
    state.chmod(0o700)
    log(f"state and logs in {state}")
    token = secrets.token_hex(32)
    token_file = state / "admin-api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)

    hubs: dict[str, Hub] = {}
    failed = True
    try:
        if "stock" in variants:
            (state / "stock").mkdir(mode=0o700)
            hubs["stock"] = stock_hub(state / "stock", token_file, token)
        if "factoryhub" in variants:
            (state / "factoryhub").mkdir(mode=0o700)
            hubs["factoryhub"] = factoryhub_hub(state / "factoryhub", token_file, token)
        for hub in hubs.values():
            hub.start()
            hub.ensure_user(USERS[hub.name])

        bare_token = secrets.token_hex(16)
        measures: dict[str, Callable[[], float]] = {}
        if "bare" in variants:
            measures["bare"] = lambda: measure_bare(
                USERS["bare"], bare_token, state / "bare-jupyter-lab.log"
            )
        for name, hub in hubs.items():
            opts = {"profile": PROFILE} if name == "factoryhub" else {}
            measures[name] = lambda hub=hub, opts=opts: hub.measure_spawn(USERS[hub.name], opts)

        def stop(name: str) -> None:
            if name in hubs:
                hubs[name].stop_server(USERS[name])

        samples: dict[str, list[float]] = {v: [] for v in variants}
        for i in range(args.runs + 1):
            for name in variants:
                elapsed = measures[name]()
                stop(name)
                label = "warm-up" if i == 0 else f"{i}/{args.runs}"
                log(f"{name:<10} {label:>7}: {elapsed:.3f} s")
                if i > 0:
                    samples[name].append(elapsed)
        failed = False
    finally:
        for name, hub in hubs.items():
            if failed:
                with contextlib.suppress(Exception):
                    hub.stop_server(USERS[name], timeout=20)
            hub.stop()
        for user in users:
            cancel_jobs(user)
        if failed or args.keep_state:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    results = {name: summarize(samples[name]) for name in variants}
    ratios, targets = compare(results)
    return {
        **results,
        "ratios": ratios,
        "targets": targets,
        "metadata": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "nproc": os.cpu_count(),
            "runs": args.runs,
            "warmup_runs": 1,
            "order": "round-robin: " + ", ".join(variants),
            "poll_interval_s": POLL_S,
            "users": {v: USERS[v] for v in variants},
            "factoryhub_profile": PROFILE,
            "versions": versions(),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("spawn_latency: run as root (jobs start as benchmark users)", file=sys.stderr)
        return 2
    if not PROXY_CMD.exists() and any(v != "bare" for v in args.variants):
        print(f"spawn_latency: {PROXY_CMD} is missing (npm ci)", file=sys.stderr)
        return 2
    with sigterm_as_interrupt():
        result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
