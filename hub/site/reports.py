"""The site file's ``reports`` section: the Reports service's settings (where report notebooks
come from, the Slurm job of a run, schedules, who may do what)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryhub.hub.site.problems import Problem
from factoryhub.hub.site.projects import project_names
from factoryhub.hub.site.slurm import declared_partitions
from factoryhub.spawners.model.users import fill_user_template


@dataclass(frozen=True)
class AccessRule:
    """``groups``/``users`` may do ``allow`` (run, schedule, see_all) with ``reports``."""

    allow: tuple[str, ...]
    groups: tuple[str, ...]
    users: tuple[str, ...]
    reports: tuple[str, ...]  # "*": all

    def covers(self, username: str, groups: frozenset[str], report: str) -> bool:
        who = username in self.users or bool(groups.intersection(self.groups))
        return who and ("*" in self.reports or report in self.reports)

    def to_config(self) -> dict[str, list[str]]:
        return {
            "allow": list(self.allow),
            "groups": list(self.groups),
            "users": list(self.users),
            "reports": list(self.reports),
        }


@dataclass(frozen=True)
class ReportLimits:
    """What one person may have at once: runs queued or running, schedules, runs started in
    the last hour (their own and their schedules' runs)."""

    concurrent_runs_per_person: int
    schedules_per_person: int
    runs_per_hour: int


@dataclass(frozen=True)
class SiteReport:
    """A report the site runs on a schedule as ``service_user``, paid by ``service_project``."""

    report: str
    schedule: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ReportsSettings:
    enabled: bool
    port: int
    folders: tuple[str, ...]
    output_dir: str
    partition: str
    cpus: int
    memory_gb: int
    walltime: str
    min_interval_minutes: int
    poll_interval: float
    service_user: str  # "": no site reports
    service_project: str
    access: tuple[AccessRule, ...]
    path_folders: tuple[str, ...]
    limits: ReportLimits
    site_reports: tuple[SiteReport, ...]
    upload_url: str  # the rest mode's jobs send outputs there; "": public_url + prefix

    def output_dir_for(self, home: str, username: str) -> str:
        return fill_user_template(self.output_dir, username=username, home=home)


def build_limits(d: Mapping[str, Any]) -> ReportLimits:
    return ReportLimits(
        concurrent_runs_per_person=int(d["concurrent_runs_per_person"]),
        schedules_per_person=int(d["schedules_per_person"]),
        runs_per_hour=int(d["runs_per_hour"]),
    )


def build_access_rule(d: Mapping[str, Any]) -> AccessRule:
    return AccessRule(
        allow=tuple(d["allow"]),
        groups=tuple(d["groups"]),
        users=tuple(d["users"]),
        reports=tuple(d["reports"]),
    )


def build_reports(d: Mapping[str, Any], partitions: Sequence[str]) -> ReportsSettings:
    """``partitions``: slurm.partitions' names (report jobs use the first by default)."""
    job = d["job"]
    return ReportsSettings(
        enabled=bool(d["enabled"]),
        port=int(d["port"]),
        folders=tuple(d["folders"]),
        output_dir=str(d["output_dir"]),
        partition=str(job.get("partition") or partitions[0]),
        cpus=int(job["cpus"]),
        memory_gb=int(job["memory_gb"]),
        walltime=str(job["walltime"]),
        min_interval_minutes=int(d["min_interval_minutes"]),
        poll_interval=float(d["poll_interval"]),
        service_user=str(d["service_user"]),
        service_project=str(d["service_project"]),
        access=tuple(build_access_rule(r) for r in d["access"]),
        path_folders=tuple(d["path_folders"]),
        limits=build_limits(d["limits"]),
        upload_url=str(d["upload_url"]),
        site_reports=tuple(
            SiteReport(
                str(r["report"]),
                str(r["schedule"]),
                {str(v["name"]): v["value"] for v in r["parameters"]},
            )
            for r in d["site_reports"]
        ),
    )


def reports_problems(data: Any) -> list[Problem]:
    """What the schema cannot check in ``reports``."""
    reports = data.get("reports") if isinstance(data, Mapping) else None
    found = _reports_problems(reports, declared_partitions(data) or [], project_names(data))
    return [Problem(path, msg) for path, msg in found]


def _reports_problems(
    reports: Any, partitions: list[str], projects: list[str]
) -> list[tuple[str, str]]:
    """(key path, message) for what the schema cannot check. Defensive: ``reports`` may be
    invalid."""
    if not isinstance(reports, Mapping):
        return []
    problems: list[tuple[str, str]] = []
    job = reports.get("job")
    part = job.get("partition") if isinstance(job, Mapping) else None
    if isinstance(part, str) and partitions and part not in partitions:
        problems.append(
            (
                "reports.job.partition",
                f"expected one of the partitions declared in slurm.partitions "
                f"({', '.join(partitions)}), got '{part}'",
            )
        )
    user, project = reports.get("service_user"), reports.get("service_project")
    if isinstance(project, str) and project and project not in projects:
        known = ", ".join(projects) or "none"
        problems.append(
            (
                "reports.service_project",
                f"expected one of the projects declared in projects ({known}), got '{project}'",
            )
        )
    if isinstance(user, str) and user and not project:
        problems.append(
            (
                "reports.service_project",
                "expected the project whose account pays for service_user's runs "
                f"(service_user is '{user}')",
            )
        )
    problems += _site_report_problems(reports.get("site_reports"), user)
    return problems


def _site_report_problems(site_reports: Any, user: Any) -> list[tuple[str, str]]:
    if not isinstance(site_reports, list) or not site_reports:
        return []
    problems: list[tuple[str, str]] = []
    if not (isinstance(user, str) and user):
        problems.append(
            ("reports.site_reports", "expected reports.service_user: site reports run as it")
        )
    for i, entry in enumerate(site_reports):
        if isinstance(entry, Mapping) and entry.get("report") == "*":
            problems.append((f"reports.site_reports[{i}].report", "expected one report, got '*'"))
        cron = entry.get("schedule") if isinstance(entry, Mapping) else None
        if isinstance(cron, str) and not _is_cron(cron):
            problems.append(
                (
                    f"reports.site_reports[{i}].schedule",
                    f"expected a cron expression of five fields, got '{cron}'",
                )
            )
    return problems


def _is_cron(text: str) -> bool:
    from croniter import croniter

    normal = " ".join(text.split())
    return len(normal.split(" ")) == 5 and bool(croniter.is_valid(normal))
