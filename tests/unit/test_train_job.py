"""The batch training job: what reaches the job script is validated and quoted."""

from __future__ import annotations

import getpass
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from factoryhub.helpers.job_monitor import describe, human_seconds
from factoryhub.helpers.slurm_jobs import MyJob, job_kind
from factoryhub.helpers.train_job import InvalidRequest, TrainJobRequest, render_script
from factoryhub.spawners.slurm.client import JobInfo


def request(tmp_path: Path, **over: object) -> TrainJobRequest:
    return TrainJobRequest(**{"out_dir": str(tmp_path / "run"), **over})  # type: ignore[arg-type]  # tests override fields of any type


@pytest.mark.parametrize(
    ("typed", "for_slurm"), [("02:00", "02:00:00"), ("0:45", "00:45:00"), ("1-12:00", "1-12:00:00")]
)
def test_the_walltime_reaches_slurm_as_it_was_meant(
    tmp_path: Path, typed: str, for_slurm: str
) -> None:
    """ "02:00" is two hours for a person; Slurm would read it as two minutes."""
    script = render_script(request(tmp_path, walltime=typed).validated())
    assert f"#SBATCH --time={for_slurm}\n" in script


def test_the_script_asks_slurm_for_what_was_requested(tmp_path: Path) -> None:
    script = render_script(
        request(tmp_path, nodes=2, gpus_per_node=4, account="acme-ai", partition="gpu"),
        python="/opt/venv/bin/python",
    )
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --account=acme-ai",
        "#SBATCH --partition=gpu",
        f"#SBATCH --job-name=factoryhub-train-{getpass.getuser()}",
        f"#SBATCH --output={tmp_path}/run/slurm-%j.log",
        "--nproc-per-node=4",
        "-m factoryhub.helpers.lm.train --out",
    ):
        assert line in script, line
    # a valid bash script
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_cpu_jobs_run_the_asked_number_of_processes(tmp_path: Path) -> None:
    script = render_script(request(tmp_path, procs_per_node_cpu=2, cpus_per_node=4))
    assert "--nproc-per-node=2" in script and "OMP_NUM_THREADS=2" in script
    assert "--gpus-per-node" not in script and "--account" not in script


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"nodes": 0}, "nodes must be a whole number from 1"),
        ({"gpus_per_node": 9}, "gpus_per_node"),
        ({"nodes": True}, "nodes"),
        ({"partition": "gpu\n#SBATCH --uid=0"}, "partition"),
        ({"account": "a b"}, "account"),
        ({"walltime": "forever"}, "walltime"),
        ({"model_size": "huge"}, "model_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"out_dir": "/tmp/x; rm -rf ~"}, "out_dir"),
        ({"data": "../../etc"}, "data"),
        ({"extra": {"exec": "sh"}}, "unknown settings"),
    ],
)
def test_bad_values_are_refused_with_the_reason(
    tmp_path: Path, over: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words.split()[0]):
        render_script(request(tmp_path, **over))


def test_the_monitor_names_jobs_and_times() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0)
    info = JobInfo(
        "42",
        "RUNNING",
        nodes="cn01",
        name="factoryhub-dask-ada",
        start_time=(now - timedelta(minutes=3, seconds=5)).isoformat(),
        end_time=(now + timedelta(hours=1, minutes=2)).isoformat(),
    )
    row = describe(MyJob(info, now))
    assert row == [
        "42",
        "Dask worker",
        "factoryhub-dask-ada",
        "RUNNING",
        "cn01",
        "3 min 05 s",
        "1 h 02 min",
    ]
    pending = describe(MyJob(JobInfo("43", "PENDING", reason="Priority", name="x"), now))
    assert pending[3] == "PENDING (Priority)" and pending[5:] == ["-", "-"]
    assert job_kind("factoryhub-server-ada") == "JupyterLab server"
    assert job_kind("factoryhub-train-ada") == "training"
    assert human_seconds(2 * 86400 + 3600) == "2 d 1 h"
