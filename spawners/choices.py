"""What a user may ask their server for: the options form and its server-side check.

The spawner's part that JupyterHub's options API calls (``options_form``,
``run_options_from_form``, ``apply_user_options``): the form shows only the profiles the
user's projects may use; whatever arrives (the form, or a REST API post that skipped it) is
checked by :mod:`factoryhub.spawners.options`, and only the checked request becomes the
spawn's ``req_*`` values (:func:`factoryhub.spawners.contract.req_values`). A course server
(a named server called like a course) is pinned to its course instead.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web
from traitlets import Dict, Instance, List

from factoryhub.spawners.contract import req_values
from factoryhub.spawners.courses.servers import CourseServers
from factoryhub.spawners.model.courses import Course
from factoryhub.spawners.model.profiles import Profile, load_profiles, profiles_for
from factoryhub.spawners.model.projects import Project, Usage, load_projects, projects_for
from factoryhub.spawners.options import (
    JobRequest,
    OptionsError,
    validate_course_options,
    validate_options,
)

_form_env = Environment(
    loader=PackageLoader("factoryhub.spawners", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def unix_groups(username: str) -> set[str]:
    """The Unix groups of ``username`` in this host's databases (the "local" access mode
    only: the hub is then a submit host); empty when this host does not know the user."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return set()
    names: set[str] = set()
    for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


class ServerChoices(CourseServers):
    """Mixed into the Slurm spawner (which provides ``user``, ``name``, ``orm_spawner``,
    ``active`` and the ``req_*`` traits)."""

    orm_spawner: Any  # JupyterHub's Spawner's
    slurm_access: str  # the spawner's: "local" or "rest"

    profiles = List(
        Dict(),
        help="""Resource profiles users choose from (set from the site file).

        Each is a dict with name, display_name, description, partition, cpus,
        memory_gb {default,min,max}, gpus {default,min,max}, walltime {default,max},
        allowed_groups, allowed_users.
        """,
    ).tag(config=True)

    projects = List(
        Dict(),
        help="""Projects (set from the site file): name, display_name, description, account,
        groups, profiles, max_servers, max_gpus_per_user. Empty: no projects, no --account.
        A user belongs to a project when one of their groups (JupyterHub groups, synced from
        the identity provider, or Unix groups in the "local" access mode) is among the
        project's groups.
        """,
    ).tag(config=True)

    job_request = Instance(
        JobRequest,
        allow_none=True,
        help="""The checked request of the last spawn (set by apply_user_options before each
        start; kept after the server ends, for the home page). None before the first.""",
    )

    job_course = Instance(
        Course,
        allow_none=True,
        help="""The course of the last spawn, as read when its request was checked (with the
        trainers' edits); None for servers that are not course servers.""",
    )

    def user_groups(self) -> set[str]:
        """The user's JupyterHub groups (the identity provider's, synced at sign-in) and, in
        the "local" access mode, their Unix groups where this host knows the user. In the
        "rest" mode this host's user and group databases are not the cluster's (the hub
        runs in a pod): the IdP's groups alone."""
        names = {g.name for g in self.user.groups}
        if self.slurm_access != "local":
            return names
        return names | unix_groups(self.user.name)

    def available_profiles(self) -> tuple[Profile, ...]:
        return profiles_for(load_profiles(self.profiles), self.user.name, self.user_groups())

    def user_projects(self) -> tuple[Project, ...] | None:
        """The user's projects; None when the site has no projects at all."""
        if not self.projects:
            return None
        return projects_for(load_projects(self.projects), self.user_groups())

    def project_usage(self) -> dict[str, Usage]:
        """Servers and GPUs the user holds per project, this server excepted."""
        usage: dict[str, Usage] = {}
        for spawner in self.user.spawners.values():
            if spawner is self or not spawner.active:
                continue
            options = spawner.user_options or {}
            project = options.get("project")
            if isinstance(project, str):
                used = usage.get(project, Usage())
                gpus = options.get("gpus")
                usage[project] = Usage(
                    used.servers + 1, used.gpus + (gpus if isinstance(gpus, int) else 0)
                )
        return usage

    def validate_user_options(self, raw: Any) -> JobRequest:
        """The checked request; also keeps the server's course (``job_course``, None for
        other servers) as it was read for the check."""
        course = self.job_course = self.course()
        if course is not None:
            groups = self.user_groups()
            member = course.is_participant(self.user.name, groups) or course.is_trainer(
                self.user.name, groups
            )
            profile = next(
                (p for p in load_profiles(self.profiles) if p.name == course.profile), None
            )
            return validate_course_options(raw, course, profile, member)
        if self.name and self.courses:
            names = ", ".join(sorted(c["name"] for c in self.courses))
            raise OptionsError(
                "options",
                f"there is no course called {self.name!r} (courses: {names}). Named servers "
                "on this factory are course servers; use your default server for your own work",
            )
        return validate_options(
            raw, self.available_profiles(), self.user_projects(), self.project_usage()
        )

    def _render_options_form(self) -> str:
        if self.name and self.courses:
            return ""  # a course server: pinned, so the spawn starts at once (or says why not)
        profiles = [p.to_form() for p in self.available_profiles()]
        projects = self.user_projects()
        if projects is not None:
            usable = {name for p in projects for name in p.profiles}
            profiles = [p for p in profiles if p["name"] in usable]
        previous = self.orm_spawner.user_options if self.orm_spawner else None
        return _form_env.get_template("form.html.j2").render(
            profiles=profiles,
            projects=[p.to_form() for p in projects] if projects is not None else None,
            previous=previous or {},
        )

    def run_options_from_form(self, form_data: dict[str, list[str]]) -> dict[str, Any]:
        # Raised errors re-render the form with the message (JupyterHub's SpawnHandler).
        fields = {k: v for k, v in form_data.items() if k != "_xsrf"}
        return self.validate_user_options(fields).to_user_options()

    @staticmethod
    def _apply_user_options(spawner: ServerChoices, user_options: Any) -> None:
        """Validate the options (REST API posts skip the form) and set the req_* traits."""
        try:
            request = spawner.validate_user_options(user_options)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        spawner.job_request = request
        # job_course was read by validate_user_options just now
        for name, value in req_values(request, spawner.job_course).items():
            setattr(spawner, name, value)
