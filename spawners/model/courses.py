"""Courses as the spawner and the Courses service see them.

A course (from the site file's ``courses`` section, with its trainers' edits from the
course page applied) has trainers, participants (IdP groups and/or user names), the days it
is open (start to end, both included, in the hub's local time), the one profile its
participants get, the project whose Slurm account pays, an optional Slurm reservation and
its materials.

A participant's course server is the named server called like the course
(``/user/<name>/<course>/``): its resources are pinned, it opens only on the course's
days, and its jobs use the reservation. The JupyterHub group :func:`hub_group`
(``course:<name>``) holds the participants; the Courses service shares each participant's
course server (that one server only) with the course's trainers.

Participants consent: the site file's participants (users and groups) are in the course; a
person a trainer adds on the course page is *invited* and is in only once they accept
(``accepted_users``; ``declined_users`` said no). The answers are kept with the course's
edits, but no trainer can set them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

GROUP_PREFIX = "course:"
# What trainers may change from the course page (the rest is the site file's).
EDITABLE = ("participant_users", "start", "end", "reservation", "description")
# What the invited people answered (set by the Courses service for them, never by a trainer).
ANSWERS = ("accepted_users", "declined_users")


def hub_group(course: str) -> str:
    """The JupyterHub group holding a course's participants."""
    return f"{GROUP_PREFIX}{course}"


def course_of_group(group: str) -> str:
    return group[len(GROUP_PREFIX) :] if group.startswith(GROUP_PREFIX) else ""


@dataclass(frozen=True)
class Course:
    name: str
    display_name: str
    profile: str
    project: str
    account: str
    start: date
    end: date
    description: str
    trainer_users: tuple[str, ...]
    trainer_groups: tuple[str, ...]
    participant_users: tuple[str, ...]
    participant_groups: tuple[str, ...]
    reservation: str  # "": none
    # Where participants' servers read the materials from: the site's folder, or the
    # service's checkout of the git repository. "" when the course has none.
    materials_path: str
    materials_git: str
    materials_ref: str
    # The participant users the site file names (the rest of participant_users are invited);
    # None: participant_users as the course is made
    site_participant_users: tuple[str, ...] | None = None
    # The invited people's answers (kept with the trainers' edits; set for them only)
    accepted_users: tuple[str, ...] = ()
    declined_users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.site_participant_users is None:
            object.__setattr__(self, "site_participant_users", self.participant_users)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Course:
        """The course of a :meth:`to_config` dict."""
        return cls(
            name=str(data["name"]),
            display_name=str(data["display_name"]),
            description=str(data["description"]),
            profile=str(data["profile"]),
            project=str(data["project"]),
            account=str(data["account"]),
            start=_day(data["start"]),
            end=_day(data["end"]),
            trainer_users=tuple(data["trainer_users"]),
            trainer_groups=tuple(data["trainer_groups"]),
            participant_users=tuple(data["participant_users"]),
            participant_groups=tuple(data["participant_groups"]),
            reservation=str(data["reservation"]),
            materials_path=str(data["materials_path"]),
            materials_git=str(data["materials_git"]),
            materials_ref=str(data["materials_ref"]),
            site_participant_users=tuple(data["site_participant_users"]),
            accepted_users=tuple(data["accepted_users"]),
            declined_users=tuple(data["declined_users"]),
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "profile": self.profile,
            "project": self.project,
            "account": self.account,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "trainer_users": list(self.trainer_users),
            "trainer_groups": list(self.trainer_groups),
            "participant_users": list(self.participant_users),
            "participant_groups": list(self.participant_groups),
            "reservation": self.reservation,
            "materials_path": self.materials_path,
            "materials_git": self.materials_git,
            "materials_ref": self.materials_ref,
            "site_participant_users": list(self.site_participant_users or ()),
            "accepted_users": list(self.accepted_users),
            "declined_users": list(self.declined_users),
        }

    # ------------------------------------------------------------------ who

    def is_participant(self, username: str, groups: Iterable[str]) -> bool:
        """In the course: by the site file (a user or group it names), or invited by a
        trainer and accepted."""
        if set(groups).intersection(self.participant_groups):
            return True
        if username not in self.participant_users:
            return False
        return username in (self.site_participant_users or ()) or username in self.accepted_users

    def invitation(self, username: str, groups: Iterable[str]) -> str:
        """'invited' (waiting for their answer), 'declined', or '' (not invited, or in)."""
        if username not in self.participant_users or self.is_participant(username, groups):
            return ""
        return "declined" if username in self.declined_users else "invited"

    def is_trainer(self, username: str, groups: Iterable[str]) -> bool:
        return username in self.trainer_users or bool(set(groups).intersection(self.trainer_groups))

    # ------------------------------------------------------------------ when

    def opens_at(self) -> datetime:
        return datetime.combine(self.start, datetime.min.time()).astimezone()

    def closes_at(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time()).astimezone()

    def is_open(self, now: datetime | None = None) -> bool:
        now = now or datetime.now().astimezone()
        return self.opens_at() <= now < self.closes_at()

    def when_text(self) -> str:
        if self.start == self.end:
            return f"on {self.start:%A %d %B %Y}"
        return f"from {self.start:%d %B %Y} to {self.end:%d %B %Y}"

    def closed_message(self, now: datetime | None = None) -> str:
        """Why the course is not open now, and what to do ('' when it is open)."""
        now = now or datetime.now().astimezone()
        if now < self.opens_at():
            return (
                f"The course {self.display_name} opens on {self.start:%d %B %Y} (it runs "
                f"{self.when_text()}). Your course server can be started from then on."
            )
        if now >= self.closes_at():
            return (
                f"The course {self.display_name} ended on {self.end:%d %B %Y}, so its servers "
                "are closed. Your notebooks stay in your home; ask your trainer if you need "
                "more time."
            )
        return ""

    # ------------------------------------------------------------------ edits

    def with_edits(self, edits: Mapping[str, Any] | None) -> Course:
        """This course with its trainers' edits (only the keys in EDITABLE) applied."""
        if not edits:
            return self
        changes: dict[str, Any] = {}
        for key in EDITABLE:
            if key not in edits:
                continue
            value = edits[key]
            if key in ("start", "end"):
                changes[key] = _day(value)
            elif key == "participant_users":
                changes[key] = tuple(value)
            else:
                changes[key] = str(value)
        for key in ANSWERS:
            if key in edits:
                changes[key] = tuple(str(v) for v in edits[key])
        return replace(self, **changes)


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def load_courses(
    configs: Sequence[Mapping[str, Any]], edits: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[Course, ...]:
    """The courses of :meth:`Course.to_config` dicts, each with its edits applied."""
    return apply_edits(tuple(Course.from_config(c) for c in configs), edits)


def apply_edits(
    courses: Iterable[Course], edits: Mapping[str, Mapping[str, Any]] | None
) -> tuple[Course, ...]:
    """``courses``, each with its trainers' edits (by course name) applied."""
    edits = edits or {}
    return tuple(c.with_edits(edits.get(c.name)) for c in courses)


def course_named(courses: Iterable[Course], name: str) -> Course | None:
    for course in courses:
        if course.name == name:
            return course
    return None


def course_groups(courses: Iterable[Course], username: str, groups: Iterable[str]) -> set[str]:
    """The hub groups of the courses ``username`` takes part in (for group sync at sign-in)."""
    mine = set(groups)
    return {hub_group(c.name) for c in courses if c.is_participant(username, mine)}
