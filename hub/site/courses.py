"""The site file's ``courses`` section: the Courses service's settings and the courses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import PurePosixPath
from typing import Any

from factoryhub.spawners.model.courses import Course


@dataclass(frozen=True)
class CoursesSettings:
    enabled: bool = True
    port: int = 10102
    folder: str = "{home}/courses"
    collect_dir: str = "{home}/collected"
    materials_cache: str = "/var/lib/factoryhub/course-materials"
    start_timeout: int = 600
    courses: tuple[Course, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        """The service runs: enabled, and there is at least one course."""
        return self.enabled and bool(self.courses)

    def folder_for(self, home: str, username: str, course: str) -> str:
        base = self.folder.replace("{home}", home).replace("{username}", username)
        return str(PurePosixPath(base) / course)

    def collect_dir_for(self, home: str, username: str) -> str:
        return self.collect_dir.replace("{home}", home).replace("{username}", username)


def build_courses(d: Mapping[str, Any], accounts: Mapping[str, str]) -> CoursesSettings:
    """``accounts``: the Slurm account of each project, by project name."""
    cache = str(d.get("materials_cache", "/var/lib/factoryhub/course-materials"))
    courses = []
    for c in d.get("list") or ():
        materials = c.get("materials") or {}
        git = str(materials.get("git") or "")
        courses.append(
            Course(
                name=c["name"],
                display_name=c["display_name"],
                description=c.get("description", ""),
                profile=c["profile"],
                project=c["project"],
                account=accounts.get(c["project"], ""),
                start=date.fromisoformat(c["start"]),
                end=date.fromisoformat(c["end"]),
                trainer_users=tuple(c["trainers"].get("users") or ()),
                trainer_groups=tuple(c["trainers"].get("groups") or ()),
                participant_users=tuple(c["participants"].get("users") or ()),
                participant_groups=tuple(c["participants"].get("groups") or ()),
                reservation=c.get("reservation", ""),
                materials_path=_materials_path(materials, cache, c["name"]),
                materials_git=git,
                materials_ref=str(materials.get("ref") or ""),
            )
        )
    return CoursesSettings(
        enabled=bool(d.get("enabled", True)),
        port=int(d.get("port", 10102)),
        folder=str(d.get("folder", "{home}/courses")),
        collect_dir=str(d.get("collect_dir", "{home}/collected")),
        materials_cache=cache,
        start_timeout=int(d.get("start_timeout", 600)),
        courses=tuple(courses),
    )


def builtin_courses() -> list[str]:
    """The courses shipped in notebooks/courses (each a folder)."""
    try:
        from factoryhub.notebooks import templates_dir
    except ImportError:
        return []
    folder = templates_dir() / "courses"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _materials_path(materials: Mapping[str, Any], cache: str, course: str) -> str:
    if materials.get("git"):
        return str(PurePosixPath(cache) / course)
    if materials.get("builtin"):
        from factoryhub.notebooks import templates_dir

        return str(templates_dir() / "courses" / materials["builtin"])
    return str(materials.get("path") or "")


def courses_problems(
    courses: Any, profile_names: list[str], project_names: list[str]
) -> list[tuple[str, str]]:
    """(key path, message) for what the schema cannot check. Defensive: ``courses`` may be
    invalid."""
    if not isinstance(courses, Mapping) or not isinstance(courses.get("list"), list):
        return []
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, course in enumerate(courses["list"]):
        if not isinstance(course, Mapping):
            continue
        here = f"courses.list[{i}]"
        name = course.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    (f"{here}.name", f"'{name}' is already the name of courses.list[{seen[name]}]")
                )
            seen.setdefault(name, i)
        for key, known, what in (
            ("profile", profile_names, "profiles"),
            ("project", project_names, "projects"),
        ):
            value = course.get(key)
            if isinstance(value, str) and value not in known:
                problems.append(
                    (
                        f"{here}.{key}",
                        f"expected one of the {what} declared in {what} "
                        f"({', '.join(known) or 'none'}), got '{value}'",
                    )
                )
        days: dict[str, date] = {}
        for key in ("start", "end"):
            value = course.get(key)
            if isinstance(value, str):
                try:
                    days[key] = date.fromisoformat(value)
                except ValueError:
                    problems.append((f"{here}.{key}", f"'{value}' is not a day of the calendar"))
        if len(days) == 2 and days["end"] < days["start"]:
            problems.append(
                (
                    f"{here}.end",
                    f"the course ends ({days['end']}) before it starts ({days['start']})",
                )
            )
        for key in ("trainers", "participants"):
            who = course.get(key)
            if isinstance(who, Mapping) and not who.get("users") and not who.get("groups"):
                problems.append((f"{here}.{key}", "expected at least one of users and groups"))
        materials = course.get("materials")
        if isinstance(materials, Mapping):
            given = [k for k in ("builtin", "path", "git") if k in materials]
            if len(given) > 1:
                problems.append(
                    (
                        f"{here}.materials",
                        f"give one of builtin, path and git, not {' and '.join(given)}",
                    )
                )
            builtin = materials.get("builtin")
            if isinstance(builtin, str) and builtin not in builtin_courses():
                problems.append(
                    (
                        f"{here}.materials.builtin",
                        f"expected one of the built-in courses "
                        f"({', '.join(builtin_courses()) or 'none'}), got '{builtin}'",
                    )
                )
            if "ref" in materials and "git" not in materials:
                problems.append((f"{here}.materials.ref", "a ref needs git (a repository)"))
    return problems
