"""Course servers: the part of the spawner that knows about courses.

A named server called like a course is that course's server (see
:mod:`factoryhub.spawners.model.courses`): pinned resources, the course project's account (the
participant is added to it first, where the site manages associations), the course's
reservation, its materials synced into the participant's home by the server itself when it
starts (``FACTORYHUB_COURSE_*`` variables, read by ``factoryhub-singleuser``), and
JupyterLab opened in that folder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tornado import web
from traitlets import Bool, Dict, List, Unicode
from traitlets.config import LoggingConfigurable

from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import Course, course_named, load_courses
from factoryhub.spawners.model.users import fill_user_template
from factoryhub.spawners.slurm.accounts import AccountingError, ensure_user_in_account
from factoryhub.spawners.slurm.client import SlurmClient

COURSE_MATERIALS_VAR = "FACTORYHUB_COURSE_MATERIALS"
COURSE_FOLDER_VAR = "FACTORYHUB_COURSE_FOLDER"


class CourseServers(LoggingConfigurable):
    """Mixed into the Slurm spawner (which provides ``user``, ``name``, ``default_url``)."""

    # What the spawner provides (JupyterHub's Spawner; FactorySlurmSpawner's Slurm client).
    user: Any
    name: str
    slurm: SlurmClient

    courses = List(
        Dict(),
        help="""Courses (set from the site file; see factoryhub.spawners.model.courses.Course): a
        named server called like a course is that course's server, with the course's pinned
        profile, account and reservation, open to its participants on its days only.""",
    ).tag(config=True)

    courses_db = Unicode(
        "",
        help="The Courses service's database of trainers' edits (participants, days, "
        "reservation), read at every course spawn. Empty: the site file's courses as they are.",
    ).tag(config=True)

    course_folder = Unicode(
        "{home}/courses",
        help="Where a course's materials land in a participant's home: <folder>/<course>; "
        "{home} and {username} are filled in.",
    ).tag(config=True)

    manage_course_associations = Bool(
        False,
        help="Add a participant to the course project's Slurm account (sacctmgr) before "
        "their course server's job is submitted.",
    ).tag(config=True)

    def course(self) -> Course | None:
        """The course whose server this is (a named server called like a course), with its
        trainers' edits; None for every other server."""
        if not self.name or not self.courses:
            return None
        edits = CourseStore(self.courses_db).edits() if self.courses_db else {}
        return course_named(load_courses(self.courses, edits), self.name)

    def course_folder_path(self, course: Course) -> str:
        home = self.slurm.home(self.user.name)
        base = fill_user_template(self.course_folder, username=self.user.name, home=home)
        return str(Path(base) / course.name)

    def course_env(self, course: Course | None) -> dict[str, str]:
        """What tells the server to sync the course's materials, and where to."""
        if course is None or not course.materials_path:
            return {}
        return {
            COURSE_MATERIALS_VAR: course.materials_path,
            COURSE_FOLDER_VAR: self.course_folder_path(course),
        }

    def _open_course_folder(self, course: Course) -> None:
        """A course server opens JupyterLab in the course's folder (when it is in the home)."""
        if not course.materials_path:
            return
        home = Path(self.slurm.home(self.user.name))
        try:
            relative = Path(self.course_folder_path(course)).relative_to(home)
        except ValueError:
            return
        self.default_url = f"/lab/tree/{relative.as_posix()}"

    async def ensure_course_account(self, course: Course) -> None:
        if not (self.manage_course_associations and course.account):
            return
        try:
            await asyncio.to_thread(ensure_user_in_account, self.user.name, course.account)
        except AccountingError as e:
            self.log.error("Adding %s to %s failed: %s", self.user.name, course.account, e)
            raise web.HTTPError(
                503,
                f"The course {course.display_name} could not be set up on the cluster's "
                "accounting right now. Try again in a few minutes; if it persists, tell "
                "your trainer.",
            ) from None
