"""The typed view of a validated site file: frozen dataclasses, nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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

    def to_config(self) -> dict[str, int]:
        return {"default": self.default, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class HubSettings:
    public_url: str
    state_dir: str
    keep_servers_on_restart: bool
    api_url: str = "http://127.0.0.1:8081"
    connect_url: str = ""
    proxy_api_url: str = "http://127.0.0.1:8001"


@dataclass(frozen=True)
class LocalAuth:
    group: str
    admin_users: tuple[str, ...]


@dataclass(frozen=True)
class AuthSettings:
    type: str
    local: LocalAuth | None


@dataclass(frozen=True)
class Partition:
    name: str
    description: str


@dataclass(frozen=True)
class SlurmSettings:
    access: str
    job_name_prefix: str
    partitions: tuple[Partition, ...]


@dataclass(frozen=True)
class SpawnerSettings:
    python_env: str
    log_dir: str
    start_timeout: int

    def log_dir_for(self, home: str, username: str) -> str:
        """``log_dir`` with ``{home}`` and ``{username}`` filled in."""
        return self.log_dir.replace("{home}", home).replace("{username}", username)


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str
    partition: str
    cpus: int
    memory_gb: IntRange
    gpus: IntRange
    walltime_default: str
    walltime_max: str
    allowed_groups: tuple[str, ...]
    allowed_users: tuple[str, ...]

    @property
    def restricted(self) -> bool:
        """True when only the listed groups/users may use the profile."""
        return bool(self.allowed_groups or self.allowed_users)

    def allows(self, username: str, groups: Iterable[str] = ()) -> bool:
        """Whether ``username`` (member of ``groups``) may use the profile."""
        if not self.restricted:
            return True
        return username in self.allowed_users or any(g in self.allowed_groups for g in groups)

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
            "walltime": {"default": self.walltime_default, "max": self.walltime_max},
            "allowed_groups": list(self.allowed_groups),
            "allowed_users": list(self.allowed_users),
        }


@dataclass(frozen=True)
class Site:
    hub: HubSettings
    auth: AuthSettings
    slurm: SlurmSettings
    spawner: SpawnerSettings
    profiles: tuple[Profile, ...]
    # The site file as a plain dict, with the defaults of omitted keys filled in.
    raw: dict[str, Any]

    def profile(self, name: str) -> Profile:
        """The profile called ``name`` (KeyError if there is none)."""
        for p in self.profiles:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------- public functions
