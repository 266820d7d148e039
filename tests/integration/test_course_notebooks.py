"""The intro-ai course (``notebooks/courses/intro-ai``) runs under papermill where its
participants run it: inside a real user server of the test user (its kernel, environment
and Dask configuration), against the real local Slurm, from a copy of the course in the
user's home."""

from __future__ import annotations

import contextlib
import json
import pwd
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.kernel import Kernel

from .test_dask import squeue_of
from .test_templates import (
    ACCOUNT,
    USER,
    assert_workers_were_slurm_jobs_of_the_user,
    now_for_sacct,
    read_in_home,
    run_template,
    user_kernel,  # noqa: F401  (the fixture: a kernel in USER's running server)
)

pytestmark = pytest.mark.slurm

COURSE = Path(__file__).resolve().parents[2] / "notebooks" / "courses" / "intro-ai"
NOTEBOOKS = ("00-welcome", "01-python-basics", "02-data-prep", "03-training")


@dataclass
class Course:
    folder: Path  # the copy of the course in the user's home
    work: Path  # where the notebooks write their data and models
    executed: Path  # where run_template puts the executed notebooks

    def run(self, k: Kernel, notebook: str, params: dict[str, Any]) -> Executed:
        result = run_template(k, str(self.folder / f"{notebook}.ipynb"), params, timeout=150)
        cells = json.loads(Path(result["executed"]).read_text())["cells"]
        return Executed(result["summary"], cells, result["seconds"])


@dataclass
class Executed:
    summary: dict[str, Any]
    cells: list[dict[str, Any]]
    seconds: float

    @property
    def images(self) -> int:
        outputs = [o for c in self.cells if c["cell_type"] == "code" for o in c["outputs"]]
        return sum("image/png" in o.get("data", {}) for o in outputs)

    def assert_every_exercise_solved(self, count: int) -> None:
        # the folded solution cells ran after the exercise cells: every check passed
        assert self.summary["exercises"] == {f"Exercise {i}": True for i in range(1, count + 1)}


@pytest.fixture(scope="module")
def course(user_kernel: Kernel) -> Iterator[Course]:  # noqa: F811
    """The course copied into the user's home (their server runs: the user exists), as the
    course's materials arrive there; removed afterwards with everything the notebooks wrote."""
    account = pwd.getpwnam(USER)
    home = Path(account.pw_dir)
    top, work = home / "fhtest-courses", home / "factoryhub-runs" / "fhtest-course"
    folder, executed = top / "intro-ai", home / "factoryhub-runs" / "executed"
    shutil.rmtree(top, ignore_errors=True)
    shutil.copytree(COURSE, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in [top, *top.rglob("*")]:
        shutil.chown(path, account.pw_uid, account.pw_gid)
    try:
        yield Course(folder, work, executed)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        for name in NOTEBOOKS:
            for suffix in (".ipynb", ".summary.json"):
                with contextlib.suppress(FileNotFoundError):
                    (executed / f"{name}{suffix}").unlink()


@pytest.fixture(scope="module")
def server_job() -> str:
    (job,) = [j["id"] for j in squeue_of(USER) if j["name"] == f"factoryhub-server-{USER}"]
    return job


@pytest.fixture(scope="module")
def prepared(user_kernel: Kernel, course: Course) -> Executed:  # noqa: F811
    """02-data-prep with its defaults (a local Dask cluster), into the test's folder."""
    return course.run(user_kernel, "02-data-prep", {"output_dir": str(course.work / "corpus")})


def test_welcome_shows_the_participant_their_own_server_job(
    user_kernel: Kernel,  # noqa: F811
    course: Course,
    server_job: str,
) -> None:
    run = course.run(user_kernel, "00-welcome", {"your_name": "Test Participant"})
    s = run.summary
    assert s["in_slurm_job"] and s["job_id"] == server_job, s
    assert s["user"] == USER and s["account"] == ACCOUNT and s["name"] == "Test Participant"
    assert s["node"] and s["cpus"] >= 1 and s["ends_at"], s
    assert s["remaining_s"] > 0 and s["elapsed_s"] >= 0, s
    run.assert_every_exercise_solved(3)
    assert run.images == 2  # where your notebook runs; your walltime, used and left


def test_python_basics_exercises_and_plot(user_kernel: Kernel, course: Course) -> None:  # noqa: F811
    run = course.run(user_kernel, "01-python-basics", {"n_jobs": 120, "seed": 3})
    s = run.summary
    assert s["n_jobs"] == 120
    assert set(s["gpu_hours_by_project"]) == {"acme-ai", "climate-lab", "factory-ops"}
    assert 0 < sum(s["gpu_hours_by_project"].values()) and 0 <= s["share_short"] <= 1
    run.assert_every_exercise_solved(3)
    assert run.images == 1


def test_data_prep_removes_what_was_injected_on_a_local_cluster(
    user_kernel: Kernel,  # noqa: F811
    prepared: Executed,
    server_job: str,
) -> None:
    s = prepared.summary
    assert s["documents_in"] == 300 and s["use_slurm_cluster"] is False
    # every injected defect was removed for the reason it was injected, and nothing else
    assert s["mismatches"] == 0
    assert s["removed_by_reason"] == s["expected_removed_by_reason"]
    assert s["exact_duplicates_removed"] > 0 and s["near_duplicates_removed"] > 0
    assert s["documents_out"] == s["documents_in"] - sum(s["removed_by_reason"].values())
    # local workers are processes inside the server's own job
    assert s["worker_jobs"] == [server_job, server_job]
    manifest = read_in_home(user_kernel, s["manifest_path"])
    assert sum(shard["rows"] for shard in manifest["shards"]) == s["documents_out"]
    assert manifest["removed"]["near_duplicate"] == s["near_duplicates_removed"]
    prepared.assert_every_exercise_solved(2)
    assert prepared.images == 1


def test_data_prep_with_slurm_workers(
    user_kernel: Kernel,  # noqa: F811
    course: Course,
    server_job: str,
) -> None:
    since = now_for_sacct()
    run = course.run(
        user_kernel,
        "02-data-prep",
        {
            "n_docs": 200,
            "use_slurm_cluster": True,
            "n_workers": 2,
            "output_dir": str(course.work / "corpus-slurm"),
        },
    )
    s = run.summary
    assert s["use_slurm_cluster"] is True and s["mismatches"] == 0
    assert s["dashboard_link"].startswith(f"/user/{USER}/proxy/")
    # two workers, each a Slurm job of its own, not the server's
    assert len(set(s["worker_jobs"])) == 2 and server_job not in s["worker_jobs"], s
    assert_workers_were_slurm_jobs_of_the_user(since, 2)
    assert run.images == 1


def test_training_learns_from_the_course_corpus(
    user_kernel: Kernel,  # noqa: F811
    course: Course,
    prepared: Executed,
) -> None:
    corpus = str(Path(prepared.summary["manifest_path"]).parent)
    model_dir = course.work / "model"
    run = course.run(
        user_kernel,
        "03-training",
        {"steps": 40, "data": corpus, "out_dir": str(model_dir), "sample_bytes": 60},
    )
    s = run.summary
    assert s["data"] == corpus and s["device"] == "cpu" and s["steps"] == 40
    # it trained on exactly the documents data prep kept (some held out for validation)
    assert sum(s["documents"].values()) == prepared.summary["documents_out"]
    # a byte-level model starts at a uniform guess (ln 256 = 5.55) and learns
    assert abs(s["untrained_loss"] - 5.55) < 0.3, s
    assert s["last_loss"] < s["first_loss"] - 0.5, s
    assert s["val_loss"] < s["untrained_loss"] - 0.5, s
    assert s["checkpoint"] == str(model_dir / "checkpoint.pt")
    assert (model_dir / "checkpoint.pt").is_file()
    assert s["sample"].startswith("The ") and len(s["sample"]) > len("The ")
    run.assert_every_exercise_solved(3)
    assert run.images == 1
