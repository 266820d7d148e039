"""The Reports service's web side: pages behind the hub's login (JupyterHub OAuth) and a JSON
API for scripts (a hub token in the ``Authorization`` header). Both go through the same
:class:`ReportEngine` calls; the pages only add forms and redirects around them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyterhub.utils import url_path_join
from tornado import web

from factoryhub.hub.reports import schedules
from factoryhub.hub.reports.catalog import Report
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.store import FINAL, Run, Schedule
from factoryhub.hub.reports.uploads import UploadApi
from factoryhub.hub.service_web import (
    People,
    Person,
    Refused,
    ServiceHandler,
    api,
    application,
    page,
)

TEMPLATES = Path(__file__).parent / "templates"


def run_json(run: Run, prefix: str) -> dict[str, Any]:
    links = {"page": url_path_join(prefix, "runs", str(run.id))}
    if run.notebook_path:
        links["notebook"] = url_path_join(prefix, "runs", str(run.id), "notebook")
    if run.html_path:
        links["html"] = url_path_join(prefix, "runs", str(run.id), "html")
    if run.job_id:
        links["log"] = url_path_join(prefix, "runs", str(run.id), "log")
    return {
        "id": run.id,
        "report": run.report,
        "user": run.user,
        "run_as": run.run_as,
        "project": run.project,
        "account": run.account,
        "parameters": run.parameters,
        "status": run.status,
        "job_id": run.job_id,
        "schedule_id": run.schedule_id,
        "created": run.created,
        "started": run.started,
        "finished": run.finished,
        "duration_s": run.duration_s,
        "error": run.error,
        "failed_cell": run.failed_cell,
        "links": links,
    }


def schedule_json(s: Schedule, count: int = 3) -> dict[str, Any]:
    now = datetime.now().astimezone()
    return {
        "id": s.id,
        "report": s.report,
        "user": s.user,
        "cron": s.cron,
        "parameters": s.parameters,
        "project": s.project,
        "enabled": s.enabled,
        "paused": s.paused,  # why it does not fire ("" when it does)
        "site": s.site,  # a site report: runs as run_as (the service user)
        "run_as": s.user,
        "last_fired": s.last_fired,
        "next_runs": [
            t.isoformat(timespec="minutes") for t in schedules.next_runs(s.cron, now, count)
        ],
    }


class BaseHandler(ServiceHandler):
    @property
    def engine(self) -> ReportEngine:
        return self.settings["engine"]

    async def me(self) -> Person:
        user = self.current_user
        assert user is not None
        return await self.settings["people"].person(user["name"])


class ReportsApi(BaseHandler):
    @api
    async def get(self, name: str = "") -> None:
        me = await self.me()
        if name:
            report = self.engine.catalog.get(name)
            if report is None or not self.engine.access.reports_for(me, [name]):
                raise Refused(404, f"There is no report called {name!r} you may use.")
            self.finish(report.to_json())
            return
        reports = self.engine.catalog.reports()
        allowed = set(self.engine.access.reports_for(me, [r.name for r in reports]))
        self.finish({"reports": [r.to_json() for r in reports if r.name in allowed]})


class RunsApi(BaseHandler):
    @api
    async def get(self, run_id: str = "") -> None:
        me = await self.me()
        if run_id:
            self.finish(run_json(self.engine.visible_run(me, int(run_id)), self.prefix))
            return
        report = self.get_argument("report", "")
        limit = max(1, min(1000, int(self.get_argument("limit", "200"))))
        runs = self.engine.visible_runs(me, report, limit)
        self.finish({"runs": [run_json(r, self.prefix) for r in runs]})

    @api
    async def post(self, run_id: str = "") -> None:
        me = await self.me()
        if run_id:
            raise Refused(405, "POST to api/runs to start a run.")
        data = self.json_body()
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise Refused(400, "parameters must be an object of name: value.")
        run = await self.engine.run_now(
            me, str(data.get("report", "")), parameters, str(data.get("project", ""))
        )
        self.set_status(201)
        self.finish(run_json(run, self.prefix))


class RunActionApi(BaseHandler):
    @api
    async def post(self, run_id: str, action: str) -> None:
        me = await self.me()
        if action == "cancel":
            run = await self.engine.cancel(me, int(run_id))
            self.finish(run_json(run, self.prefix))
        else:
            run = await self.engine.rerun(me, int(run_id))
            self.set_status(201)
            self.finish(run_json(run, self.prefix))


class SchedulesApi(BaseHandler):
    @api
    async def get(self, schedule_id: str = "") -> None:
        me = await self.me()
        found = self.engine.visible_schedules(me)
        self.finish({"schedules": [schedule_json(s) for s in found]})

    @api
    async def post(self, schedule_id: str = "") -> None:
        me = await self.me()
        data = self.json_body()
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise Refused(400, "parameters must be an object of name: value.")
        made = self.engine.add_schedule(
            me,
            str(data.get("report", "")),
            str(data.get("cron", "")),
            parameters,
            str(data.get("project", "")),
        )
        self.set_status(201)
        self.finish(schedule_json(made))

    @api
    async def delete(self, schedule_id: str = "") -> None:
        me = await self.me()
        self.engine.delete_schedule(me, int(schedule_id or 0))
        self.set_status(204)
        self.finish()


class NextRunsApi(BaseHandler):
    @api
    async def get(self) -> None:
        now = datetime.now().astimezone()
        try:
            cron = schedules.check(self.get_argument("cron", ""), now, self.engine.min_interval())
        except schedules.ScheduleError as e:
            raise Refused(400, str(e)) from None
        runs = schedules.next_runs(cron, now, 5)
        self.finish({"cron": cron, "next_runs": [t.isoformat(timespec="minutes") for t in runs]})


# --------------------------------------------------------------------------- pages


def form_values(handler: web.RequestHandler, report: Report) -> dict[str, Any]:
    """What the form sent, by parameter; an unticked checkbox sends nothing: false."""
    values: dict[str, Any] = {}
    for p in report.parameters:
        raw = handler.get_body_argument(f"p_{p.name}", None)
        if p.type == "bool":
            values[p.name] = raw is not None
        elif raw is not None:
            values[p.name] = raw
    return values


class IndexPage(BaseHandler):
    @page
    async def get(self) -> None:
        me = await self.me()
        reports = self.engine.catalog.reports()
        allowed = set(self.engine.access.reports_for(me, [r.name for r in reports]))
        self.render_page(
            "index.html",
            me=me,
            reports=[r for r in reports if r.name in allowed],
            runs=self.engine.visible_runs(me, limit=50),
            schedules=[schedule_json(s) for s in self.engine.visible_schedules(me)],
            final=FINAL,
        )


class ReportPage(BaseHandler):
    def report_or_refuse(self, me: Person, name: str) -> Report:
        report = self.engine.catalog.get(name)
        if report is None or not self.engine.access.reports_for(me, [name]):
            raise Refused(404, f"There is no report called {name!r} you may use.")
        return report

    def show(self, me: Person, report: Report, status: int = 200, **values: Any) -> None:
        self.render_page(
            "report.html",
            status=status,
            me=me,
            report=report,
            projects=self.engine.projects_of(me),
            may_run=self.engine.access.may(me, "run", report.name),
            may_schedule=self.engine.access.may(me, "schedule", report.name),
            service_user=self.engine.settings.service_user,
            min_interval=self.engine.settings.min_interval_minutes,
            runs=self.engine.visible_runs(me, report.name, 50),
            schedules=[
                schedule_json(s)
                for s in self.engine.visible_schedules(me)
                if s.report == report.name
            ],
            final=FINAL,
            **values,
        )

    @page
    async def get(self, name: str) -> None:
        me = await self.me()
        self.show(me, self.report_or_refuse(me, name))

    @page
    async def post(self, name: str, action: str) -> None:
        me = await self.me()
        report = self.report_or_refuse(me, name)
        values = form_values(self, report)
        project = self.get_body_argument("project", "")
        try:
            if action == "run":
                run = await self.engine.run_now(me, name, values, project)
                self.redirect(url_path_join(self.prefix, "runs", str(run.id)))
                return
            cron = self.get_body_argument("cron", "")
            self.engine.add_schedule(me, name, cron, values, project)
            self.redirect(url_path_join(self.prefix, "report", name) + "?scheduled=1#schedules")
        except Refused as e:
            if e.status not in (400, 429):
                raise
            self.show(
                me,
                report,
                status=e.status,
                error=e,
                sent=values,
                sent_cron=self.get_body_argument("cron", ""),
            )


class RunPage(BaseHandler):
    @page
    async def get(self, run_id: str) -> None:
        me = await self.me()
        run = self.engine.visible_run(me, int(run_id))
        report = self.engine.catalog.get(run.report)
        self.render_page(
            "run.html",
            me=me,
            run=run,
            title=report.title if report else run.report,
            may_cancel=run.user == me.name or me.admin,
            may_rerun=self.engine.access.may(me, "run", run.report),
            final=FINAL,
        )

    @page
    async def post(self, run_id: str, action: str) -> None:
        me = await self.me()
        if action == "cancel":
            run = await self.engine.cancel(me, int(run_id))
        else:
            run = await self.engine.rerun(me, int(run_id))
        self.redirect(url_path_join(self.prefix, "runs", str(run.id)))


class OutputPage(BaseHandler):
    """A run's executed notebook (a download), its HTML (sandboxed: the notebook's scripts
    run in an origin of their own, never with the service's cookies) or its job log."""

    @page
    async def get(self, run_id: str, kind: str) -> None:
        me = await self.me()
        run = self.engine.visible_run(me, int(run_id))
        key = {"notebook": "ipynb", "html": "html", "log": "log"}[kind]
        data = await self.engine.output(run, key)
        if kind == "html":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Content-Security-Policy", "sandbox allow-scripts allow-popups")
        elif kind == "notebook":
            self.set_header("Content-Type", "application/x-ipynb+json")
            self.set_header(
                "Content-Disposition", f'attachment; filename="{run.report}-run-{run.id}.ipynb"'
            )
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data)


class ScheduleDeletePage(BaseHandler):
    @page
    async def post(self, schedule_id: str) -> None:
        me = await self.me()
        self.engine.delete_schedule(me, int(schedule_id))
        self.redirect(self.get_body_argument("next", self.prefix))


def make_app(
    engine: ReportEngine, prefix: str, hub_prefix: str, people: People, **settings: Any
) -> web.Application:
    filters = {
        "when": lambda iso: (
            datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S") if iso else ""
        ),
        "duration": lambda s: (
            "" if s is None else f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min")
        ),
        "tojson_compact": lambda v: json.dumps(v, separators=(", ", ": ")),
    }
    routes = [
        ("report/([^/]+)", ReportPage),
        ("report/([^/]+)/(run|schedule)", ReportPage),
        (r"runs/(\d+)", RunPage),
        (r"runs/(\d+)/(cancel|rerun)", RunPage),
        (r"runs/(\d+)/(notebook|html|log)", OutputPage),
        (r"schedules/(\d+)/delete", ScheduleDeletePage),
        ("api/reports", ReportsApi),
        ("api/reports/([^/]+)", ReportsApi),
        ("api/runs", RunsApi),
        (r"api/runs/(\d+)", RunsApi),
        (r"api/runs/(\d+)/(cancel|rerun)", RunActionApi),
        (r"api/runs/(\d+)/upload", UploadApi),  # the run's job, with its token: .uploads
        ("api/schedules", SchedulesApi),
        (r"api/schedules/(\d+)", SchedulesApi),
        ("api/next-runs", NextRunsApi),
    ]
    return application(
        prefix,
        IndexPage,
        routes,
        str(TEMPLATES),
        filters,
        engine=engine,
        hub_prefix=hub_prefix,
        people=people,
        **settings,
    )
