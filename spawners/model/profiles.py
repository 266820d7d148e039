"""Resource profiles: what a user may choose when they start a server, and who may choose it.

The site loader builds each :class:`Profile` once from the site file's ``profiles`` entry
(with the schema's defaults filled in). The spawner receives them through traitlets config
as plain dicts: :meth:`Profile.to_config` writes that dict, :meth:`Profile.from_config`
reads it back; it is the site file's entry itself, so neither side knows any default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryhub.spawners.model.slurm_units import (
    format_walltime,
    human_walltime,
    parse_walltime,
    walltime_seconds,
)

__all__ = [
    "IntRange",
    "Profile",
    "format_walltime",
    "human_walltime",
    "load_profiles",
    "parse_walltime",
    "profiles_for",
]


@dataclass(frozen=True)
class IntRange:
    """An integer the user may choose: ``min <= default <= max``; ``min == max`` = no choice."""

    default: int
    min: int
    max: int

    @property
    def fixed(self) -> bool:
        """True when the user has no choice."""
        return self.min == self.max

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> IntRange:
        return cls(default=int(data["default"]), min=int(data["min"]), max=int(data["max"]))

    def to_config(self) -> dict[str, int]:
        return {"default": self.default, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class Profile:
    """One choice on the spawn page. Walltimes are seconds; ``image`` "" runs the server in
    the nodes' Python environment; no allowed groups and users = everyone may use it."""

    name: str
    display_name: str
    description: str
    partition: str
    cpus: int
    memory_gb: IntRange
    gpus: IntRange
    walltime_default: int
    walltime_max: int
    allowed_groups: tuple[str, ...]
    allowed_users: tuple[str, ...]
    image: str

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Profile:
        """The profile of a site file entry (defaults filled in). ``allowed_groups``,
        ``allowed_users`` and ``image`` have no default: absent means not restricted and no
        image."""
        return cls(
            name=str(data["name"]),
            display_name=str(data["display_name"]),
            description=str(data["description"]),
            partition=str(data["partition"]),
            cpus=int(data["cpus"]),
            memory_gb=IntRange.from_config(data["memory_gb"]),
            gpus=IntRange.from_config(data["gpus"]),
            walltime_default=walltime_seconds(data["walltime"]["default"]),
            walltime_max=walltime_seconds(data["walltime"]["max"]),
            allowed_groups=tuple(data.get("allowed_groups") or ()),
            allowed_users=tuple(data.get("allowed_users") or ()),
            image=str(data.get("image") or ""),
        )

    def to_config(self) -> dict[str, Any]:
        """A plain JSON-able dict (what the hub hands the spawner through traitlets config)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_gb": self.memory_gb.to_config(),
            "gpus": self.gpus.to_config(),
            "walltime": {
                "default": format_walltime(self.walltime_default),
                "max": format_walltime(self.walltime_max),
            },
            "allowed_groups": list(self.allowed_groups),
            "allowed_users": list(self.allowed_users),
            "image": self.image,
        }

    @property
    def restricted(self) -> bool:
        """True when only the listed groups/users may use the profile."""
        return bool(self.allowed_groups or self.allowed_users)

    def allows(self, username: str, groups: Iterable[str] = ()) -> bool:
        """Whether ``username`` (member of ``groups``) may use the profile."""
        if not self.restricted:
            return True
        return username in self.allowed_users or any(g in self.allowed_groups for g in groups)

    def to_form(self) -> dict[str, Any]:
        """What the options form needs to show this profile (JSON-able)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_gb": self.memory_gb.to_config(),
            "gpus": self.gpus.to_config(),
            "walltime_default": format_walltime(self.walltime_default),
            "walltime_max": format_walltime(self.walltime_max),
            "walltime_max_human": human_walltime(self.walltime_max),
        }


def load_profiles(configs: Sequence[Mapping[str, Any]]) -> tuple[Profile, ...]:
    return tuple(Profile.from_config(c) for c in configs)


def profiles_for(
    profiles: Iterable[Profile], username: str, groups: Iterable[str]
) -> tuple[Profile, ...]:
    """The profiles this user may use, in site-file order."""
    groups = frozenset(groups)
    return tuple(p for p in profiles if p.allows(username, groups))
