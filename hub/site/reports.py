"""The site file's ``reports`` section: the Reports service's settings (where report notebooks
come from, the Slurm job of a run, schedules, who may do what)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AccessRule:
    """``groups``/``users`` may do ``allow`` (run, schedule, see_all) with ``reports``."""

    allow: tuple[str, ...]
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    reports: tuple[str, ...] = ("*",)

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

    concurrent_runs_per_person: int = 4
    schedules_per_person: int = 10
    runs_per_hour: int = 30


@dataclass(frozen=True)
class SiteReport:
    """A report the site runs on a schedule as ``service_user``, paid by ``service_project``."""

    report: str
    schedule: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportsSettings:
    enabled: bool = True
    port: int = 10101
    folders: tuple[str, ...] = ()
    output_dir: str = "{home}/.factoryhub/reports"
    partition: str = ""
    cpus: int = 1
    memory_gb: int = 2
    walltime: str = "00:30:00"
    min_interval_minutes: int = 5
    poll_interval: float = 2.0
    service_user: str = ""
    service_project: str = ""
    access: tuple[AccessRule, ...] = field(default_factory=tuple)
    path_folders: tuple[str, ...] = ()
    limits: ReportLimits = field(default_factory=ReportLimits)
    site_reports: tuple[SiteReport, ...] = ()

    def output_dir_for(self, home: str, username: str) -> str:
        return self.output_dir.replace("{home}", home).replace("{username}", username)


def build_limits(d: Mapping[str, Any]) -> ReportLimits:
    return ReportLimits(
        concurrent_runs_per_person=int(d.get("concurrent_runs_per_person", 4)),
        schedules_per_person=int(d.get("schedules_per_person", 10)),
        runs_per_hour=int(d.get("runs_per_hour", 30)),
    )


def build_reports(d: Mapping[str, Any], partitions: list[str]) -> ReportsSettings:
    job = d.get("job") or {}
    return ReportsSettings(
        enabled=bool(d.get("enabled", True)),
        port=int(d.get("port", 10101)),
        folders=tuple(d.get("folders") or ()),
        output_dir=str(d.get("output_dir", "{home}/.factoryhub/reports")),
        partition=str(job.get("partition") or (partitions[0] if partitions else "")),
        cpus=int(job.get("cpus", 1)),
        memory_gb=int(job.get("memory_gb", 2)),
        walltime=str(job.get("walltime", "00:30:00")),
        min_interval_minutes=int(d.get("min_interval_minutes", 5)),
        poll_interval=float(d.get("poll_interval", 2.0)),
        service_user=str(d.get("service_user", "")),
        service_project=str(d.get("service_project", "")),
        access=tuple(
            AccessRule(
                allow=tuple(r["allow"]),
                groups=tuple(r.get("groups") or ()),
                users=tuple(r.get("users") or ()),
                reports=tuple(r.get("reports") or ("*",)),
            )
            for r in d.get("access") or ()
        ),
        path_folders=tuple(d.get("path_folders") or ()),
        limits=build_limits(d.get("limits") or {}),
        site_reports=tuple(
            SiteReport(
                str(r["report"]),
                str(r["schedule"]),
                {str(v["name"]): v["value"] for v in r.get("parameters") or ()},
            )
            for r in d.get("site_reports") or ()
        ),
    )


def reports_problems(
    reports: Any, partitions: list[str], project_names: list[str]
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
    if isinstance(project, str) and project and project not in project_names:
        known = ", ".join(project_names) or "none"
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
