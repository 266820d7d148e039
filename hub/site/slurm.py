"""The site file's ``slurm`` section: how the hub reaches Slurm (``local`` commands or
``rest``), its partitions, polling and orphan handling. Checks: partition names are unique."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from factoryhub.hub.site.problems import Problem, at, names, unique_names


@dataclass(frozen=True)
class Partition:
    name: str
    description: str


@dataclass(frozen=True)
class SlurmSettings:
    access: str
    job_name_prefix: str
    partitions: tuple[Partition, ...]
    manage_associations: bool
    poll_interval: float
    orphan_grace: int
    # slurm.rest with its defaults (url, api_version, key_file, token_lifetime, home,
    # query_user, timeout); {} unless access is "rest"
    rest: dict[str, Any]


def build_slurm(d: Mapping[str, Any]) -> SlurmSettings:
    return SlurmSettings(
        access=d["access"],
        job_name_prefix=d["job_name_prefix"],
        partitions=tuple(
            Partition(name=p["name"], description=p["description"]) for p in d["partitions"]
        ),
        manage_associations=d["manage_associations"],
        poll_interval=float(d["poll_interval"]),
        orphan_grace=int(d["orphan_grace"]),
        rest=dict(d.get("rest") or {}),
    )


def declared_partitions(data: Any) -> list[str] | None:
    """The partition names of ``slurm.partitions`` (None when it is no list)."""
    partitions = at(data, "slurm", "partitions")
    return names(partitions) if isinstance(partitions, list) else None


def slurm_problems(data: Any) -> list[Problem]:
    return unique_names(at(data, "slurm", "partitions"), "slurm.partitions", "partition")
