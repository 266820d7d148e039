"""The typed view of a validated site file: frozen dataclasses, nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from factoryhub.hub.site.courses import CoursesSettings
from factoryhub.hub.site.dask import DaskSettings
from factoryhub.hub.site.reports import ReportsSettings


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
    external_proxy: bool = False
    services_host: str = "127.0.0.1"


@dataclass(frozen=True)
class LocalAuth:
    group: str
    admin_users: tuple[str, ...]


@dataclass(frozen=True)
class OidcAuth:
    issuer: str
    client_id: str
    client_secret_file: str
    client_secret_env: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    jwks_url: str
    scopes: tuple[str, ...]
    username_claim: str
    groups_claim: str
    admin_groups: tuple[str, ...]


@dataclass(frozen=True)
class UnixUsers:
    create: bool = False
    shell: str = "/bin/bash"
    min_uid: int = 1000
    reserved_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    name: str
    display_name: str
    description: str
    account: str
    groups: tuple[str, ...]
    profiles: tuple[str, ...]
    max_servers: int | None = None
    max_gpus_per_user: int | None = None

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


@dataclass(frozen=True)
class AuthSettings:
    type: str
    local: LocalAuth | None
    oidc: OidcAuth | None = None
    unix_users: UnixUsers = UnixUsers()


@dataclass(frozen=True)
class Partition:
    name: str
    description: str


@dataclass(frozen=True)
class SlurmSettings:
    access: str
    job_name_prefix: str
    partitions: tuple[Partition, ...]
    manage_associations: bool = False
    poll_interval: float = 1.0
    orphan_grace: int = 120
    # slurm.rest (url, api_version, key_file, token_lifetime, home, query_user, timeout)
    rest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpawnerSettings:
    python_env: str
    log_dir: str
    start_timeout: int
    # command, binds, python_env of profiles' images (spawners.apptainer.ApptainerSettings)
    apptainer: dict[str, Any] = field(default_factory=dict)
    # node name -> the address the hub reaches it by (spawners.ready_address)
    node_addresses: dict[str, str] = field(default_factory=dict)

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
    image: str = ""

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
            "image": self.image,
        }


@dataclass(frozen=True)
class IdleCuller:
    """jupyterhub-idle-culler: stop servers idle for ``timeout`` seconds, checked ``every`` s."""

    enabled: bool = True
    timeout: int = 3600
    every: int = 300


@dataclass(frozen=True)
class Site:
    hub: HubSettings
    auth: AuthSettings
    slurm: SlurmSettings
    spawner: SpawnerSettings
    profiles: tuple[Profile, ...]
    # The site file as a plain dict, with the defaults of omitted keys filled in.
    raw: dict[str, Any]
    projects: tuple[Project, ...] = ()
    idle_culler: IdleCuller = IdleCuller()
    dask: DaskSettings = field(default_factory=DaskSettings)
    reports: ReportsSettings = field(default_factory=ReportsSettings)
    courses: CoursesSettings = field(default_factory=CoursesSettings)

    def project(self, name: str) -> Project:
        """The project called ``name`` (KeyError if there is none)."""
        for p in self.projects:
            if p.name == name:
                return p
        raise KeyError(name)

    def profile(self, name: str) -> Profile:
        """The profile called ``name`` (KeyError if there is none)."""
        for p in self.profiles:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------- public functions
