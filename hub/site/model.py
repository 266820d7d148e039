"""The typed view of a validated site file: one :class:`Site` holding each section's settings
(from the section's module) and the model objects (profiles, projects, courses) of the leaf
package :mod:`factoryhub.spawners.model`, built once by the loader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factoryhub.hub.site.auth import AuthSettings
from factoryhub.hub.site.courses import CoursesSettings
from factoryhub.hub.site.culler import IdleCuller
from factoryhub.hub.site.dask import DaskSettings
from factoryhub.hub.site.hub import HubSettings
from factoryhub.hub.site.reports import ReportsSettings
from factoryhub.hub.site.slurm import SlurmSettings
from factoryhub.hub.site.spawner import SpawnerSettings
from factoryhub.spawners.model.profiles import Profile
from factoryhub.spawners.model.projects import Project

__all__ = ["Profile", "Project", "Site"]


@dataclass(frozen=True)
class Site:
    hub: HubSettings
    auth: AuthSettings
    slurm: SlurmSettings
    spawner: SpawnerSettings
    profiles: tuple[Profile, ...]
    projects: tuple[Project, ...]  # (): no projects, no --account
    idle_culler: IdleCuller
    dask: DaskSettings
    reports: ReportsSettings
    courses: CoursesSettings
    # The site file as a plain dict, with the defaults of omitted keys filled in.
    raw: dict[str, Any]

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
