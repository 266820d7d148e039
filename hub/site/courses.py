"""The site file's ``courses`` section: the Courses service's settings and the courses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath
from typing import Any

from factoryhub.hub.site.problems import Problem, at
from factoryhub.hub.site.profiles import profile_names
from factoryhub.hub.site.projects import project_names
from factoryhub.spawners.model.courses import Course
from factoryhub.spawners.model.users import fill_user_template


@dataclass(frozen=True)
class CoursesSettings:
    enabled: bool
    port: int
    folder: str
    collect_dir: str
    materials_cache: str
    start_timeout: int
    courses: tuple[Course, ...]

    @property
    def active(self) -> bool:
        """The service runs: enabled, and there is at least one course."""
        return self.enabled and bool(self.courses)

    def folder_for(self, home: str, username: str, course: str) -> str:
        base = fill_user_template(self.folder, username=username, home=home)
        return str(PurePosixPath(base) / course)

    def collect_dir_for(self, home: str, username: str) -> str:
        return fill_user_template(self.collect_dir, username=username, home=home)


def build_courses(d: Mapping[str, Any], accounts: Mapping[str, str]) -> CoursesSettings:
    """``accounts``: the Slurm account of each project, by project name."""
    cache = str(d["materials_cache"])
    return CoursesSettings(
        enabled=bool(d["enabled"]),
        port=int(d["port"]),
        folder=str(d["folder"]),
        collect_dir=str(d["collect_dir"]),
        materials_cache=cache,
        start_timeout=int(d["start_timeout"]),
        courses=tuple(build_course(c, accounts[c["project"]], cache) for c in d["list"]),
    )


def build_course(c: Mapping[str, Any], account: str, cache: str) -> Course:
    """The course of a site file entry; ``account`` pays (its project's), git materials are
    read from the service's checkout under ``cache``."""
    materials = c["materials"]
    return Course(
        name=c["name"],
        display_name=c["display_name"],
        description=c["description"],
        profile=c["profile"],
        project=c["project"],
        account=account,
        start=date.fromisoformat(c["start"]),
        end=date.fromisoformat(c["end"]),
        trainer_users=tuple(c["trainers"]["users"]),
        trainer_groups=tuple(c["trainers"]["groups"]),
        participant_users=tuple(c["participants"]["users"]),
        participant_groups=tuple(c["participants"]["groups"]),
        reservation=c["reservation"],
        materials_path=_materials_path(materials, cache, c["name"]),
        materials_git=str(materials.get("git") or ""),
        materials_ref=str(materials["ref"]),
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


def courses_problems(data: Any) -> list[Problem]:
    """What the schema cannot check in ``courses.list``: unique names, the profile and project
    are declared, real days in order, someone on each side, one source of materials."""
    courses = at(data, "courses", "list")
    if not isinstance(courses, list):
        return []
    profiles, projects = profile_names(data), project_names(data)
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, course in enumerate(courses):
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
        problems += _declared(course, here, profiles, projects)
        problems += _days(course, here)
        for key in ("trainers", "participants"):
            who = course.get(key)
            if isinstance(who, Mapping) and not who.get("users") and not who.get("groups"):
                problems.append((f"{here}.{key}", "expected at least one of users and groups"))
        problems += _materials(course.get("materials"), here)
    return [Problem(path, msg) for path, msg in problems]


def _declared(
    course: Mapping[str, Any], here: str, profiles: list[str], projects: list[str]
) -> list[tuple[str, str]]:
    out = []
    for key, known, what in (("profile", profiles, "profiles"), ("project", projects, "projects")):
        value = course.get(key)
        if isinstance(value, str) and value not in known:
            out.append(
                (
                    f"{here}.{key}",
                    f"expected one of the {what} declared in {what} "
                    f"({', '.join(known) or 'none'}), got '{value}'",
                )
            )
    return out


def _days(course: Mapping[str, Any], here: str) -> list[tuple[str, str]]:
    out = []
    days: dict[str, date] = {}
    for key in ("start", "end"):
        value = course.get(key)
        if isinstance(value, str):
            try:
                days[key] = date.fromisoformat(value)
            except ValueError:
                out.append((f"{here}.{key}", f"'{value}' is not a day of the calendar"))
    if len(days) == 2 and days["end"] < days["start"]:
        out.append(
            (f"{here}.end", f"the course ends ({days['end']}) before it starts ({days['start']})")
        )
    return out


def _materials(materials: Any, here: str) -> list[tuple[str, str]]:
    if not isinstance(materials, Mapping):
        return []
    out = []
    given = [k for k in ("builtin", "path", "git") if k in materials]
    if len(given) > 1:
        out.append(
            (f"{here}.materials", f"give one of builtin, path and git, not {' and '.join(given)}")
        )
    builtin = materials.get("builtin")
    if isinstance(builtin, str) and builtin not in builtin_courses():
        out.append(
            (
                f"{here}.materials.builtin",
                f"expected one of the built-in courses "
                f"({', '.join(builtin_courses()) or 'none'}), got '{builtin}'",
            )
        )
    if "ref" in materials and "git" not in materials:
        out.append((f"{here}.materials.ref", "a ref needs git (a repository)"))
    return out
