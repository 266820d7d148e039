"""The local single-node Slurm, against the real daemons (munged, slurmctld, slurmd)."""

from __future__ import annotations

import pwd
import subprocess
import time
from pathlib import Path

import pytest

from factoryhub.local import slurm as local_slurm
from factoryhub.local import slurm_checks
from factoryhub.spawners.slurm import blocking, commands
from factoryhub.spawners.slurm.client import SlurmUnavailable
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
        state = slurm_checks.job_state(job_id)
        if state in wanted:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state or 'unknown'}, not {wanted} after {timeout}s")


def test_status_reports_all_daemons_running(slurm: dict[str, int | None]) -> None:
    status = local_slurm.status()
    assert set(status) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmrestd"}
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
        with pytest.raises(SlurmUnavailable, match="did not answer"):
            blocking.run(commands.jobs(), timeout=60)

        slurm_outage.start()
        assert slurm_checks.controller_up()
        blocking.run(commands.jobs())  # answers again
        # the running job survived the outage, and new jobs run again
        assert slurm_checks.job_state(job_id) == "RUNNING"
        assert slurm_checks.verify_job() < 60
    finally:
        local_slurm.cancel_user_jobs(user)
    wait_state(job_id, {"CANCELLED"})


def test_rendered_config_is_the_single_node_loopback_cluster(slurm: dict[str, int | None]) -> None:
    conf = local_slurm.render_conf()
    node = local_slurm.nodename()
    assert f"SlurmctldHost={node}(127.0.0.1)" in conf
    assert f"NodeName={node} NodeAddr=127.0.0.1" in conf
    assert f"CPUs={local_slurm.CPUS}" in conf and "SlurmdParameters=config_overrides" in conf
    for partition in ("interactive", "batch"):
        line = next(x for x in conf.splitlines() if x.startswith(f"PartitionName={partition} "))
        assert "OverSubscribe=NO" in line and "MaxTime=INFINITE" in line
    assert "PartitionName=interactive Nodes=" in conf and "Default=YES" in conf
    assert Path("/etc/slurm/slurm.conf").read_text() == conf
    for line in (
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=127.0.0.1",
        "AccountingStoragePort=6819",
        "AccountingStorageEnforce=associations,limits,qos",
        "JobAcctGatherType=jobacct_gather/linux",
        "SchedulerParameters=batch_sched_delay=0",
    ):
        assert line in conf.splitlines()


def test_accounting_runs_on_loopback_with_a_private_database(slurm: dict[str, int | None]) -> None:
    dbd_conf = local_slurm.SLURMDBD_CONF
    st = dbd_conf.stat()
    assert st.st_mode & 0o777 == 0o600 and pwd.getpwuid(st.st_uid).pw_name == "slurm"
    text = dbd_conf.read_text()
    assert "DbdAddr=127.0.0.1" in text and "StoragePort=3307" in text
    assert f"StoragePass={local_slurm.dbd_password()}" in text
    assert local_slurm.DBD_PASSWORD_FILE.stat().st_mode & 0o777 == 0o600
    mariadbd = local_slurm.status()["mariadbd"]
    assert mariadbd is not None
    cmdline = Path(f"/proc/{mariadbd}/cmdline").read_bytes().split(b"\0")
    assert b"--bind-address=127.0.0.1" in cmdline and b"--port=3307" in cmdline
    assert pwd.getpwuid(Path(f"/proc/{mariadbd}").stat().st_uid).pw_name == "mysql"
    listening = Path("/proc/net/tcp").read_text()
    assert "0100007F:0CEB" in listening  # MariaDB on 127.0.0.1:3307 only, never wider
    assert "00000000:0CEB" not in listening
    # slurmdbd, like slurmctld and slurmd, has no bind-address setting in Slurm 22.05: it
    # listens on every interface (DbdAddr only names where clients reach it); munge guards it.
    assert ":1AA3" in listening


def test_changed_accounting_config_restarts_the_controller(slurm: dict[str, int | None]) -> None:
    """A slurm.conf that differs from the rendered one (as after an upgrade of this code) makes
    up() restart slurmctld and slurmd: accounting settings are not taken by a reconfigure."""
    before = local_slurm.status()
    conf = local_slurm.SLURM_CONF
    conf.write_text(conf.read_text().replace("AccountingStorageEnforce=", "#Enforce="))
    started = local_slurm.up(verify=True)
    # slurmrestd reads slurm.conf too: it restarts with them
    assert set(started) == {"slurmctld", "slurmd", "slurmrestd"}
    after = local_slurm.status()
    assert after["slurmctld"] != before["slurmctld"]
    for name in ("munged", "mariadbd", "slurmdbd"):
        assert after[name] == before[name]
    assert conf.read_text() == local_slurm.render_conf()
