"""Server-side validation of what a user asks for in the spawn form or the REST API.

Nothing a user sends reaches a job script unless it passed here: the profile must be
one the user may use, numbers must be integers inside the profile's range, and the
walltime must be a well-formed Slurm time not above the profile's maximum. Anything
else (unknown keys, overlong values, control characters, shell or ``#SBATCH``
syntax) is refused with a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from factoryhub.spawners.model.courses import Course
from factoryhub.spawners.model.profiles import Profile
from factoryhub.spawners.model.projects import Project, Usage
from factoryhub.spawners.model.slurm_units import format_walltime, parse_walltime

FIELDS = ("project", "profile", "walltime", "memory_gb", "gpus")
MAX_VALUE_LENGTH = 64

LABELS = {
    "project": "Project",
    "profile": "Resource profile",
    "walltime": "Walltime",
    "memory_gb": "Memory (GB)",
    "gpus": "GPUs",
    "course": "Course",
}


class OptionsError(ValueError):
    """A value the user sent was refused. ``field`` names the form field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        label = LABELS.get(field, field)
        super().__init__(f"{label}: {message}")


@dataclass(frozen=True)
class JobRequest:
    """What will be asked of Slurm: only validated, normalised values."""

    profile: str
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    walltime_seconds: int
    project: str = ""
    account: str = ""

    @property
    def walltime(self) -> str:
        return format_walltime(self.walltime_seconds)

    def to_user_options(self) -> dict[str, Any]:
        """The normalised options, as stored in the hub database."""
        options: dict[str, Any] = {"project": self.project} if self.project else {}
        return options | {
            "profile": self.profile,
            "walltime": self.walltime,
            "memory_gb": self.memory_gb,
            "gpus": self.gpus,
        }


def _single(field: str, value: Any) -> str | None:
    """One scalar value as text; form data arrives as lists of strings."""
    if isinstance(value, list | tuple):
        if len(value) == 0:
            return None
        if len(value) > 1:
            raise OptionsError(field, "give one value, not several")
        value = value[0]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OptionsError(field, f"expected text or a whole number, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_VALUE_LENGTH:
        raise OptionsError(
            field, f"value too long ({len(text)} characters, at most {MAX_VALUE_LENGTH})"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise OptionsError(field, "control characters (such as line breaks) are not allowed")
    return text or None


def _integer(field: str, text: str | None, default: int, low: int, high: int, unit: str) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise OptionsError(field, f"expected a whole number between {low} and {high}, got {text!r}")
    number = int(text)
    if not low <= number <= high:
        if low == high:
            raise OptionsError(
                field, f"this profile has exactly {low}{unit}; you asked for {number}{unit}"
            )
        raise OptionsError(
            field, f"choose between {low} and {high}{unit}; you asked for {number}{unit}"
        )
    return number


def _choose_project(
    raw: Mapping[str, Any], projects: Sequence[Project], profiles: Sequence[Profile]
) -> tuple[Project, tuple[Profile, ...]]:
    if not projects:
        raise OptionsError(
            "project",
            "you are not a member of any project yet. Ask your project's lead or the "
            "factory's support to add you to a project's group, then sign in again",
        )
    name = _single("project", raw.get("project"))
    by_name = {p.name: p for p in projects}
    if name is None:
        project = projects[0]
    elif name in by_name:
        project = by_name[name]
    else:
        raise OptionsError(
            "project", f"{name!r} is not a project of yours (choose from {', '.join(by_name)})"
        )
    allowed = tuple(p for p in profiles if p.name in project.profiles)
    return project, allowed


def validate_options(
    raw: Mapping[str, Any] | None,
    profiles: Sequence[Profile],
    projects: Sequence[Project] | None = None,
    usage: Mapping[str, Usage] | None = None,
) -> JobRequest:
    """Check ``raw`` (form data or REST ``user_options``) against ``profiles``.

    ``profiles`` are the profiles *this user* may use. With ``projects`` (the user's
    projects; ``None`` when the site has none) the user also picks a project, which
    narrows the profiles, gives the Slurm account and applies the project's limits to
    what ``usage`` says the user already runs. Raises :class:`OptionsError`.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise OptionsError("options", "expected a set of named options")
    unknown = sorted(str(k)[:MAX_VALUE_LENGTH] for k in raw if k not in FIELDS)
    if unknown:
        raise OptionsError(
            "options",
            f"unknown option {', '.join(map(repr, unknown))} (allowed: {', '.join(FIELDS)})",
        )
    project: Project | None = None
    if projects is not None:
        project, profiles = _choose_project(raw, projects, profiles)
    elif _single("project", raw.get("project")) is not None:
        raise OptionsError("project", "this factory has no projects to choose from")
    profile = _choose_profile(raw, profiles)
    seconds = _walltime(_single("walltime", raw.get("walltime")), profile)
    memory = _integer(
        "memory_gb",
        _single("memory_gb", raw.get("memory_gb")),
        profile.memory_gb.default,
        profile.memory_gb.min,
        profile.memory_gb.max,
        " GB",
    )
    gpus = _integer(
        "gpus",
        _single("gpus", raw.get("gpus")),
        profile.gpus.default,
        profile.gpus.min,
        profile.gpus.max,
        " GPUs" if profile.gpus.max != 1 else " GPU",
    )
    if project is not None:
        _check_limits(project, (usage or {}).get(project.name, Usage()), gpus)
    return JobRequest(
        profile=profile.name,
        partition=profile.partition,
        cpus=profile.cpus,
        memory_gb=memory,
        gpus=gpus,
        walltime_seconds=seconds,
        project=project.name if project else "",
        account=project.account if project else "",
    )


def _choose_profile(raw: Mapping[str, Any], profiles: Sequence[Profile]) -> Profile:
    if not profiles:
        raise OptionsError(
            "profile", "no resource profile is open to you; ask your project's admin"
        )
    name = _single("profile", raw.get("profile"))
    by_name = {p.name: p for p in profiles}
    if name is None:
        return profiles[0]
    if name in by_name:
        return by_name[name]
    raise OptionsError(
        "profile", f"{name!r} is not a profile you may use (choose from {', '.join(by_name)})"
    )


def _walltime(text: str | None, profile: Profile) -> int:
    """Seconds of the walltime typed (the profile's default when none), within its max."""
    if text is None:
        return profile.walltime_default
    try:
        seconds = parse_walltime(text)
    except ValueError:
        raise OptionsError(
            "walltime", f"use hours:minutes (for example 02:00), got {text!r}"
        ) from None
    if seconds <= 0:
        raise OptionsError("walltime", "must be longer than zero")
    if seconds > profile.walltime_max:
        raise OptionsError(
            "walltime",
            f"at most {format_walltime(profile.walltime_max)} for {profile.display_name}; "
            f"you asked for {format_walltime(seconds)}",
        )
    return seconds


def _check_limits(project: Project, used: Usage, gpus: int) -> None:
    """The project's limits per member, with what the user already runs under it."""
    if project.max_servers is not None and used.servers >= project.max_servers:
        raise OptionsError(
            "project",
            f"{project.display_name} allows {project.max_servers} server(s) per member "
            f"at a time and you run {used.servers}; stop one first",
        )
    if project.max_gpus_per_user is not None and used.gpus + gpus > project.max_gpus_per_user:
        raise OptionsError(
            "gpus",
            f"{project.display_name} allows {project.max_gpus_per_user} GPU(s) per member "
            f"at a time; you hold {used.gpus} and asked for {gpus}",
        )


def validate_course_options(
    raw: Mapping[str, Any] | None,
    course: Course,
    profile: Profile | None,
    member: bool,
    now: datetime | None = None,
) -> JobRequest:
    """The pinned request of a course server: the course's profile with its defaults, the
    course project's account. Refused for non-members and outside the course's days. Options
    sent (through the API, or kept from an earlier spawn) are not used: a course server
    offers no choice."""
    if not member:
        raise OptionsError(
            "course",
            f"you are not a participant of the course {course.display_name}: ask its "
            "trainer to add you",
        )
    closed = course.closed_message(now)
    if closed:
        raise OptionsError("course", closed)
    if profile is None:
        raise OptionsError(
            "course", f"the course's profile {course.profile!r} does not exist; tell its trainer"
        )
    return JobRequest(
        profile=profile.name,
        partition=profile.partition,
        cpus=profile.cpus,
        memory_gb=profile.memory_gb.default,
        gpus=profile.gpus.default,
        walltime_seconds=profile.walltime_default,
        project=course.project,
        account=course.account,
    )
