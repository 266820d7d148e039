"""The site file's ``reports.limits``: how much one person may have the Reports service do.

A run counts for the person who asked for it (a schedule's runs for the schedule's owner);
site reports count for nobody. A refusal names the limit, its key and its value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factoryhub.hub.reports.store import RunStore
from factoryhub.hub.service_web import Refused
from factoryhub.hub.site.reports import ReportLimits

TOO_MANY = 429


def _refuse(what: str, key: str, value: int) -> Refused:
    return Refused(
        TOO_MANY,
        f"{what}: the limit reports.limits.{key} is {value}. "
        "Wait for runs to end (or remove a schedule), or ask the factory's staff.",
        {key: str(value)},
    )


def check_run(
    store: RunStore, limits: ReportLimits, user: str, now: datetime | None = None
) -> None:
    """Refuse (429) a new run of ``user`` when it would pass a run limit."""
    active = store.count_runs(user, active=True)
    if active >= limits.concurrent_runs_per_person:
        raise _refuse(
            f"{user} has {active} report runs queued or running",
            "concurrent_runs_per_person",
            limits.concurrent_runs_per_person,
        )
    hour_ago = (now or datetime.now(UTC)).astimezone(UTC) - timedelta(hours=1)
    recent = store.count_runs(user, since=hour_ago.isoformat(timespec="seconds"))
    if recent >= limits.runs_per_hour:
        raise _refuse(
            f"{user} started {recent} report runs in the last hour",
            "runs_per_hour",
            limits.runs_per_hour,
        )


def check_schedule(store: RunStore, limits: ReportLimits, user: str) -> None:
    """Refuse (429) a new schedule of ``user`` when they have as many as allowed."""
    have = store.count_schedules(user)
    if have >= limits.schedules_per_person:
        raise _refuse(
            f"{user} has {have} schedules", "schedules_per_person", limits.schedules_per_person
        )
