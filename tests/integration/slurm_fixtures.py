"""Fixtures for tests that need the real local Slurm (munged, slurmctld, slurmd on loopback).

Import them from a conftest: ``from tests.integration.slurm_fixtures import *``.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator

import pytest

from factoryhub.local import accounting
from factoryhub.local import slurm as local_slurm

__all__ = ["SlurmOutage", "UnixUsers", "slurm", "slurm_outage", "unix_users"]

TEST_GROUP = "factoryhub"
TEST_PASSWORD = "fhtest-password"  # local test users on a throwaway machine
TEST_ACCOUNT = "fhtest"  # Slurm account: the test users' default (associations are enforced)


@pytest.fixture(scope="session")
def slurm() -> Iterator[dict[str, int | None]]:
    """The local Slurm, up and checked with a real job (idempotent: reuses running daemons).

    Yields ``status()``: daemon name → pid. Leaves the daemons running (``make down`` stops them).
    Jobs a test user left behind (a run that was killed before its teardown) are cancelled
    first, so that no test counts another run's jobs.
    """
    local_slurm.up()
    cancel_leftover_test_jobs()
    yield local_slurm.status()


def cancel_leftover_test_jobs() -> None:
    """Cancel the jobs of every test user (``fhtest*``) and wait until they have left the
    queue's running states."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%u"], capture_output=True, text=True, check=True
    ).stdout
    users = sorted({u.strip() for u in out.split() if u.strip().startswith("fhtest")})
    for user in users:
        local_slurm.cancel_user_jobs(user)
    deadline = time.monotonic() + 30
    while users and time.monotonic() < deadline:
        left = subprocess.run(
            ["squeue", "--noheader", "--states=PENDING,RUNNING", "--format=%u"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not any(u.startswith("fhtest") for u in left):
            return
        time.sleep(0.5)


class SlurmOutage:
    """Stop the controller during a test; the fixture restarts it at teardown in any case."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        local_slurm.stop_slurmctld()
        self.stopped = True

    def start(self) -> int:
        pid = local_slurm.start_slurmctld()
        local_slurm.wait_node_ready()
        self.stopped = False
        return pid


@pytest.fixture
def slurm_outage(slurm: dict[str, int | None]) -> Iterator[SlurmOutage]:
    outage = SlurmOutage()
    try:
        yield outage
    finally:
        if outage.stopped or local_slurm.status()["slurmctld"] is None:
            outage.start()


class UnixUsers:
    """``unix_users(n)`` → n fresh test users (fhtest1, fhtest2, ...) in group factoryhub.

    Each user has a Slurm association with account ``fhtest`` as their default account (Slurm
    enforces associations: without one a user cannot submit). Users stay on the machine
    (re-created idempotently next session); their jobs are cancelled when they are handed out
    and again at the end of the session.
    """

    group = TEST_GROUP
    password = TEST_PASSWORD
    account = TEST_ACCOUNT

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.created: list[str] = []

    def __call__(self, n: int = 1) -> list[str]:
        names = []
        accounting.ensure_account(self.account, "Integration tests")
        for _ in range(n):
            name = f"fhtest{next(self._counter)}"
            local_slurm.create_unix_user(name, self.password, groups=(self.group,))
            accounting.ensure_user_in_account(name, self.account, default=True)
            local_slurm.cancel_user_jobs(name)
            self.created.append(name)
            names.append(name)
        return names

    def cancel_jobs(self) -> None:
        for name in self.created:
            local_slurm.cancel_user_jobs(name)


@pytest.fixture(scope="session")
def unix_users(slurm: dict[str, int | None]) -> Iterator[UnixUsers]:
    users = UnixUsers()
    try:
        yield users
    finally:
        users.cancel_jobs()
