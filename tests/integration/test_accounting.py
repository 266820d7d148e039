"""Slurm accounting on the local factory: slurmdbd + MariaDB, associations enforced.

Against the real daemons: Slurm itself refuses jobs of users without an association and jobs
charged to an account the user is not in; ``factoryhub.local.accounting`` grants associations
idempotently (reads first, writes only when something must change).
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator

import pytest

from factoryhub.local import accounting
from factoryhub.local import slurm as local_slurm
from factoryhub.spawners.slurm import accounts as slurm_accounts
from tests.integration.slurm_fixtures import UnixUsers, accounted, queue_jobs
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slurm

PROJECT_A = "fhproj-a"
PROJECT_B = "fhproj-b"
NO_ASSOC_USER = "fhnoassoc"  # a Unix user Slurm accounting never heard of


def queue_account(job_id: str) -> str:
    """The account of a job while ``squeue --json`` lists it ("": it no longer does)."""
    return next((j["account"] for j in queue_jobs(ended=True) if str(j["job_id"]) == job_id), "")


def sbatch_as(user: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "--oversubscribe",
         "--output=/dev/null", *args],
        capture_output=True,
        text=True,
        cwd=pwd.getpwnam(user).pw_dir,
        timeout=30,
    )  # fmt: skip


def refused(out: subprocess.CompletedProcess) -> bool:
    text = out.stderr.lower()
    return out.returncode != 0 and ("invalid account" in text or "association" in text)


@pytest.fixture
def no_assoc_user(slurm: dict[str, int | None]) -> Iterator[str]:
    """A Unix user without any Slurm association (plain useradd, not create_unix_user)."""
    try:
        pwd.getpwnam(NO_ASSOC_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", NO_ASSOC_USER], check=True)
    for account in accounting.user_accounts(NO_ASSOC_USER):
        accounting.remove_user_from_account(NO_ASSOC_USER, account)
    yield NO_ASSOC_USER
    local_slurm.cancel_user_jobs(NO_ASSOC_USER)


@pytest.fixture
def project_user(unix_users: UnixUsers) -> Iterator[str]:
    (user,) = unix_users(1)
    for account in (PROJECT_A, PROJECT_B):
        accounting.remove_user_from_account(user, account)  # from an earlier session
    yield user
    local_slurm.cancel_user_jobs(user)
    accounting.remove_user_from_account(user, PROJECT_A)


def test_daemons_of_accounting_run(slurm: dict[str, int | None]) -> None:
    status = local_slurm.status()
    assert status["mariadbd"] and status["slurmdbd"]
    assert accounting.CLUSTER in accounting.clusters()
    assert accounting.OPS_ACCOUNT in accounting.user_accounts("root")


def test_user_without_association_is_refused_by_slurm(no_assoc_user: str) -> None:
    assert accounting.user_accounts(no_assoc_user) == set()
    for args in (("--account=nope",), ()):
        out = sbatch_as(no_assoc_user, *args, "--wrap", "true")
        assert refused(out), (args, out.returncode, out.stdout, out.stderr)


def test_association_lets_the_user_charge_that_account_and_no_other(project_user: str) -> None:
    user = project_user
    accounting.ensure_account(PROJECT_A, "Project A (tests)")
    accounting.ensure_account(PROJECT_B, "Project B (tests)")
    assert PROJECT_A not in accounting.user_accounts(user)

    before = sbatch_as(user, f"--account={PROJECT_A}", "--wrap", "true")
    assert refused(before), (before.returncode, before.stderr)

    assert accounting.ensure_user_in_account(user, PROJECT_A) is True
    assert PROJECT_A in accounting.user_accounts(user)
    assert accounting.default_account(user) == UnixUsers.account  # not changed by a 2nd account

    out = sbatch_as(user, f"--account={PROJECT_A}", "--wrap", "sleep 30")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    assert queue_account(job_id) == PROJECT_A

    def sacct_account() -> str:
        job = accounted(job_id)
        return job.account if job else ""

    shown = wait_until(sacct_account, 30, lambda: f"sacct lists no account for job {job_id}")
    assert shown == PROJECT_A

    other = sbatch_as(user, f"--account={PROJECT_B}", "--wrap", "true")
    assert refused(other), (other.returncode, other.stderr)

    plain = sbatch_as(user, "--wrap", "true")  # no --account: the default account
    assert plain.returncode == 0, plain.stderr
    plain_id = plain.stdout.strip().split(";")[0]
    shown = queue_account(plain_id)
    assert shown in ("", UnixUsers.account)  # "" when the job already left squeue
    local_slurm.cancel_user_jobs(user)


def test_operations_are_idempotent_and_read_only_when_nothing_changes(
    project_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = project_user
    accounting.ensure_account(PROJECT_A)
    accounting.ensure_user_in_account(user, PROJECT_A)

    calls: list[list[str]] = []
    real = slurm_accounts.sacctmgr

    def spy(args, timeout=slurm_accounts.TIMEOUT_S):
        calls.append(list(args))
        return real(args, timeout)

    # the operations live in factoryhub.spawners.slurm.accounts; the local factory's own
    # (cluster, default association) in factoryhub.local.accounting
    monkeypatch.setattr(slurm_accounts, "sacctmgr", spy)
    monkeypatch.setattr(accounting, "sacctmgr", spy)
    assert accounting.ensure_account(PROJECT_A) is False
    assert accounting.ensure_user_in_account(user, PROJECT_A) is False
    assert accounting.ensure_default_association(user) is False
    assert accounting.ensure_cluster() is False
    assert calls, "the checks must have read something"
    assert not [c for c in calls if "-i" in c], calls  # no write

    calls.clear()
    assert accounting.remove_user_from_account(user, PROJECT_A) is True
    assert accounting.remove_user_from_account(user, PROJECT_A) is False
    assert sum("-i" in c for c in calls) == 1
    assert PROJECT_A not in accounting.user_accounts(user)


@pytest.mark.parametrize(
    ("username", "account"),
    [
        ("root; rm -rf /", "fhproj-a"),
        ("Alice", "fhproj-a"),
        ("fhtest1", "Proj-A"),
        ("fhtest1", "-a"),
        ("fhtest1", "a" * 65),
        ("fhtest1", "x where name=root"),
        ("", "fhproj-a"),
    ],
)
def test_bad_names_never_reach_sacctmgr(
    username: str, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a, **_k):
        raise AssertionError("sacctmgr was called")

    monkeypatch.setattr(accounting, "sacctmgr", boom)
    with pytest.raises(ValueError):
        accounting.ensure_user_in_account(username, account)
    with pytest.raises(ValueError):
        accounting.remove_user_from_account(username, account)


def test_sacctmgr_failure_carries_stderr(slurm: dict[str, int | None]) -> None:
    with pytest.raises(accounting.AccountingError) as info:
        accounting.sacctmgr(["-i", "delete", "account", "fhtest-never-created"])
    assert info.value.stderr
