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
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.processes import (
    VENV_BIN,
    cancel_jobs,
    ensure_unix_user,
    factoryhub_hub,
    log,
)

USER = "fhbench4"
GROUP = "factoryhub-bench"
ACCOUNT = "fhbench-reports"
PORT = 28110
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


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "mean_s": round(statistics.fmean(ordered), 3),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
    }


def run_direct(notebook: Path, out_dir: Path, i: int) -> float:
    python = str(VENV_BIN / "python")
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


def wait_done(c: Any, run_ids: list[int], timeout: float = 600) -> dict[int, float]:
    """run id → monotonic time it was first seen succeeded."""
    done: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(run_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not done within {timeout} s: {set(run_ids) - set(done)}")
        listed = c.get("/services/reports/api/runs", params={"limit": 1000}).json()["runs"]
        now = time.monotonic()
        for run in listed:
            if run["id"] in run_ids and run["id"] not in done:
                if run["status"] == "succeeded":
                    done[run["id"]] = now
                elif run["status"] in ("failed", "cancelled"):
                    raise RuntimeError(f"run {run['id']} {run['status']}: {run['error']}")
        time.sleep(0.1)
    return done


def post_run(c: Any, i: int) -> int:
    r = c.post("/services/reports/api/runs", json={"report": "bench", "parameters": {"n": i + 3}})
    if r.status_code != 201:
        raise RuntimeError(f"run refused: {r.status_code} {r.text}")
    return int(r.json()["id"])


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=20)
    args.add_argument("--json-out", default="")
    opts = args.parse_args()

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
        site["courses"] = {"enabled": False, "list": []}

    state = Path(tempfile.mkdtemp(prefix="fhbench-reports-hub-"))
    state.chmod(0o700)
    token = secrets.token_hex(32)
    token_file = state / "admin-token"
    token_file.write_text(token)
    hub = factoryhub_hub(state, token_file, token, change_site)
    hub.start()
    results: dict[str, Any] = {"runs": opts.runs}
    try:
        with hub.client(timeout=60) as admin:
            hub.ensure_user(USER)
            admin.post(f"/hub/api/groups/{GROUP}")
            r = admin.post(f"/hub/api/groups/{GROUP}/users", json={"users": [USER]})
            r.raise_for_status()
            r = admin.post(f"/hub/api/users/{USER}/tokens", json={"note": "bench"})
            r.raise_for_status()
            user_token = r.json()["token"]
        with hub.client(timeout=60) as c:
            c.headers["Authorization"] = f"token {user_token}"
            deadline = time.monotonic() + 60
            while c.get("/services/reports/api/reports").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Reports service did not answer:\n{hub.log_tail()}")
                time.sleep(0.5)
            log("warm-up: one direct run, one service run")
            run_direct(notebook, direct_dir, 0)
            wait_done(c, [post_run(c, 0)])
            direct, service = [], []
            for i in range(opts.runs):  # interleaved, so drift hits both alike
                direct.append(run_direct(notebook, direct_dir, i))
                begun = time.monotonic()
                run_id = post_run(c, i)
                service.append(wait_done(c, [run_id])[run_id] - begun)
                log(
                    f"run {i + 1}/{opts.runs}: "
                    f"direct {direct[-1]:.2f} s, service {service[-1]:.2f} s"
                )
            log(f"burst: {opts.runs} runs posted at once")
            begun = time.monotonic()
            ids = [post_run(c, i) for i in range(opts.runs)]
            posted = time.monotonic() - begun
            ends = wait_done(c, ids)
            burst_total = max(ends.values()) - begun
            direct_total = sum(direct)
        results.update(
            direct=summary(direct),
            service_sequential=summary(service),
            overhead_per_run_s=round(statistics.fmean(service) - statistics.fmean(direct), 3),
            overhead_p50_s=round(statistics.median(service) - statistics.median(direct), 3),
            direct_total_s=round(direct_total, 3),
            service_sequential_total_s=round(sum(service), 3),
            service_burst_total_s=round(burst_total, 3),
            service_burst_post_all_s=round(posted, 3),
            burst_speedup_vs_direct_sequential=round(direct_total / burst_total, 2),
        )
    finally:
        hub.stop()
        cancel_jobs(USER)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(direct_dir, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if opts.json_out:
        Path(opts.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
