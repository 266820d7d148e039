"""Projects: who belongs (by IdP group), which Slurm account pays, which profiles they may
use, and their limits per member.

The site loader builds each :class:`Project` once from the site file's ``projects`` entry.
The spawner and the authenticator receive them through traitlets config as plain dicts,
written by :meth:`Project.to_config` and read back by :meth:`Project.from_config` (flat:
the entry's ``limits`` are top-level keys there, ``None`` for no limit).
"""

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
    groups: tuple[str, ...]
    profiles: tuple[str, ...]
    max_servers: int | None  # None: no limit
    max_gpus_per_user: int | None  # None: no limit

    @classmethod
    def from_site(cls, entry: Mapping[str, Any]) -> Project:
        """The project of a site file entry (defaults filled in)."""
        limits = entry["limits"]
        return cls.from_config(
            {
                **entry,
                "max_servers": limits.get("max_servers"),
                "max_gpus_per_user": limits.get("max_gpus_per_user"),
            }
        )

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Project:
        return cls(
            name=str(data["name"]),
            display_name=str(data["display_name"]),
            description=str(data["description"]),
            account=str(data["account"]),
            groups=tuple(data["groups"]),
            profiles=tuple(data["profiles"]),
            max_servers=data["max_servers"],
            max_gpus_per_user=data["max_gpus_per_user"],
        )

    def to_config(self) -> dict[str, Any]:
        """Plain, JSON-able dict handed to the spawner and authenticator through traitlets."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "account": self.account,
            "groups": list(self.groups),
            "profiles": list(self.profiles),
            "max_servers": self.max_servers,
            "max_gpus_per_user": self.max_gpus_per_user,
        }

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
    return tuple(p for p in projects if mine.intersection(p.groups))


@dataclass(frozen=True)
class Usage:
    """What the user already runs under a project (their other servers)."""

    servers: int = 0
    gpus: int = 0
