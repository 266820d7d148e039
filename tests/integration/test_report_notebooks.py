"""The built-in report notebooks (``notebooks/reports/``) run under papermill as a real test
user, in a folder of theirs, the way the Reports service's job runs them: usage from the real
Slurm accounting, and the model evaluation (training a tiny model first)."""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from factoryhub.local import slurm as local_slurm
from tests.integration.slurm_fixtures import UnixUsers

pytestmark = pytest.mark.slurm

REPORTS = Path(__file__).resolve().parents[2] / "notebooks" / "reports"
VENV_BIN = Path(sys.executable).parent


@dataclass
class ReportUser:
    name: str
    account: str
    folder: Path  # owned by the user, removed afterwards

    def run_report(self, notebook: str, params: dict[str, Any], timeout: int = 120) -> Run:
        """``python -m papermill NOTEBOOK OUT -f params.json -k python3 --cwd OUTDIR`` as the
        user, in a clean environment (the Reports service's command)."""
        out_dir = Path(tempfile.mkdtemp(prefix=f"{Path(notebook).stem}-", dir=self.folder))
        source = out_dir / "report.ipynb"
        shutil.copy(REPORTS / notebook, source)
        (out_dir / "params.json").write_text(json.dumps(params))
        shutil.chown(out_dir, self.name)
        for path in out_dir.iterdir():
            shutil.chown(path, self.name)
        home = pwd.getpwnam(self.name).pw_dir
        env = [f"HOME={home}", f"USER={self.name}", f"LOGNAME={self.name}",
               f"PATH={VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]  # fmt: skip
        begun = time.monotonic()
        done = subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *env,
             str(VENV_BIN / "python"), "-m", "papermill", str(source), str(out_dir / "out.ipynb"),
             "-f", str(out_dir / "params.json"), "-k", "python3", "--cwd", str(out_dir)],
            capture_output=True, text=True, cwd=out_dir, timeout=timeout,
        )  # fmt: skip
        executed = out_dir / "out.ipynb"
        cells = json.loads(executed.read_text())["cells"] if executed.exists() else []
        return Run(done.returncode, done.stderr, time.monotonic() - begun, out_dir, cells)


@dataclass
class Run:
    rc: int
    stderr: str
    seconds: float
    out_dir: Path
    cells: list[dict[str, Any]]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [o for c in self.cells if c["cell_type"] == "code" for o in c.get("outputs", [])]

    @property
    def errors(self) -> list[str]:
        return [f"{o['ename']}: {o['evalue']}" for o in self.outputs if o["output_type"] == "error"]

    @property
    def images(self) -> int:
        return sum("image/png" in o.get("data", {}) for o in self.outputs)

    @property
    def text(self) -> str:
        """Everything the notebook printed or displayed, as text."""
        parts = []
        for o in self.outputs:
            parts.append("".join(o.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(o.get("data", {}).get(kind, "")))
        return "\n".join(parts)

    def assert_ok(self) -> None:
        assert self.rc == 0 and not self.errors, (self.errors, self.stderr[-3000:])


@pytest.fixture(scope="module")
def report_user(unix_users: UnixUsers) -> Iterator[ReportUser]:
    (name,) = unix_users(1)
    folder = Path(tempfile.mkdtemp(prefix="fh-report-notebooks-"))
    shutil.chown(folder, name)
    os.chmod(folder, 0o700)
    try:
        yield ReportUser(name, unix_users.account, folder)
    finally:
        local_slurm.cancel_user_jobs(name)
        shutil.rmtree(folder, ignore_errors=True)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """The state accounting recorded for each of ``job_ids`` it knows (``sacct --json``)."""
    from .slurm_fixtures import accounted

    return {i: job.state for i in job_ids if (job := accounted(i)) is not None}


def submit_tiny_jobs(user: ReportUser, n: int) -> list[str]:
    """``n`` one-second jobs of the user under their account, ended and in sacct."""
    ids = []
    for _ in range(n):
        done = subprocess.run(
            ["runuser", "-u", user.name, "--", "sbatch", "--parsable", "--output=/dev/null",
             f"--account={user.account}", "--job-name=fh-usage-report", "--wrap", "sleep 1"],
            capture_output=True, text=True, cwd=user.folder, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        states = sacct_states(ids)
        if len(states) == n and all(s == "COMPLETED" for s in states.values()):
            return ids
        time.sleep(0.5)
    raise AssertionError(f"jobs {ids} did not complete in sacct: {sacct_states(ids)}")


def test_usage_report_shows_the_projects_jobs(report_user: ReportUser) -> None:
    submit_tiny_jobs(report_user, 2)
    run = report_user.run_report(
        # every user of the account: in CI many test users ran heavier jobs today
        "usage.ipynb",
        {"days": 1, "accounts": [report_user.account], "top_users": 1000},
    )
    run.assert_ok()
    assert run.images >= 3, run.text  # per project, per user, per day
    assert report_user.account in run.text and report_user.name in run.text
    assert f"--accounts={report_user.account}" in run.text
    assert "No jobs ran" not in run.text


def test_usage_report_says_so_when_the_period_has_no_jobs(report_user: ReportUser) -> None:
    run = report_user.run_report("usage.ipynb", {"start": "2001-01-01", "end": "2001-01-07"})
    run.assert_ok()
    assert "No jobs ran in any project from 2001-01-01 to 2001-01-07" in run.text
    assert run.images == 0


def test_model_evaluation_trains_a_tiny_model_when_there_is_none(
    report_user: ReportUser,
) -> None:
    missing = report_user.folder / "no-model" / "checkpoint.pt"
    run = report_user.run_report(
        "model-evaluation.ipynb",
        {"checkpoint": str(missing), "train_steps_if_missing": 30, "max_windows": 200},
    )
    run.assert_ok()
    assert (run.out_dir / "trained-model" / "checkpoint.pt").is_file()
    assert (run.out_dir / "evaluate.ipynb").is_file()
    summary = json.loads((run.out_dir / "evaluate-summary.json").read_text())
    assert summary["step"] == 30 and summary["split"] == "val"
    assert summary["loss"] < math.log(256)  # better than a uniform guess
    assert f"**{summary['bits_per_byte']:.2f} bits per byte**" in run.text
    for measure in ("perplexity", "accuracy", "gzip", "byte frequencies"):
        assert measure in run.text
    assert run.images >= 3, run.text  # baselines, per-language panels, the loss curve


def test_model_evaluation_without_a_checkpoint_says_how_to_make_one(
    report_user: ReportUser,
) -> None:
    run = report_user.run_report(
        "model-evaluation.ipynb", {"checkpoint": str(report_user.folder / "nothing.pt")}
    )
    assert run.rc != 0
    assert any("There is no checkpoint at" in e for e in run.errors), run.errors
    assert "train_steps_if_missing" in run.text and "train-interactive" in run.text


def test_model_evaluation_without_the_training_templates_ends_cleanly(
    report_user: ReportUser,
) -> None:
    run = report_user.run_report(
        "model-evaluation.ipynb", {"evaluate_notebook": str(report_user.folder / "none.ipynb")}
    )
    run.assert_ok()
    assert "There is no model evaluation to run here" in run.text
    assert run.images == 0
