"""The server-ready API accepts an address (and a node name) and nothing else."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from factoryhub.spawners.ready_address import ForeignAddress, check_ready_address
from factoryhub.spawners.ready_api import parse_address
from factoryhub.spawners.slurm.client import JobInfo


def test_address_and_node_are_accepted() -> None:
    assert parse_address({"ip": "127.0.0.1", "port": 8888, "node": "cn-01.hpc"}) == (
        "127.0.0.1",
        8888,
        "cn-01.hpc",
    )
    assert parse_address({"ip": "::1", "port": 1}) == ("::1", 1, "")


@pytest.mark.parametrize(
    "body",
    [
        {"ip": "127.0.0.1"},
        {"ip": "127.0.0.1", "port": 8888, "exec_prefix": "rm -rf /"},
        {"ip": "0.0.0.0", "port": 8888},
        {"ip": "not-an-ip", "port": 8888},
        {"ip": "127.0.0.1", "port": 0},
        {"ip": "127.0.0.1", "port": True},
        {"ip": "127.0.0.1", "port": 8888, "node": "cn01; reboot"},
        {"ip": "127.0.0.1", "port": 8888, "node": 7},
        ["127.0.0.1", 8888],
    ],
)
def test_anything_else_is_refused(body: object) -> None:
    with pytest.raises(ValueError):
        parse_address(body)


# --------------------------------------------------------------------------- the job's node


class ScriptedSlurm:
    """Slurm as the hub sees it: jobs by id, nodes with their NodeAddr."""

    def __init__(self, jobs: dict[str, JobInfo], nodes: dict[str, str]) -> None:
        self.jobs, self.nodes = jobs, nodes

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        assert kind == "node"
        return [
            {"NodeName": n, "NodeAddr": a, "NodeHostName": n}
            for n, a in self.nodes.items()
            if n == name
        ]


SLURM = ScriptedSlurm(
    {
        "7": JobInfo("7", "RUNNING", nodes="cn-01"),
        "8": JobInfo("8", "PENDING"),
        "9": JobInfo("9", "RUNNING", nodes="cn-[01-02]"),
    },
    {"cn-01": "10.1.0.1", "cn-02": "10.1.0.2"},
)


async def test_the_address_of_the_jobs_node_is_accepted() -> None:
    assert await check_ready_address(SLURM, "7", "10.1.0.1") == "cn-01"
    # the site's mapping wins over Slurm's NodeAddr
    assert await check_ready_address(SLURM, "7", "192.0.2.7", {"cn-01": "192.0.2.7"}) == "cn-01"


@pytest.mark.parametrize(
    ("job_id", "ip"),
    [
        ("7", "10.1.0.2"),  # another node of the cluster
        ("7", "127.0.0.1"),  # the hub's own host
        ("8", "10.1.0.1"),  # not running yet
        ("404", "10.1.0.1"),  # not Slurm's job at all
        ("", "10.1.0.1"),  # no job
        ("9", "10.1.0.1"),  # several nodes
    ],
)
async def test_any_other_address_is_refused(job_id: str, ip: str) -> None:
    with pytest.raises(ForeignAddress):
        await check_ready_address(SLURM, job_id, ip)
