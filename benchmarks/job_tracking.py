"""Job tracking: stock batchspawner vs factoryhub, on one Slurm, side by side.

Run as root on a machine with the local Slurm up::

    /opt/factoryhub/venv/bin/python benchmarks/job_tracking.py [--servers N] [--minutes M]
        [--trials T] [--burst B] [--only load,detection,burst] [--json-out PATH]

One variant at a time (stock first, then factoryhub), each in a hub of its own on
loopback ports 28000+ (see ``benchmarks/processes.py``), with the same benchmark users
``fhtrack01..``. Three measurements:

- ``load``: N servers running, M minutes: slurmctld RPCs (``sdiag`` before/after) and the
  processes the hub starts (exact, from the kernel's process-event connector; also the
  20 ms ``/proc`` sampling the brief asked for, which misses most ~5 ms ``squeue`` runs).
- ``detection``: a server's job is cancelled behind the hub's back (``scancel`` as root):
  seconds until the hub has dropped the server *and* its proxy route.
- ``burst``: B users spawn at once while a reader does ``GET /hub/api/users`` every 100 ms:
  API latencies, error answers, whether (and when) every spawn became ready.

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.

The code lives next to this driver: ``tracking_stats.py`` (pure functions),
``tracking_procs.py`` (process counting), ``tracking_hub.py`` (Slurm and hub helpers),
``tracking_load.py``, ``tracking_detection.py`` and ``tracking_burst.py`` (one per phase).
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
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.processes import PROFILE, PROXY_CMD, REPO, cancel_jobs, ensure_unix_user, versions
from benchmarks.tracking_burst import phase_burst
from benchmarks.tracking_detection import phase_detection
from benchmarks.tracking_hub import (
    FACTORYHUB_EXTRA_SBATCH,
    JOB_NAME_PREFIX,
    STOCK_REQ_OPTIONS,
    USER_PREFIX,
    log,
    make_hub,
    stop_all,
    wait_no_jobs,
)
from benchmarks.tracking_load import measure_background, phase_load
from benchmarks.tracking_stats import detection_targets

VARIANT_ORDER = ("stock", "factoryhub")
PHASES = ("load", "detection", "burst")
STOCK_MAX_TRIALS = 5


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
    parser.add_argument("--servers", type=int, default=20, help="servers for the load window")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the load window")
    parser.add_argument("--trials", type=int, default=20, help="dead-server detection trials")
    parser.add_argument("--burst", type=int, default=20, help="users spawning at once")
    parser.add_argument("--only", default=",".join(PHASES), help="subset of load,detection,burst")
    parser.add_argument(
        "--variants", default=",".join(VARIANT_ORDER), help="subset of stock,factoryhub"
    )
    parser.add_argument(
        "--background-seconds",
        type=float,
        default=30.0,
        help="RPC background window before each variant's hub starts (0: none)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument("--keep-state", action="store_true", help="keep hub logs and databases")
    args = parser.parse_args(argv)
    for name, allowed in (("only", PHASES), ("variants", VARIANT_ORDER)):
        picked = [p.strip() for p in getattr(args, name).split(",") if p.strip()]
        unknown = sorted(set(picked) - set(allowed))
        if unknown or not picked:
            parser.error(f"--{name}: unknown or empty: {unknown or picked}")
        setattr(args, name, [p for p in allowed if p in picked])
    for name in ("servers", "trials", "burst"):
        if not 1 <= getattr(args, name) <= 99:
            parser.error(f"--{name} must be within 1..99")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_users = max(
        args.servers if "load" in args.only else 1,
        args.burst if "burst" in args.only else 1,
        args.trials if "detection" in args.only else 1,
    )
    users = [f"{USER_PREFIX}{i:02d}" for i in range(1, n_users + 1)]
    for user in users:
        ensure_unix_user(user)
        cancel_jobs(user)
    wait_no_jobs(users)

    state = Path(tempfile.mkdtemp(prefix="fhtrack-"))
    state.chmod(0o700)
    log(f"state and logs in {state}")
    token = secrets.token_hex(32)
    token_file = state / "admin-api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)

    out: dict[str, Any] = {phase: {} for phase in args.only}
    backgrounds: dict[str, Any] = {}
    intervals: dict[str, float] = {}
    trials_run: dict[str, int] = {}
    failed = False
    try:
        for variant in args.variants:
            background = None
            if "load" in args.only and args.background_seconds > 0:
                log(f"background RPCs for {args.background_seconds:.0f} s (no benchmark hub)")
                background = backgrounds[variant] = measure_background(args.background_seconds)
                log(f"background: {background['all_rpcs_per_minute']} RPCs/min")
            hub, intervals[variant] = make_hub(variant, state / variant, token_file, token)
            options = {"profile": PROFILE} if variant == "factoryhub" else {}
            try:
                hub.start()
                for user in users:
                    hub.ensure_user(user)
                for phase in args.only:
                    try:
                        if phase == "load":
                            result = phase_load(
                                hub, users[: args.servers], options, args.minutes, background
                            )
                            result["poll_interval_s"] = intervals[variant]
                        elif phase == "detection":
                            trials = args.trials
                            if variant == "stock":
                                trials = min(args.trials, STOCK_MAX_TRIALS)
                            trials_run[variant] = trials
                            result = phase_detection(hub, users, options, trials)
                        else:
                            result = phase_burst(hub, users[: args.burst], options)
                    except Exception as e:
                        failed = True
                        log(f"{variant} {phase} FAILED: {e}\n{traceback.format_exc()}")
                        result = {"error": str(e)[:2000]}
                        with contextlib.suppress(Exception):
                            stop_all(hub, users, timeout=120)
                    out[phase][variant] = result
            finally:
                with contextlib.suppress(Exception):
                    stop_all(hub, users, timeout=60)
                hub.stop()
                for user in users:
                    cancel_jobs(user)
    finally:
        for user in users:
            cancel_jobs(user)
        if failed or args.keep_state:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    return {
        **out,
        "targets": targets(out, intervals, args),
        "metadata": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "nproc": os.cpu_count(),
            "git_head": git_head(),
            "servers": args.servers,
            "minutes": args.minutes,
            "trials_requested": args.trials,
            "trials_run": trials_run,
            "trials_note": (
                f"stock gets min(trials, {STOCK_MAX_TRIALS}): each of its trials may wait up "
                f"to its {intervals.get('stock', 30):.0f} s poll interval"
            ),
            "burst": args.burst,
            "poll_interval_s": intervals,
            "background_rpcs_no_hub": backgrounds,
            "users": f"{users[0]}..{users[-1]}",
            "order": "variant by variant: " + ", ".join(args.variants),
            "factoryhub_profile": PROFILE,
            "factoryhub_extra_sbatch": list(FACTORYHUB_EXTRA_SBATCH),
            "factoryhub_job_name_prefix": JOB_NAME_PREFIX,
            "stock_req_options": STOCK_REQ_OPTIONS,
            "versions": versions(),
        },
    }


def targets(out: Mapping[str, Any], intervals: Mapping[str, float], args: Any) -> dict[str, Any]:
    t: dict[str, Any] = {}
    load = out.get("load", {})
    fh = load.get("factoryhub", {})
    if "hub_squeue_per_minute" in fh:
        limit = 60.0 / intervals["factoryhub"]
        t["factoryhub_job_info_queries_per_minute_limit"] = limit
        t["factoryhub_hub_squeue_le_1_per_interval"] = fh["hub_squeue_per_minute"] <= limit
        net = fh.get("job_info_rpcs_per_minute_net_of_background")
        t["factoryhub_job_info_rpcs_net_le_1_per_interval"] = None if net is None else net <= limit
    stock = load.get("stock", {})
    if "hub_squeue_per_minute" in stock:
        t["stock_expected_job_info_per_minute"] = round(
            stock["servers"] * 60.0 / intervals["stock"], 1
        )
    det = out.get("detection", {})
    t["factoryhub_detection_p95_le_2s"] = detection_targets(det.get("factoryhub"), 2.0)
    for variant, b in out.get("burst", {}).items():
        if "read_latency_ms" in b:
            t[f"{variant}_burst_no_5xx"] = b["5xx"] == 0 and b["request_errors"] == 0
            t[f"{variant}_burst_read_p95_le_250ms"] = b["read_latency_ms"]["p95"] <= 250
            t[f"{variant}_burst_all_ready"] = b["all_ready"]
    return t


def git_head() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("job_tracking: run as root (jobs start as benchmark users)", file=sys.stderr)
        return 2
    if not PROXY_CMD.exists():
        print(f"job_tracking: {PROXY_CMD} is missing (npm ci)", file=sys.stderr)
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
