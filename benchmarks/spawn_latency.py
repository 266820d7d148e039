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
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks import cli
from benchmarks.hubs import (
    POLL_S,
    PROFILE,
    SPAWN_TIMEOUT_S,
    VENV,
    cancel_jobs,
    ensure_unix_user,
    factoryhub_hub,
    is_server_status,
    measure_spawn,
    stock_hub,
    stop_server,
)
from tests.support.hub import PROXY_PATH, RunningHub, port_free
from tests.support.waiting import wait_no_jobs, wait_until

VARIANTS = ("bare", "stock", "factoryhub")
USERS = {"bare": "fhbench1", "stock": "fhbench2", "factoryhub": "fhbench3"}
BARE_PORT = 28200

log = cli.logger("spawn_latency")


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


# ------------------------------------------------------------------------- bare


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (a session leader), SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children that outlived the leader keep the group id: take them down too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def bare_argv(user: str, token: str) -> tuple[list[str], dict[str, str], str]:
    """``jupyter lab`` as ``user`` (argv, environment, home)."""
    home = pwd.getpwnam(user).pw_dir
    env = {
        "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }
    argv = [
        shutil.which("runuser") or "/usr/sbin/runuser",
        *("-u", user, "--", str(VENV / "bin" / "jupyter"), "lab", "--no-browser"),
        "--ip=127.0.0.1",
        f"--port={BARE_PORT}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
    ]
    return argv, env, home


def measure_bare(user: str, token: str, log_path: Path, timeout: float = SPAWN_TIMEOUT_S) -> float:
    """Start ``jupyter lab`` as ``user``; seconds until ``/api/status`` answers 200."""
    if not port_free(BARE_PORT):
        raise RuntimeError(f"port {BARE_PORT} is taken: is a jupyter lab of an earlier run left?")
    argv, env, home = bare_argv(user, token)
    url = f"http://127.0.0.1:{BARE_PORT}/api/status"
    with (
        log_path.open("ab") as out,
        httpx.Client(headers={"Authorization": f"token {token}"}, timeout=5) as client,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

        def answered() -> float | None:
            with contextlib.suppress(httpx.HTTPError):
                if is_server_status(client.get(url)):
                    return time.perf_counter() - start
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}: see {log_path}")
            return None

        try:
            return wait_until(
                answered,
                timeout,
                lambda: f"jupyter lab did not answer in {timeout} s: see {log_path}",
                first=POLL_S,
                longest=POLL_S,
            )
        finally:
            kill_group(proc)


# ------------------------------------------------------------------------- driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(__doc__, keep_state=True)
    parser.add_argument("--runs", type=int, default=20, help="measured spawns per variant")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    args = parser.parse_args(argv)
    args.variants = cli.subset(parser, "--variants", args.variants, VARIANTS)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def start_hubs(variants: Sequence[str], state: Path) -> dict[str, RunningHub]:
    """The hubs of the Slurm variants, started, each with its benchmark user."""
    token = cli.new_token()
    hubs: dict[str, RunningHub] = {}
    if "stock" in variants:
        (state / "stock").mkdir(mode=0o700)
        hubs["stock"] = stock_hub(state / "stock", token)
    if "factoryhub" in variants:
        (state / "factoryhub").mkdir(mode=0o700)
        hubs["factoryhub"] = factoryhub_hub(state / "factoryhub", token)
    for hub in hubs.values():
        hub.start()
        log(f"{hub.name} hub up at {hub.url}")
        hub.ensure_user(USERS[hub.name])
    return hubs


def measures(
    variants: Sequence[str], hubs: dict[str, RunningHub], state: Path
) -> dict[str, Callable[[], float]]:
    """One spawn of each variant, measured, then stopped: seconds."""
    bare_token = secrets.token_hex(16)
    found: dict[str, Callable[[], float]] = {}
    if "bare" in variants:
        found["bare"] = lambda: measure_bare(
            USERS["bare"], bare_token, state / "bare-jupyter-lab.log"
        )
    for name, hub in hubs.items():
        opts = {"profile": PROFILE} if name == "factoryhub" else {}

        def spawn_and_stop(hub: RunningHub = hub, opts: dict[str, Any] = opts) -> float:
            elapsed = measure_spawn(hub, USERS[hub.name], opts)
            stop_server(hub, USERS[hub.name])
            return elapsed

        found[name] = spawn_and_stop
    return found


def rounds(runs: int, measure: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """A warm-up round, then ``runs`` rounds, round-robin over the variants."""
    samples: dict[str, list[float]] = {name: [] for name in measure}
    for i in range(runs + 1):
        for name, once in measure.items():
            elapsed = once()
            log(f"{name:<10} {'warm-up' if i == 0 else f'{i}/{runs}':>7}: {elapsed:.3f} s")
            if i > 0:
                samples[name].append(elapsed)
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[str] = args.variants
    users = [USERS[v] for v in variants]
    for user in users:
        ensure_unix_user(user)
        cancel_jobs(user)
    wait_no_jobs(users)
    state = cli.private_state("fhbench-")
    log(f"state and logs in {state}")
    hubs: dict[str, RunningHub] = {}
    failed = True
    try:
        hubs = start_hubs(variants, state)
        samples = rounds(args.runs, measures(variants, hubs, state))
        failed = False
    finally:
        for name, hub in hubs.items():
            if failed:
                with contextlib.suppress(Exception):
                    stop_server(hub, USERS[name], timeout=20)
            hub.stop()
        for user in users:
            cancel_jobs(user)
        if failed or args.keep_state:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    return report(args, samples)


def report(args: argparse.Namespace, samples: dict[str, list[float]]) -> dict[str, Any]:
    results = {name: cli.summarize(samples[name]) for name in args.variants}
    ratios, targets = compare(results)
    return {
        **results,
        "ratios": ratios,
        "targets": targets,
        "metadata": cli.metadata(
            runs=args.runs,
            warmup_runs=1,
            order="round-robin: " + ", ".join(args.variants),
            poll_interval_s=POLL_S,
            users={v: USERS[v] for v in args.variants},
            factoryhub_profile=PROFILE,
            versions=cli.versions(),
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needs = [PROXY_PATH] if any(v != "bare" for v in args.variants) else []
    return cli.run_as_root("spawn_latency", run, args, needs)


if __name__ == "__main__":
    sys.exit(main())
