"""The server-ready API accepts an address (and a node name) and nothing else."""

from __future__ import annotations

import pytest

from factoryhub.spawners.ready_api import parse_address


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
