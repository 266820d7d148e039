"""Resource profiles as the spawner sees them.

The hub validates the site file and hands each profile to the spawner as a plain
dict through traitlets config (``FactorySlurmSpawner.profiles``); this module turns
those dicts into typed, immutable objects and decides who may use which.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TIME = re.compile(
    r"^(?:(?P<d>[0-9]{1,3})-)?(?P<h>[0-9]{1,3}):(?P<m>[0-5][0-9])(?::(?P<s>[0-5][0-9]))?$"
)


def parse_walltime(value: str) -> int:
    """Seconds in a Slurm time string: ``HH:MM``, ``HH:MM:SS`` or ``D-HH:MM[:SS]``."""
    match = _TIME.fullmatch(value)
    if not match:
        raise ValueError(f"not a time of the form HH:MM:SS or D-HH:MM:SS: {value!r}")
    days = int(match["d"] or 0)
    hours, minutes, seconds = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if match["d"] is not None and hours > 23:
        raise ValueError(f"hours must be below 24 when days are given: {value!r}")
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_walltime(seconds: int) -> str:
    """The Slurm time string ``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def human_walltime(seconds: int) -> str:
    """``8 h``, ``1 day``, ``1 day 12 h``, ``30 min``: for people, not for Slurm."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = []
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    return " ".join(parts) or f"{seconds} s"


@dataclass(frozen=True)
class IntRange:
    default: int
    min: int
    max: int

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, fallback: int = 0) -> IntRange:
        if not data:
            return cls(fallback, fallback, fallback)
        default = int(data.get("default", data.get("min", fallback)))
        return cls(default, int(data.get("min", default)), int(data.get("max", default)))


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str
    partition: str
    cpus: int
    memory_gb: IntRange
    gpus: IntRange
    walltime_default: int
    walltime_max: int
    allowed_groups: frozenset[str]
    allowed_users: frozenset[str]
    image: str = ""  # run the server in this container image (Apptainer); "" = no image

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Profile:
        walltime = data.get("walltime") or {}
        return cls(
            name=str(data["name"]),
            display_name=str(data.get("display_name") or data["name"]),
            description=str(data.get("description", "")),
            partition=str(data["partition"]),
            cpus=int(data.get("cpus", 1)),
            memory_gb=IntRange.from_config(data.get("memory_gb"), fallback=1),
            gpus=IntRange.from_config(data.get("gpus"), fallback=0),
            walltime_default=parse_walltime(str(walltime.get("default", "01:00:00"))),
            walltime_max=parse_walltime(
                str(walltime.get("max", walltime.get("default", "01:00:00")))
            ),
            allowed_groups=frozenset(data.get("allowed_groups") or ()),
            allowed_users=frozenset(data.get("allowed_users") or ()),
            image=str(data.get("image") or ""),
        )

    def allows(self, username: str, groups: Iterable[str]) -> bool:
        if not self.allowed_groups and not self.allowed_users:
            return True
        return username in self.allowed_users or bool(self.allowed_groups.intersection(groups))

    def to_form(self) -> dict[str, Any]:
        """What the options form needs to show this profile (JSON-able)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_gb": vars(self.memory_gb),
            "gpus": vars(self.gpus),
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
