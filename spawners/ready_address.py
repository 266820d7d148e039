"""Which address a server's ready call may name: the node Slurm runs its job on.

The ready call comes from the user's job, so the user chooses what it says. Were any address
accepted, a user's job could point the proxy's route for ``/user/<name>/`` at any host and
port the hub can reach (another user's server, a service's API, the hub's host). So the hub
asks Slurm (never the job) where the job runs, and accepts only that node's addresses: the
site's mapping of the node name where it has one, else the node's ``NodeAddr`` as Slurm
knows it and what that name resolves to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any, Protocol

from factoryhub.spawners.slurm.client import JobInfo


class NodeSource(Protocol):
    async def query(self, job_ids: Any) -> dict[str, JobInfo]: ...

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]: ...


class ForeignAddress(ValueError):
    """The ready call named an address that is not the job's node (message for the log)."""


def _resolve(name: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return set()


async def node_addresses(
    slurm: NodeSource, node: str, mapping: Mapping[str, str] | None = None
) -> set[str]:
    """The addresses the hub accepts for Slurm node ``node``."""
    if mapping and node in mapping:
        return {str(ipaddress.ip_address(mapping[node]))}
    found: set[str] = set()
    for entry in await slurm.show("node", node):
        if entry.get("NodeName") != node:
            continue
        for name in {entry.get("NodeAddr") or "", entry.get("NodeHostName") or ""} - {""}:
            try:
                found.add(str(ipaddress.ip_address(name)))
            except ValueError:
                found |= await asyncio.to_thread(_resolve, name)
    return found


async def check_ready_address(
    slurm: NodeSource, job_id: str, ip: str, mapping: Mapping[str, str] | None = None
) -> str:
    """The node of ``job_id`` when ``ip`` is one of its addresses; :class:`ForeignAddress`
    otherwise (also when Slurm does not say the job runs)."""
    if not job_id:
        raise ForeignAddress("the server has no Slurm job")
    job = (await slurm.query([job_id])).get(job_id)
    if job is None or not job.running or not job.nodes:
        state = job.state if job else "not in the queue"
        raise ForeignAddress(f"Slurm does not say job {job_id} runs ({state})")
    if "," in job.nodes or "[" in job.nodes:
        raise ForeignAddress(f"job {job_id} runs on several nodes ({job.nodes})")
    allowed = await node_addresses(slurm, job.nodes, mapping)
    if str(ipaddress.ip_address(ip)) not in allowed:
        raise ForeignAddress(
            f"{ip} is not an address of node {job.nodes}, where Slurm runs job {job_id} "
            f"(its addresses: {', '.join(sorted(allowed)) or 'none known'})"
        )
    return job.nodes
