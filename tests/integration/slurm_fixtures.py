"""Fixtures for tests that need the real local Slurm (munged, slurmctld, slurmd on loopback).

Import them from a conftest: ``from tests.integration.slurm_fixtures import *``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from factoryhub.local import accounting
from factoryhub.local import slurm as local_slurm
from factoryhub.spawners.slurm import blocking, commands
from factoryhub.spawners.slurm.job_json import AccountedJob, job_info, listed

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


def queue_jobs(user: str | None = None, *, ended: bool = False) -> list[Mapping[str, Any]]:
    """The jobs ``squeue --json`` lists, as Slurm's own v0.0.38 objects (``job_id``,
    ``job_state``, ``name``, ``account``, ``comment``, ``resv_name``, ``cpus``...): only
    ``user``'s when given; only active ones, as plain ``squeue`` shows, unless ``ended``."""
    data = blocking.run(commands.queue())
    return [
        j
        for j in listed(data, "jobs", "the queue query")
        if (user is None or j.get("user_name") == user) and (ended or job_info(j).active)
    ]


def accounted(job_id: str) -> AccountedJob | None:
    """The newest accounting record of ``job_id`` (``sacct --json``; a restarted test Slurm
    numbers jobs from the start again, and accounting keeps the old ones); None: none yet."""
    records = blocking.run(commands.accounted(job_id))
    return records[-1] if records else None


def accounted_since(user: str, since: str, name: str) -> list[AccountedJob]:
    """The accounting records of ``user``'s jobs named ``name`` that ran since ``since``
    (ISO local time), from ``sacct --json``."""
    until = datetime.now() + timedelta(days=1)
    records = blocking.run(commands.usage(datetime.fromisoformat(since), until))
    return [j for j in records if j.user == user and j.name == name]


def cancel_leftover_test_jobs() -> None:
    """Cancel the jobs of every test user (``fhtest*``) and wait until they have left the
    queue's running states."""
    users = sorted({str(j.get("user_name", "")) for j in queue_jobs()})
    users = [u for u in users if u.startswith("fhtest")]
    for user in users:
        local_slurm.cancel_user_jobs(user)
    deadline = time.monotonic() + 30
    while users and time.monotonic() < deadline:
        left = [j for j in queue_jobs() if j.get("job_state") in ("PENDING", "RUNNING")]
        if not any(str(j.get("user_name", "")).startswith("fhtest") for j in left):
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
