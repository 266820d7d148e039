"""The site file's ``projects`` section: each entry becomes a
:class:`~factoryhub.spawners.model.projects.Project` (the one model of a project). Checks the
schema cannot express: names are unique and name only declared profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from factoryhub.hub.site.problems import Problem, at, entries, not_declared, show, unique_names
from factoryhub.hub.site.profiles import profile_names
from factoryhub.spawners.model.projects import Project


def build_projects(entries_: Sequence[Mapping[str, Any]]) -> tuple[Project, ...]:
    return tuple(Project.from_site(p) for p in entries_)


def projects_problems(data: Any) -> list[Problem]:
    projects = at(data, "projects")
    if not isinstance(projects, list):
        return []
    problems = unique_names(projects, "projects", "project")
    known = profile_names(data)
    for i, project in enumerate(projects):
        listed = project.get("profiles") if isinstance(project, Mapping) else None
        if not isinstance(listed, list):
            continue
        for j, name in enumerate(listed):
            if isinstance(name, str) and name not in known:
                problems.append(
                    not_declared(f"projects[{i}].profiles[{j}]", known, "profiles", show(name))
                )
    return problems


def project_names(data: Any) -> list[str]:
    """The names of the projects declared (for the checks of other sections)."""
    return [p["name"] for p in entries(at(data, "projects")) if isinstance(p.get("name"), str)]
