"""Report runs through the Reports service against papermill run directly, in one run.

    /opt/factoryhub/venv/bin/python benchmarks/report_runs.py --runs 20 --json-out reports.json

``direct``: ``runuser -u USER -- python -m papermill`` then ``nbconvert --to html`` (what a
run's job does), one after another. ``service`` (sequential): ``POST api/runs``, then the run
is followed until it has succeeded (Slurm job, papermill, HTML, the service noticing the end).
``service`` (burst): all runs posted at once; the time until the last has succeeded. The
notebook is the same small report in all variants (a sum, a line, a plot). Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cli
from benchmarks.hubs import VENV, cancel_jobs, ensure_unix_user, factoryhub_hub
from tests.support.hub import PROXY_PATH, RunningHub
from tests.support.waiting import wait_until

USER = "fhbench4"
GROUP = "factoryhub-bench"
ACCOUNT = "fhbench-reports"
PORT = 28110
log = cli.logger("report_runs")
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": ["# Benchmark report\n\nA sum, a line and a plot."],
        },
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": ["n = 5"],
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": [
                "import matplotlib.pyplot as plt\n",
                "print(sum(range(n)))\n",
                "plt.plot(range(n))\n",
                "plt.show()",
            ],
            "outputs": [],
            "execution_count": None,
        },
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def run_direct(notebook: Path, out_dir: Path, i: int) -> float:
    python = str(VENV / "bin" / "python")
    executed = out_dir / f"direct-{i}.ipynb"
    begun = time.monotonic()
    for argv in (
        [
            python,
            "-m",
            "papermill",
            str(notebook),
            str(executed),
            "-p",
            "n",
            str(i + 3),
            "-k",
            "python3",
            "--no-progress-bar",
        ],
        [python, "-m", "nbconvert", "--to", "html", str(executed)],
    ):
        subprocess.run(
            ["runuser", "-u", USER, "--", *argv], check=True, capture_output=True, cwd=out_dir
        )
    return time.monotonic() - begun


def wait_done(c: httpx.Client, run_ids: list[int], timeout: float = 600) -> dict[int, float]:
    """run id → monotonic time it was first seen succeeded."""
    done: dict[int, float] = {}

    def all_done() -> bool:
        listed = c.get("/services/reports/api/runs", params={"limit": 1000}).json()["runs"]
        now = time.monotonic()
        for run in listed:
            if run["id"] in run_ids and run["id"] not in done:
                if run["status"] == "succeeded":
                    done[run["id"]] = now
                elif run["status"] in ("failed", "cancelled"):
                    raise RuntimeError(f"run {run['id']} {run['status']}: {run['error']}")
        return len(done) >= len(run_ids)

    wait_until(
        all_done,
        timeout,
        lambda: f"runs not done within {timeout} s: {set(run_ids) - set(done)}",
        first=0.1,
        longest=0.1,
    )
    return done


def post_run(c: httpx.Client, i: int) -> int:
    r = c.post("/services/reports/api/runs", json={"report": "bench", "parameters": {"n": i + 3}})
    if r.status_code != 201:
        raise RuntimeError(f"run refused: {r.status_code} {r.text}")
    return int(r.json()["id"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(__doc__)
    parser.add_argument("--runs", type=int, default=20)
    return parser.parse_args(argv)


def prepare() -> tuple[Path, Path]:
    """The report's folder (with the notebook, readable by all) and the folder of the
    direct runs (the user's)."""
    from factoryhub.local.accounting import ensure_account, ensure_user_in_account

    ensure_unix_user(USER)
    ensure_account(ACCOUNT, "report benchmark")
    ensure_user_in_account(USER, ACCOUNT)
    folder = Path(tempfile.mkdtemp(prefix="fhbench-reports-"))
    folder.chmod(0o755)
    notebook = folder / "bench.ipynb"
    notebook.write_text(json.dumps(NOTEBOOK))
    notebook.chmod(0o644)
    direct_dir = Path(tempfile.mkdtemp(prefix="fhbench-direct-"))
    shutil.chown(direct_dir, USER)
    return folder, direct_dir


def reports_site(folder: Path) -> Callable[[dict[str, Any]], None]:
    """The benchmark's project and the Reports service, which reads ``folder``."""

    def change_site(site: dict[str, Any]) -> None:
        site["projects"] = [
            {
                "name": "bench",
                "display_name": "Benchmark",
                "description": "report benchmark",
                "account": ACCOUNT,
                "groups": [GROUP],
                "profiles": ["cpu-small"],
            }
        ]
        site["reports"] = {
            "enabled": True,
            "port": PORT,
            "folders": [str(folder)],
            "job": {"partition": "batch", "walltime": "00:10:00"},
            "poll_interval": 1,
            "access": [{"users": [USER], "allow": ["run"]}],
        }

    return change_site


@contextlib.contextmanager
def user_client(hub: RunningHub) -> Iterator[httpx.Client]:
    """The benchmark user's API client (in the project's group), once the service answers."""
    with hub.client(timeout=60) as admin:
        hub.ensure_user(USER)
        admin.post(f"/hub/api/groups/{GROUP}")
        admin.post(f"/hub/api/groups/{GROUP}/users", json={"users": [USER]}).raise_for_status()
        r = admin.post(f"/hub/api/users/{USER}/tokens", json={"note": "bench"})
        r.raise_for_status()
    with hub.client(r.json()["token"], timeout=60) as c:
        wait_until(
            lambda: c.get("/services/reports/api/reports").status_code == 200,
            60,
            lambda: f"the Reports service did not answer:\n{hub.log_tail()}",
            first=0.5,
            longest=0.5,
        )
        yield c


def sequential(
    c: httpx.Client, notebook: Path, direct_dir: Path, runs: int
) -> tuple[list[float], list[float]]:
    """Direct and service runs interleaved, so drift hits both alike (after a warm-up)."""
    log("warm-up: one direct run, one service run")
    run_direct(notebook, direct_dir, 0)
    wait_done(c, [post_run(c, 0)])
    direct, service = [], []
    for i in range(runs):
        direct.append(run_direct(notebook, direct_dir, i))
        begun = time.monotonic()
        run_id = post_run(c, i)
        service.append(wait_done(c, [run_id])[run_id] - begun)
        log(f"run {i + 1}/{runs}: direct {direct[-1]:.2f} s, service {service[-1]:.2f} s")
    return direct, service


def burst(c: httpx.Client, runs: int) -> tuple[float, float]:
    """All runs posted at once: seconds to post them, seconds until the last succeeded."""
    log(f"burst: {runs} runs posted at once")
    begun = time.monotonic()
    ids = [post_run(c, i) for i in range(runs)]
    posted = time.monotonic() - begun
    ends = wait_done(c, ids)
    return posted, max(ends.values()) - begun


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder, direct_dir = prepare()
    state = cli.private_state("fhbench-reports-hub-")
    hub = factoryhub_hub(state, cli.new_token(), reports_site(folder))
    try:
        hub.start()
        with user_client(hub) as c:
            direct, service = sequential(c, folder / "bench.ipynb", direct_dir, args.runs)
            posted, burst_total = burst(c, args.runs)
    finally:
        hub.stop()
        cancel_jobs(USER)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(direct_dir, ignore_errors=True)
    direct_total = sum(direct)
    return {
        "runs": args.runs,
        "direct": cli.summarize(direct, keep_samples=False, mean=True),
        "service_sequential": cli.summarize(service, keep_samples=False, mean=True),
        "overhead_per_run_s": round(statistics.fmean(service) - statistics.fmean(direct), 3),
        "overhead_p50_s": round(statistics.median(service) - statistics.median(direct), 3),
        "direct_total_s": round(direct_total, 3),
        "service_sequential_total_s": round(sum(service), 3),
        "service_burst_total_s": round(burst_total, 3),
        "service_burst_post_all_s": round(posted, 3),
        "burst_speedup_vs_direct_sequential": round(direct_total / burst_total, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_as_root("report_runs", run, parse_args(argv), [PROXY_PATH])


if __name__ == "__main__":
    sys.exit(main())
