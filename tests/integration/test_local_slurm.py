"""The local single-node Slurm, against the real daemons (munged, slurmctld, slurmd)."""

from __future__ import annotations

import pwd
import subprocess
import time
from pathlib import Path

import pytest

from factoryhub.local import slurm as local_slurm
from tests.integration.slurm_fixtures import SlurmOutage, UnixUsers

# The fixtures slurm, slurm_outage and unix_users come from tests/integration/slurm_fixtures.py,
# made visible by the conftest (`from tests.integration.slurm_fixtures import *`).

pytestmark = pytest.mark.slurm


def submit_as(user: str, *args: str) -> str:
    """``runuser -u USER -- sbatch --parsable --oversubscribe ...`` from the user's home."""
    home = pwd.getpwnam(user).pw_dir
    out = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "--oversubscribe", *args],
        capture_output=True,
        text=True,
        cwd=home,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def wait_state(job_id: str, wanted: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = local_slurm.job_state(job_id)
        if state in wanted:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state or 'unknown'}, not {wanted} after {timeout}s")


def test_status_reports_all_three_daemons_running(slurm: dict[str, int | None]) -> None:
    status = local_slurm.status()
    assert set(status) == {"munged", "slurmctld", "slurmd"}
    for name, pid in status.items():
        assert pid is not None, f"{name} is not running"
        assert Path(f"/proc/{pid}/comm").read_text().strip() == name


def test_job_submitted_as_a_user_runs_as_that_user(
    slurm: dict[str, int | None], unix_users: UnixUsers
) -> None:
    (user,) = unix_users(1)
    out_file = Path(pwd.getpwnam(user).pw_dir) / "out"
    out_file.unlink(missing_ok=True)
    job_id = submit_as(user, "--output=/dev/null", "--wrap", "id -un > ~/out")
    try:
        assert wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
        assert out_file.read_text().strip() == user
        assert out_file.stat().st_uid == pwd.getpwnam(user).pw_uid
    finally:
        local_slurm.cancel_user_jobs(user)


def test_up_a_second_time_is_a_no_op(slurm: dict[str, int | None]) -> None:
    before = local_slurm.status()
    assert local_slurm.up(verify=False) == {}
    assert local_slurm.status() == before


def test_controller_outage_and_recovery(
    slurm: dict[str, int | None], unix_users: UnixUsers, slurm_outage: SlurmOutage
) -> None:
    (user,) = unix_users(1)
    job_id = submit_as(user, "--output=/dev/null", "--wrap", "sleep 60")
    try:
        wait_state(job_id, {"RUNNING"})
        slurm_outage.stop()
        assert local_slurm.status()["slurmctld"] is None
        down = subprocess.run(["squeue"], capture_output=True, text=True, timeout=60)
        assert down.returncode != 0
        assert "Unable to contact slurm controller" in down.stderr

        slurm_outage.start()
        assert local_slurm.controller_up()
        up = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        # the running job survived the outage, and new jobs run again
        assert local_slurm.job_state(job_id) == "RUNNING"
        assert local_slurm.verify_job() < 60
    finally:
        local_slurm.cancel_user_jobs(user)
    wait_state(job_id, {"CANCELLED"})


def test_rendered_config_is_the_single_node_loopback_cluster(slurm: dict[str, int | None]) -> None:
    conf = local_slurm.render_conf()
    node = local_slurm.nodename()
    assert f"SlurmctldHost={node}(127.0.0.1)" in conf
    assert f"NodeName={node} NodeAddr=127.0.0.1" in conf
    assert "CPUs=16" in conf and "SlurmdParameters=config_overrides" in conf
    for partition in ("interactive", "batch"):
        line = next(x for x in conf.splitlines() if x.startswith(f"PartitionName={partition} "))
        assert "OverSubscribe=YES" in line and "MaxTime=INFINITE" in line
    assert "PartitionName=interactive Nodes=" in conf and "Default=YES" in conf
    assert Path("/etc/slurm/slurm.conf").read_text() == conf
