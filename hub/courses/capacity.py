"""How many more course servers fit right now: in the course's Slurm reservation when it
has one, else in its profile's partition. Shown on the course page next to the number of
participants whose servers are not running, before "start all"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from factoryhub.spawners.model.profiles import Profile
from factoryhub.spawners.slurm.client import SlurmClient

DOWN = ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "POWERED_DOWN", "MAINT")


@dataclass(frozen=True)
class Capacity:
    slots: int  # servers of the course's profile that fit now
    free_cpus: int
    free_memory_gb: float
    where: str  # "reservation intro (active until ...)" / "partition interactive"
    problem: str = ""  # the reservation is missing, inactive, ... ('' when fine)

    def to_json(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "free_cpus": self.free_cpus,
            "free_memory_gb": round(self.free_memory_gb, 1),
            "where": self.where,
            "problem": self.problem,
        }


def _int(value: str | None) -> int:
    try:
        return int(str(value).split("(")[0])
    except (TypeError, ValueError):
        return 0


def _usable(node: dict[str, str]) -> bool:
    return not any(flag in node.get("State", "") for flag in DOWN)


def node_slots(nodes: list[dict[str, str]], cpus: int, mem_mb: int) -> tuple[int, int, int]:
    """(servers that fit, free CPUs, free MB) over ``nodes``, node by node."""
    slots = free_cpus = free_mb = 0
    for node in nodes:
        if not _usable(node):
            continue
        node_cpus = _int(node.get("CPUTot")) - _int(node.get("CPUAlloc"))
        node_mb = _int(node.get("RealMemory")) - _int(node.get("AllocMem"))
        free_cpus += max(node_cpus, 0)
        free_mb += max(node_mb, 0)
        slots += max(0, min(node_cpus // max(cpus, 1), node_mb // max(mem_mb, 1)))
    return slots, free_cpus, free_mb


def reservation_cpus(reservation: dict[str, str]) -> int:
    tres = dict(
        part.split("=", 1) for part in reservation.get("TRES", "").split(",") if "=" in part
    )
    return _int(tres.get("cpu")) or _int(reservation.get("CoreCnt"))


def _expand_nodes(text: str) -> set[str]:
    """Node names of a reservation's ``Nodes=`` (simple lists and one-level ranges)."""
    names: set[str] = set()
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", text or ""):
        match = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not match:
            names.add(part)
            continue
        for piece in match.group(2).split(","):
            low, _, high = piece.partition("-")
            for number in range(int(low), int(high or low) + 1):
                names.add(f"{match.group(1)}{number:0{len(low)}d}")
    return names


async def capacity(slurm: SlurmClient, profile: Profile, reservation: str = "") -> Capacity:
    mem_mb = profile.memory_gb.default * 1024
    nodes = await slurm.show("node")
    if not reservation:
        mine = [n for n in nodes if profile.partition in n.get("Partitions", "").split(",")]
        slots, free_cpus, free_mb = node_slots(mine, profile.cpus, mem_mb)
        return Capacity(slots, free_cpus, free_mb / 1024, f"partition {profile.partition}")
    found = await slurm.show("reservation", reservation)
    if not found:
        return Capacity(
            0,
            0,
            0.0,
            f"reservation {reservation}",
            f"Slurm has no reservation called {reservation}: servers will not start. Ask the "
            "factory's operators to create it, or clear it from the course.",
        )
    res = found[0]
    in_res = _expand_nodes(res.get("Nodes", ""))
    res_nodes = [n for n in nodes if n.get("NodeName") in in_res]
    _, _, free_mb = node_slots(res_nodes, profile.cpus, mem_mb)
    used = sum(
        cpus
        for state, cpus, _ in await slurm.jobs_in_reservation(reservation)
        if state in ("RUNNING", "CONFIGURING", "COMPLETING")
    )
    free_cpus = max(reservation_cpus(res) - used, 0)
    slots = min(free_cpus // max(profile.cpus, 1), free_mb // max(mem_mb, 1))
    state = res.get("State", "")
    where = f"reservation {reservation} ({res.get('StartTime', '?')} to {res.get('EndTime', '?')})"
    problem = ""
    if state != "ACTIVE":
        problem = (
            f"The reservation {reservation} is not active now (it starts "
            f"{res.get('StartTime', '?')}): servers wait in the queue until then."
        )
    return Capacity(slots, free_cpus, free_mb / 1024, where, problem)
