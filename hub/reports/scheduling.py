"""Firing schedules. A person's schedule runs as that person, under the project they chose,
with their access as it is when it fires: if they are no longer a user of the hub, no longer
in the project, or ``reports.access`` no longer lets them schedule the report, the schedule
pauses and says why (the reports page and ``api/schedules`` show it); it fires again at its
next time once they have that access back. Only site reports (``reports.site_reports``) run
as ``reports.service_user``, paid by ``reports.service_project``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from factoryhub.hub.reports import limits, schedules
from factoryhub.hub.reports.store import Run, Schedule
from factoryhub.hub.service_web import Person, Refused

if TYPE_CHECKING:
    from factoryhub.hub.reports.engine import ReportEngine

log = logging.getLogger("factoryhub.reports")

# who a user is now (None: the hub has no such user); Refused(503) when the hub did not answer
OwnerLookup = Callable[[str], Awaitable[Person | None]]


def hub_lookup(api_url: str, token: str) -> OwnerLookup:
    """Ask the hub's API (the service's token) who a schedule's owner is now."""

    async def lookup(name: str) -> Person | None:
        url = url_path_join(api_url, "users", quote(name, safe=""))
        try:
            response = await AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {token}"}, request_timeout=10
            )
        except HTTPClientError as e:
            if e.code == 404:
                return None
            raise Refused(503, f"The hub did not tell who {name} is ({e.code}).") from e
        except OSError as e:
            raise Refused(503, f"The hub did not tell who {name} is ({e}).") from e
        model = json.loads(response.body)
        return Person(name, frozenset(model.get("groups") or ()), bool(model.get("admin")))

    return lookup


async def owner_problem(engine: ReportEngine, s: Schedule, lookup: OwnerLookup) -> str:
    """Why ``s``'s owner may not run it now ("" when they may)."""
    person = await lookup(s.user)
    if person is None:
        return f"{s.user} is no longer a user of the hub."
    if not engine.access.may(person, "schedule", s.report):
        return (
            f"{s.user} may no longer schedule the report '{s.report}' (reports.access in the "
            "site file)."
        )
    if s.project not in {p.name for p in engine.projects_of(person)}:
        return f"{s.user} is no longer in the project {s.project}, which pays for its runs."
    return ""


def sync_site_reports(engine: ReportEngine, now: datetime | None = None) -> None:
    """Make the stored site schedules those of ``reports.site_reports``: new ones added,
    removed ones deleted, unchanged ones kept (with when they last fired)."""
    settings = engine.settings
    now = now or datetime.now().astimezone()
    wanted: dict[tuple[str, str, str], dict] = {}
    for entry in settings.site_reports:
        try:
            cron = schedules.check(entry.schedule, now, engine.min_interval())
        except schedules.ScheduleError as e:
            log.error("site report %s is not scheduled: %s", entry.report, e)
            continue
        key = (entry.report, cron, json.dumps(dict(entry.parameters), sort_keys=True))
        wanted[key] = dict(entry.parameters)
    for s in engine.store.schedules():
        if not s.site:
            continue
        key = (s.report, s.cron, json.dumps(s.parameters, sort_keys=True))
        if key in wanted and s.user == settings.service_user:
            del wanted[key]
        else:
            engine.store.delete_schedule(s.id)
    for (report, cron, _), parameters in wanted.items():
        engine.store.add_schedule(
            report, settings.service_user, cron, parameters, settings.service_project, site=True
        )


async def fire_due(
    engine: ReportEngine, lookup: OwnerLookup | None, now: datetime | None = None
) -> list[Run]:
    """Start a run of every schedule that is due (once, however many slots were missed while
    the service was down). One schedule's trouble never stops the others."""
    now = now or datetime.now().astimezone()
    started = []
    for s in engine.store.schedules(enabled_only=True):
        when = schedules.due(s.cron, datetime.fromisoformat(s.last_fired), now)
        if when is None:
            continue
        try:
            run = await fire(engine, s, when, lookup)
        except Exception:
            log.exception("schedule %s (%s of %s) not fired", s.id, s.report, s.user)
            continue
        if run is not None:
            started.append(run)
    return started


async def _may_fire(engine: ReportEngine, s: Schedule, lookup: OwnerLookup | None) -> bool:
    """Whether the owner's access lets ``s`` fire; pauses (or resumes) it, saying why."""
    if s.site:
        return True
    if lookup is None:
        problem = "the service cannot ask the hub who its owner is."
    else:
        problem = await owner_problem(engine, s, lookup)
    if problem != s.paused:
        engine.store.pause(s.id, problem)
        log.warning("schedule %s of %s: %s", s.id, s.user, problem or "resumed")
    return not problem


async def fire(
    engine: ReportEngine, s: Schedule, when: datetime, lookup: OwnerLookup | None
) -> Run | None:
    """One firing of ``s``: as its owner (a site report: as the service user)."""
    try:
        allowed = await _may_fire(engine, s, lookup)
    except Refused as e:  # the hub did not answer: try again at the next tick
        log.warning("schedule %s not fired this time: %s", s.id, e.message)
        return None
    engine.store.fired(s.id, when)
    if not allowed:
        return None
    run_as = engine.settings.service_user if s.site else s.user
    project = engine.site.project(s.project)
    refusal, values = "", dict(s.parameters)
    try:
        if not s.site:
            limits.check_run(engine.store, engine.settings.limits, s.user)
        values = engine.checked_values(s.report, s.parameters, run_as)
    except Refused as e:
        refusal = e.message
    run = engine.store.add_run(
        s.report,
        s.user,
        values,
        project=project.name,
        account=project.account,
        run_as=run_as,
        schedule_id=s.id,
    )
    log.info("schedule %s (%s) fired for %s: run %s as %s", s.id, s.cron, when, run.id, run_as)
    if refusal:
        return engine.store.move(run.id, "failed", error=f"Not started: {refusal}")
    try:
        return await engine.submit(run)
    except Refused as e:
        log.warning("schedule %s: run %s not started: %s", s.id, run.id, e.message)
        return engine.store.run(run.id)
