"""Job tracking's driver: the variants one after another, each phase in each, and the
report (the package's docstring says what is measured)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchmarks.job_tracking
from benchmarks import cli
from benchmarks.hubs import PROFILE, cancel_jobs, ensure_unix_user
from benchmarks.job_tracking.burst import phase_burst
from benchmarks.job_tracking.detection import phase_detection
from benchmarks.job_tracking.hubs import (
    FACTORYHUB_EXTRA_SBATCH,
    JOB_NAME_PREFIX,
    STOCK_REQ_OPTIONS,
    USER_PREFIX,
    log,
    make_hub,
    stop_all,
)
from benchmarks.job_tracking.load import measure_background, phase_load
from benchmarks.job_tracking.stats import detection_targets
from tests.support.hub import PROXY_PATH, RunningHub
from tests.support.waiting import wait_no_jobs

VARIANT_ORDER = ("stock", "factoryhub")
PHASES = ("load", "detection", "burst")
STOCK_MAX_TRIALS = 5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(
        benchmarks.job_tracking.__doc__, prog="python -m benchmarks.job_tracking", keep_state=True
    )
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
    args = parser.parse_args(argv)
    args.only = cli.subset(parser, "--only", args.only, PHASES)
    args.variants = cli.subset(parser, "--variants", args.variants, VARIANT_ORDER)
    for name in ("servers", "trials", "burst"):
        if not 1 <= getattr(args, name) <= 99:
            parser.error(f"--{name} must be within 1..99")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


@dataclass
class Session:
    """One run of the benchmark: its users, state folder and what it has measured."""

    args: argparse.Namespace
    users: list[str]
    state: Path
    token: str = field(default_factory=cli.new_token)
    out: dict[str, Any] = field(default_factory=dict)
    backgrounds: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    trials_run: dict[str, int] = field(default_factory=dict)
    failed: bool = False

    def phase(self, hub: RunningHub, variant: str, phase: str) -> dict[str, Any]:
        """One phase on the variant's hub; a failure is recorded (the servers stopped) and
        the next phase runs."""
        args, users = self.args, self.users
        options = {"profile": PROFILE} if variant == "factoryhub" else {}
        try:
            if phase == "load":
                result = phase_load(
                    hub, users[: args.servers], options, args.minutes, self.backgrounds.get(variant)
                )
                result["poll_interval_s"] = self.intervals[variant]
                return result
            if phase == "detection":
                trials = min(args.trials, STOCK_MAX_TRIALS) if variant == "stock" else args.trials
                self.trials_run[variant] = trials
                return phase_detection(hub, users, options, trials)
            return phase_burst(hub, users[: args.burst], options)
        except Exception as e:
            self.failed = True
            log(f"{variant} {phase} FAILED: {e}\n{traceback.format_exc()}")
            with contextlib.suppress(Exception):
                stop_all(hub, users, timeout=120)
            return {"error": str(e)[:2000]}

    def variant(self, variant: str) -> None:
        """The variant's background window, its hub, its phases; the hub stopped after."""
        args = self.args
        if "load" in args.only and args.background_seconds > 0:
            log(f"background RPCs for {args.background_seconds:.0f} s (no benchmark hub)")
            background = measure_background(args.background_seconds)
            self.backgrounds[variant] = background
            log(f"background: {background['all_rpcs_per_minute']} RPCs/min")
        hub, self.intervals[variant] = make_hub(variant, self.state / variant, self.token)
        try:
            hub.start()
            for user in self.users:
                hub.ensure_user(user)
            for phase in args.only:
                self.out.setdefault(phase, {})[variant] = self.phase(hub, variant, phase)
        finally:
            with contextlib.suppress(Exception):
                stop_all(hub, self.users, timeout=60)
            hub.stop()
            for user in self.users:
                cancel_jobs(user)


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
    wait_no_jobs(users, 180)
    session = Session(args, users, cli.private_state("fhtrack-"))
    session.out = {phase: {} for phase in args.only}
    log(f"state and logs in {session.state}")
    try:
        for variant in args.variants:
            session.variant(variant)
    finally:
        for user in users:
            cancel_jobs(user)
        if session.failed or args.keep_state:
            log(f"kept {session.state}")
        else:
            shutil.rmtree(session.state, ignore_errors=True)
    return report(session)


def report(s: Session) -> dict[str, Any]:
    args = s.args
    return {
        **s.out,
        "targets": targets(s.out, s.intervals),
        "metadata": cli.metadata(
            git_head=cli.git_head(),
            servers=args.servers,
            minutes=args.minutes,
            trials_requested=args.trials,
            trials_run=s.trials_run,
            trials_note=(
                f"stock gets min(trials, {STOCK_MAX_TRIALS}): each of its trials may wait up "
                f"to its {s.intervals.get('stock', 30):.0f} s poll interval"
            ),
            burst=args.burst,
            poll_interval_s=s.intervals,
            background_rpcs_no_hub=s.backgrounds,
            users=f"{s.users[0]}..{s.users[-1]}",
            order="variant by variant: " + ", ".join(args.variants),
            factoryhub_profile=PROFILE,
            factoryhub_extra_sbatch=list(FACTORYHUB_EXTRA_SBATCH),
            factoryhub_job_name_prefix=JOB_NAME_PREFIX,
            stock_req_options=STOCK_REQ_OPTIONS,
            versions=cli.versions(),
        ),
    }


def targets(out: Mapping[str, Any], intervals: Mapping[str, float]) -> dict[str, Any]:
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


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_as_root("job_tracking", run, parse_args(argv), [PROXY_PATH])


if __name__ == "__main__":
    sys.exit(main())
