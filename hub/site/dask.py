"""The site file's ``dask`` section: what a user's ``SLURMCluster()`` gets without arguments.

Worker settings resolve in three layers, later ones winning: the built-in defaults, the
section's ``worker``, then ``profiles.<name>`` for the profile of the user's server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from factoryhub.hub.site.problems import Problem
from factoryhub.hub.site.profiles import profile_names
from factoryhub.hub.site.slurm import declared_partitions

# The base layer of a worker's settings (the schema cannot hold it: its daskWorker keys left
# out of dask.profiles[].worker must keep dask.worker's values, not take a default).
BUILT_IN_WORKER: dict[str, Any] = {
    "cores": 1,
    "memory_gb": 2,
    "processes": 1,
    "walltime": "01:00:00",
}


@dataclass(frozen=True)
class DaskSettings:
    enabled: bool
    interface: str  # "": the interface the server reaches the hub by
    death_timeout: int
    worker: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]  # profile name -> its worker settings

    def worker_for(self, profile: str, server_partition: str) -> dict[str, Any]:
        """The worker job settings for a server of ``profile`` (partition included)."""
        resolved = {"partition": server_partition, **BUILT_IN_WORKER}
        resolved.update(self.worker)
        resolved.update(self.profiles.get(profile, {}))
        return resolved

    def to_config(self, profiles: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Per profile name (``profiles`` maps it to the server's partition): the settings
        handed to the spawner, interface and death timeout included. Empty when disabled."""
        if not self.enabled:
            return {}
        return {
            name: {
                **self.worker_for(name, partition),
                "interface": self.interface,
                "death_timeout": self.death_timeout,
            }
            for name, partition in profiles.items()
        }


def build_dask(d: Mapping[str, Any]) -> DaskSettings:
    return DaskSettings(
        enabled=bool(d["enabled"]),
        interface=str(d["interface"]),
        death_timeout=int(d["death_timeout"]),
        worker=dict(d["worker"]),
        profiles={e["profile"]: dict(e["worker"]) for e in d["profiles"]},
    )


def dask_problems(data: Any) -> list[Problem]:
    """What the schema cannot check in ``dask``: names that must exist elsewhere in the site
    file, and at most one process per core."""
    dask = data.get("dask") if isinstance(data, Mapping) else None
    problems = _dask_problems(dask, declared_partitions(data) or [], profile_names(data))
    return [Problem(path, msg) for path, msg in problems]


def _dask_problems(dask: Any, partitions: list[str], profiles: list[str]) -> list[tuple[str, str]]:
    """(key path, message) for what the schema cannot check: names that must exist elsewhere
    in the site file, and at most one process per core. Defensive: ``dask`` may be invalid."""
    if not isinstance(dask, Mapping):
        return []
    problems: list[tuple[str, str]] = []
    sections: list[tuple[str, Any]] = [("dask.worker", dask.get("worker"))]
    entries = dask.get("profiles")
    seen: set[str] = set()
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, Mapping):
            continue
        name, where = entry.get("profile"), f"dask.profiles[{i}]"
        if isinstance(name, str) and profiles and name not in profiles:
            known = ", ".join(profiles)
            problems.append(
                (
                    f"{where}.profile",
                    f"expected one of the profiles declared in profiles ({known}), got '{name}'",
                )
            )
        elif isinstance(name, str) and name in seen:
            problems.append((f"{where}.profile", f"profile '{name}' is listed twice"))
        if isinstance(name, str):
            seen.add(name)
        sections.append((f"{where}.worker", entry.get("worker")))
    for where, section in sections:
        if not isinstance(section, Mapping):
            continue
        part = section.get("partition")
        if isinstance(part, str) and partitions and part not in partitions:
            known = ", ".join(partitions)
            problems.append(
                (
                    f"{where}.partition",
                    f"expected one of the partitions declared in slurm.partitions ({known}), "
                    f"got '{part}'",
                )
            )
        cores, procs = section.get("cores"), section.get("processes")
        if isinstance(cores, int) and isinstance(procs, int) and procs > cores:
            problems.append(
                (f"{where}.processes", f"expected at most cores ({cores}) processes, got {procs}")
            )
    return problems
