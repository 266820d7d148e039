"""Hub-managed services: the idle culler, the Reports service and the Courses service.

``idle_culler_settings`` returns the JupyterHub config fragment that runs
jupyterhub-idle-culler as a service of the hub (the hub starts it, hands it an API
token and stops it): the service, a role with only the scopes the culler needs, and
the single-user servers' activity interval. Culling stops a server through the hub's
API; the spawner then cancels its Slurm job, as on every stop. Users are never culled.

``reports_settings`` runs the Reports service (``factoryhub.hub.reports.service``) behind
the hub's login at /services/reports/: every user may reach it (the service itself decides,
from the site file's ``reports.access``, who may run, schedule and see which reports); its
own token may only read users (their groups and admin flag).

``courses_settings`` runs the Courses service (``factoryhub.hub.courses.service``) at
/services/courses/, with a token that may only read users and start, stop and group the
members of the course groups, and share each participant's course server with the course's
trainers (JupyterHub shares: one server each, revoked when the course ends or the person
leaves it); trainers hold no access scope of their own.

``merge_settings`` merges such a fragment into ``hub_settings``' result, extending the
lists (``services``, ``load_roles``) and dicts already there instead of replacing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factoryhub.hub.site.model import Site
from factoryhub.spawners.model.courses import hub_group

IDLE_CULLER_SERVICE = "idle-culler"
IDLE_CULLER_ROLE = "idle-culler"
# What jupyterhub-idle-culler 2.x needs (its README, "Permissions"), nothing more:
# admin:users would only be needed for --cull-users, which factoryhub does not use.
IDLE_CULLER_SCOPES = (
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
)
# JupyterHub's single-user server reports its activity to the hub every
# $JUPYTERHUB_ACTIVITY_INTERVAL seconds (300 when unset). A server in use must report
# well within the timeout, or the culler takes it for idle.
DEFAULT_ACTIVITY_INTERVAL = 300
MIN_ACTIVITY_INTERVAL = 10


def activity_interval(timeout: int) -> int:
    """Seconds between a server's activity reports: a quarter of the timeout, 10 to 300."""
    return max(MIN_ACTIVITY_INTERVAL, min(DEFAULT_ACTIVITY_INTERVAL, timeout // 4))


def idle_culler_settings(site: Site, python: str) -> dict[str, dict[str, Any]]:
    """The config fragment that runs jupyterhub-idle-culler with ``python`` (the hub's own)."""
    culler = site.idle_culler
    return {
        "JupyterHub": {
            "services": [
                {
                    "name": IDLE_CULLER_SERVICE,
                    "command": [
                        python,
                        "-m",
                        "jupyterhub_idle_culler",
                        f"--timeout={culler.timeout}",
                        f"--cull-every={culler.every}",
                        # no config file: the culler would otherwise run an
                        # idle_culler_config.py found in its working directory
                        "--config=",
                    ],
                    # the hub's own state directory (root-only), not wherever the hub started
                    "cwd": site.hub.state_dir,
                }
            ],
            "load_roles": [
                {
                    "name": IDLE_CULLER_ROLE,
                    "description": "Stop users' idle servers (jupyterhub-idle-culler)",
                    "scopes": list(IDLE_CULLER_SCOPES),
                    "services": [IDLE_CULLER_SERVICE],
                }
            ],
        },
        "Spawner": {
            "environment": {
                "JUPYTERHUB_ACTIVITY_INTERVAL": str(activity_interval(culler.timeout)),
            },
        },
    }


def web_service(
    name: str, port: int, module: str, site: Site, python: str, site_file: str
) -> dict[str, Any]:
    """A hub-managed web service of factoryhub behind the hub's login at /services/<name>/,
    run with ``python -m module`` (the hub's own Python) and the site file."""
    return {
        "name": name,
        "display": True,
        "url": f"http://{site.hub.services_host}:{port}",
        "command": [python, "-m", module],
        "environment": {"FACTORYHUB_SITE_FILE": site_file},
        "cwd": site.hub.state_dir,
        "oauth_no_confirm": True,
    }


REPORTS_SERVICE = "reports"
REPORTS_ROLE = "reports-service"


def reports_settings(site: Site, python: str, site_file: str) -> dict[str, dict[str, Any]]:
    """The config fragment that runs the Reports service with ``python`` (the hub's own)."""
    return {
        "JupyterHub": {
            "services": [
                web_service(
                    REPORTS_SERVICE,
                    site.reports.port,
                    "factoryhub.hub.reports.service",
                    site,
                    python,
                    site_file,
                )
            ],
            "load_roles": [
                {
                    "name": REPORTS_ROLE,
                    "description": "The Reports service: read users' groups and admin flag",
                    "scopes": ["read:users"],
                    "services": [REPORTS_SERVICE],
                }
            ],
            "extra_user_scopes": [f"access:services!service={REPORTS_SERVICE}"],
        },
    }


COURSES_SERVICE = "courses"
COURSES_ROLE = "courses-service"


def courses_db(site: Site) -> str:
    """The Courses service's database (trainers' edits), also read by spawner and
    authenticator."""
    return str(Path(site.hub.state_dir) / "courses" / "courses.sqlite")


def trainer_role(course_name: str) -> str:
    return f"course-trainers-{course_name}"


def courses_scopes(site: Site) -> tuple[list[str], list[dict[str, Any]]]:
    """The Courses service's scopes and the trainers' roles.

    The service may share (and so start, stop, reach) the servers of each course group's
    members, and read and revoke the shares its trainers (by name or group) hold. Trainers
    get no access scope at all: each participant's course server reaches them as a share of
    that one server (``access:servers!server=<user>/<course>``), made by the service."""
    service_scopes = ["list:users", "read:users"]
    roles: list[dict[str, Any]] = []
    for course in site.courses.courses:
        group = hub_group(course.name)
        service_scopes += [
            f"read:servers!group={group}",
            f"servers!group={group}",
            f"admin:groups!group={group}",
            f"shares!group={group}",
            *(f"users:shares!user={u}" for u in course.trainer_users),
            *(f"users:shares!group={g}" for g in course.trainer_groups),
        ]
        roles.append(
            {
                "name": trainer_role(course.name),
                "description": f"Trainers of {course.display_name}: see who takes it "
                "(their course servers are shared with them one by one)",
                "scopes": [f"read:users:name!group={group}"],
                "users": list(course.trainer_users),
                "groups": list(course.trainer_groups),
            }
        )
    return sorted(set(service_scopes)), roles


def courses_settings(site: Site, python: str, site_file: str) -> dict[str, dict[str, Any]]:
    """The config fragment that runs the Courses service, which shares each participant's
    course server with the course's trainers (that server and no other)."""
    service_scopes, roles = courses_scopes(site)
    return {
        "JupyterHub": {
            "services": [
                web_service(
                    COURSES_SERVICE,
                    site.courses.port,
                    "factoryhub.hub.courses.service",
                    site,
                    python,
                    site_file,
                )
            ],
            "load_roles": [
                {
                    "name": COURSES_ROLE,
                    "description": "The Courses service: read users, start and stop course "
                    "servers, keep the course groups",
                    "scopes": service_scopes,
                    "services": [COURSES_SERVICE],
                },
                *roles,
            ],
            "extra_user_scopes": [f"access:services!service={COURSES_SERVICE}"],
        },
    }


def merge_settings(
    settings: dict[str, dict[str, Any]], fragment: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge ``fragment`` into ``settings`` (changed and returned): per trait, lists are
    extended and dicts updated, other values set. ``settings`` owns new lists and dicts."""
    for section, traits in fragment.items():
        target = settings.setdefault(section, {})
        for name, value in traits.items():
            have = target.get(name)
            if isinstance(have, list) and isinstance(value, list):
                target[name] = [*have, *value]
            elif isinstance(have, dict) and isinstance(value, Mapping):
                target[name] = {**have, **value}
            elif isinstance(value, list):
                target[name] = list(value)
            elif isinstance(value, Mapping):
                target[name] = dict(value)
            else:
                target[name] = value
    return settings
