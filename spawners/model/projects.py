"""Projects as the spawner sees them: who belongs (by group), which Slurm account pays,
which profiles they may use, and their limits. Set from the site file through traitlets
config (``FactorySlurmSpawner.projects``) as plain dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Project:
    name: str
    display_name: str
    description: str
    account: str
    groups: frozenset[str]
    profiles: tuple[str, ...]
    max_servers: int | None = None
    max_gpus_per_user: int | None = None

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Project:
        return cls(
            name=str(data["name"]),
            display_name=str(data.get("display_name") or data["name"]),
            description=str(data.get("description", "")),
            account=str(data["account"]),
            groups=frozenset(data.get("groups") or ()),
            profiles=tuple(data.get("profiles") or ()),
            max_servers=data.get("max_servers"),
            max_gpus_per_user=data.get("max_gpus_per_user"),
        )

    def to_form(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "account": self.account,
            "profiles": list(self.profiles),
            "max_gpus_per_user": self.max_gpus_per_user,
        }


def load_projects(configs: Sequence[Mapping[str, Any]]) -> tuple[Project, ...]:
    return tuple(Project.from_config(c) for c in configs)


def projects_for(projects: Iterable[Project], groups: Iterable[str]) -> tuple[Project, ...]:
    """The projects whose groups the user is in, in site-file order."""
    mine = frozenset(groups)
    return tuple(p for p in projects if p.groups & mine)


@dataclass(frozen=True)
class Usage:
    """What the user already runs under a project (their other servers)."""

    servers: int = 0
    gpus: int = 0
