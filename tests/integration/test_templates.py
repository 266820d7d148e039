"""The template notebooks run under papermill inside a real user server (its kernel, its
environment, its Dask configuration) against the real local Slurm."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.hub import RunningHub
from tests.support.kernel import Kernel, kernel
from tests.support.waiting import wait_until

from .oidc_fixtures import TEST_PROJECT, cancel_jobs_of
from .test_dask import dask_jobs, squeue_of, start_server

pytestmark = pytest.mark.slurm

USER = "fhtest-oidc"
ACCOUNT = TEST_PROJECT["account"]

RUN_TEMPLATE = """
import json, pathlib, subprocess, sys, time
home = pathlib.Path.home()
notebook = home / "factoryhub-templates" / {path!r}
out = home / "factoryhub-runs" / "executed" / notebook.name
out.parent.mkdir(parents=True, exist_ok=True)
summary = out.with_suffix(".summary.json")
summary.unlink(missing_ok=True)
params = dict({params!r}, summary_path=str(summary))
begun = time.monotonic()
done = subprocess.run(
    [sys.executable, "-m", "papermill", str(notebook), str(out), "-k", "python3",
     "-y", json.dumps(params)],
    capture_output=True, text=True, timeout={timeout},
)
print(json.dumps({{
    "rc": done.returncode,
    "seconds": time.monotonic() - begun,
    "stderr": done.stderr[-6000:],
    "summary": json.loads(summary.read_text()) if summary.exists() else None,
    "executed": str(out),
}}))
"""


@pytest.fixture(scope="module")
def user_kernel(oidc_hub: RunningHub) -> Iterator[Kernel]:
    token = start_server(oidc_hub, USER)
    try:
        with kernel(oidc_hub, USER, token) as k:
            yield k
    finally:
        with contextlib.suppress(AssertionError):
            oidc_hub.stop_server(USER)
        cancel_jobs_of([USER])


def run_template(k: Kernel, path: str, params: dict[str, Any], timeout: int = 600) -> dict:
    code = RUN_TEMPLATE.format(path=path, params=params, timeout=timeout)
    result = json.loads(k.execute(code, timeout=timeout + 30).strip().splitlines()[-1])
    assert result["rc"] == 0, result["stderr"]
    assert result["summary"] is not None, result["stderr"]
    return result


def sacct_jobs(user: str, since: str, name: str) -> list[list[str]]:
    """[id, state, account, user] of the user's jobs named ``name`` since ``since``, from
    ``sacct --json``."""
    from .slurm_fixtures import accounted_since

    return [[j.job_id, j.state, j.account, j.user] for j in accounted_since(user, since, name)]


def now_for_sacct() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))


def test_templates_are_in_the_users_home(user_kernel: Kernel) -> None:
    listed = user_kernel.execute(
        "import pathlib; print(sorted(str(p.relative_to(pathlib.Path.home())) for p in "
        "(pathlib.Path.home() / 'factoryhub-templates').rglob('*.ipynb')))"
    )
    for name in (
        "data-prep/text-corpus.ipynb",
        "data-prep/tabular-features.ipynb",
        "training/train-interactive.ipynb",
        "training/train-batch.ipynb",
        "training/evaluate.ipynb",
    ):
        assert f"factoryhub-templates/{name}" in listed, listed


def read_in_home(k: Kernel, path: str) -> Any:
    """A JSON file of the user's, read in their server."""
    code = (
        f"import json, pathlib; print(json.dumps(json.loads(pathlib.Path({path!r}).read_text())))"
    )
    return json.loads(k.execute(code).strip().splitlines()[-1])


def assert_workers_were_slurm_jobs_of_the_user(since: str, workers: int) -> None:
    # slurmctld hands job records to slurmdbd asynchronously: under load sacct lags squeue
    jobs = wait_until(
        lambda: (
            (j := sacct_jobs(USER, since, f"factoryhub-dask-{USER}")) and len(j) >= workers and j
        ),
        60,
        lambda: (
            f"sacct lists fewer than {workers} worker jobs of {USER} since {since}: "
            f"{sacct_jobs(USER, since, f'factoryhub-dask-{USER}')}"
        ),
    )
    assert {j[2] for j in jobs} == {ACCOUNT} and {j[3] for j in jobs} == {USER}, jobs
    # the notebook closed its cluster: no worker job is left
    deadline = time.monotonic() + 15
    while dask_jobs(USER) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dask_jobs(USER) == [], squeue_of(USER)


def test_the_text_corpus_template_cleans_and_shards_the_corpus(user_kernel: Kernel) -> None:
    since = now_for_sacct()
    result = run_template(
        user_kernel,
        "data-prep/text-corpus.ipynb",
        {"n_docs": 800, "n_partitions": 3, "n_workers": 2, "cluster_kind": "slurm"},
    )
    s = result["summary"]
    assert s["cluster_kind"] == "slurm" and len(s["workers"]) == 2
    assert s["dashboard_link"].startswith(f"/user/{USER}/proxy/")
    # every injected problem was removed for the reason it was injected, nothing else
    assert s["mismatches"] in ([], 0, {}), s["mismatches"]
    assert s["removed_by_reason"] == s["expected_removed_by_reason"]
    assert s["exact_duplicates_removed"] > 0 and s["near_duplicates_removed"] > 0
    assert s["documents_out"] == s["documents_in"] - sum(s["removed_by_reason"].values())
    assert s["tokens"] > 0 and s["shards"] == 3
    manifest = read_in_home(user_kernel, s["manifest_path"])
    assert sum(shard["rows"] for shard in manifest["shards"]) == s["documents_out"]
    assert all(len(shard["sha256"]) == 64 for shard in manifest["shards"])
    assert_workers_were_slurm_jobs_of_the_user(since, 2)


def test_the_tabular_template_drops_what_was_injected(user_kernel: Kernel) -> None:
    since = now_for_sacct()
    result = run_template(
        user_kernel,
        "data-prep/tabular-features.ipynb",
        {"n_meters": 40, "days": 4, "n_partitions": 2, "n_workers": 2, "cluster_kind": "slurm"},
    )
    s = result["summary"]
    assert s["dropped_as_injected"] is True, (s["dropped_by_reason"], s["injected_by_reason"])
    assert s["rows_out"] == s["rows_in"] - sum(s["dropped_by_reason"].values())
    assert s["output_rows"] > 0 and len(s["workers"]) == 2
    assert s["output_path"].startswith(f"/home/{USER}/")
    assert_workers_were_slurm_jobs_of_the_user(since, 2)


def test_train_interactive_then_evaluate(user_kernel: Kernel) -> None:
    out_dir = f"/home/{USER}/factoryhub-runs/test-interactive"
    trained = run_template(
        user_kernel,
        "training/train-interactive.ipynb",
        {"interactive": False, "steps": 60, "model_size": "tiny", "out_dir": out_dir},
    )["summary"]
    assert trained["status"] == "completed" and trained["steps"] == 60, trained
    assert trained["last_loss"] < trained["first_loss"] - 0.5, trained
    assert trained["checkpoint"].startswith(out_dir) and trained["device"] == "cpu"
    evaluated = run_template(
        user_kernel, "training/evaluate.ipynb", {"checkpoint": trained["checkpoint"]}
    )["summary"]
    assert evaluated["step"] == trained["steps"]
    assert (
        abs(evaluated["perplexity"] - math.exp(evaluated["loss"])) < 1e-3 * evaluated["perplexity"]
    )
    # better than knowing nothing (a uniform guess over 256 bytes: ln 256 = 5.55 nats)
    assert evaluated["loss"] < math.log(256) - 0.5, evaluated


def test_train_batch_runs_the_training_as_a_slurm_job_of_the_user(user_kernel: Kernel) -> None:
    since = now_for_sacct()
    s = run_template(
        user_kernel,
        "training/train-batch.ipynb",
        {
            "steps": 60,
            "procs_per_node_cpu": 2,
            "cpus_per_node": 2,
            "out_dir": "~/factoryhub-runs/test-batch",
        },
    )["summary"]
    assert s["state"] == "COMPLETED", s
    assert s["account"] == ACCOUNT
    assert s["last_loss"] < s["first_loss"] - 0.5, s
    assert s["checkpoint"] and s["samples"], s
    jobs = sacct_jobs(USER, since, f"factoryhub-train-{USER}")
    assert [(j[0], j[1], j[2], j[3]) for j in jobs] == [(s["job_id"], "COMPLETED", ACCOUNT, USER)]
    # two training processes (torchrun on the CPU, gloo) ran in the one job step
    done = read_in_home(user_kernel, f"{s['out_dir']}/done.json")
    assert done["world_size"] == 2 and done["status"] == "completed", done
    assert not [j for j in squeue_of(USER) if j["name"] == f"factoryhub-train-{USER}"]


def test_the_job_monitor_lists_the_users_jobs_and_cancels_one(user_kernel: Kernel) -> None:
    out = user_kernel.execute(
        """
import json, time
from factoryhub.helpers import slurm_jobs
from factoryhub.helpers.job_monitor import JobMonitor
probe = "#!/bin/bash\\n#SBATCH -J factoryhub-train-probe\\n#SBATCH -t 5\\nsleep 300\\n"
job_id = slurm_jobs.submit(probe)
monitor = JobMonitor(every=3600)
listed = {j.info.job_id: j.kind for j in monitor.jobs}
monitor.cancel(job_id)
time.sleep(1)
state = slurm_jobs.job(job_id).state
monitor.close()
print(json.dumps({"listed": listed, "job": job_id, "state": state, "status": monitor.status.value}))
"""
    )
    result = json.loads(out.strip().splitlines()[-1])
    server = [j["id"] for j in squeue_of(USER) if j["name"] == f"factoryhub-server-{USER}"]
    assert result["listed"][server[0]] == "JupyterLab server", result
    assert result["listed"][result["job"]] == "training", result
    assert result["state"] in ("CANCELLED", "COMPLETING"), result
    assert f"cancelled job {result['job']}" in result["status"]
