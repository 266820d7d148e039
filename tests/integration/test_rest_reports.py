"""Report outputs in the "rest" access mode (issue 19, item 2), through the real slurmrestd and
Slurm: the run's job, as the user, sends its executed notebook, HTML and log to the Reports
service with its run's token; the service serves the HTML from its own state folder. The
service's readers of users' files are replaced by ones that fail the test: in the chart it
runs as uid 999 and cannot read a home.
"""

from __future__ import annotations

import asyncio
import json
import pwd
import time
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from factoryhub.hub.reports import app as reports_app
from factoryhub.hub.reports import engine as reports_engine
from factoryhub.hub.reports.access import Person
from factoryhub.hub.reports.catalog import Catalog
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.store import Run, RunStore
from factoryhub.hub.reports.uploads import MAX_BODY
from factoryhub.hub.service_web import People
from factoryhub.hub.site.loader import example_site_path, parse_site
from factoryhub.local import slurmrestd
from factoryhub.spawners.slurm.access import make_client
from tests.support.hub import REPO, VENV_BIN

pytestmark = pytest.mark.slurm

PREFIX = "/services/reports/"


class Staff:
    """The hub's word on who is asking (the pages' login is the hub's OAuth): a hub admin."""

    async def person(self, name: str) -> Person:
        return Person(name, frozenset(), admin=True)


def _no_home_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the service read a user's file: {args!r}")

    for name in ("read_owned", "is_owned_file", "log_tail"):
        monkeypatch.setattr(reports_engine, name, refuse)


def _rest_engine(tmp_path: Path, service_url: str) -> tuple[ReportEngine, RunStore]:
    data = yaml.safe_load(example_site_path().read_text())
    data["hub"]["state_dir"] = str(tmp_path / "state")
    data["spawner"]["python_env"] = str(VENV_BIN.parent)
    data["auth"]["unix_users"] = {"create": False}
    data["slurm"]["manage_associations"] = False
    data["slurm"]["access"] = "rest"
    data["slurm"]["rest"] = {"url": slurmrestd.URL, "key_file": str(slurmrestd.KEY)}
    site = parse_site(data)
    store = RunStore(tmp_path / "state" / "reports" / "runs.sqlite")
    catalog = Catalog([REPO / "tests" / "integration" / "report_notebooks"])
    client = make_client(site.slurm.access, site.slurm.rest)
    return ReportEngine(site, store, catalog, client, "fhtest-rest", service_url=service_url), store


async def _until_ended(engine: ReportEngine, run: Run, timeout_s: float = 150) -> Run:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await engine.follow()
        current = engine.store.run(run.id)
        if current.status in ("succeeded", "failed", "cancelled"):
            return current
        await asyncio.sleep(0.5)
    raise AssertionError("the report run did not end")


def test_a_rest_mode_run_sends_its_outputs_and_the_service_serves_them(
    unix_users: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (name,) = unix_users(1)
    monkeypatch.setattr(reports_app.BaseHandler, "get_current_user", lambda self: {"name": name})
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    engine, store = _rest_engine(tmp_path, f"http://127.0.0.1:{port}{PREFIX}")
    _no_home_reads(monkeypatch)
    run = store.add_run("quick", name, {"n": 7, "label": "over-rest"}, account=unix_users.account)

    async def go() -> tuple[Run, Run, Any, Any]:
        people = cast(People, Staff())  # the one call the pages make of it
        app = reports_app.make_app(engine, PREFIX, "/hub/", people, cookie_secret=b"t")
        server = HTTPServer(app, max_body_size=MAX_BODY)
        server.add_sockets(sockets)
        try:
            submitted = await engine.submit(run)
            ended = await _until_ended(engine, submitted)
            http = AsyncHTTPClient()
            base = f"http://127.0.0.1:{port}{PREFIX}runs/{run.id}"
            html = await http.fetch(f"{base}/html", raise_error=False)
            again = await http.fetch(
                f"http://127.0.0.1:{port}{PREFIX}api/runs/{run.id}/upload",
                method="POST",
                body=b"{}",
                headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
                raise_error=False,
            )
            return submitted, ended, html, again
        finally:
            server.stop()

    submitted, ended, html, again = asyncio.run(go())
    assert ended.status == "succeeded", ended.error
    assert html.code == 200 and b"over-rest" in html.body
    assert html.headers["Content-Security-Policy"].startswith("sandbox")
    assert again.code == 403
    # the job ran as the user, under the project's account, and its files are theirs
    kept = tmp_path / "state" / "reports" / "outputs" / f"run-{run.id}"
    assert json.loads((kept / "status.json").read_text()) == {"papermill_exit": 0}
    assert (kept / "report.html").stat().st_mode & 0o777 == 0o600
    _account, paths = engine.paths(ended)
    uid = pwd.getpwnam(name).pw_uid
    assert paths.parameters.stat().st_uid == uid and paths.html.stat().st_uid == uid
    assert paths.out_dir.stat().st_mode & 0o777 == 0o700
    assert (paths.out_dir / f"slurm-{submitted.job_id}.log").exists()


def test_a_rest_mode_run_whose_upload_fails_says_so(
    unix_users: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens where the job sends its outputs: the run fails saying where."""
    (name,) = unix_users(1)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    for s in sockets:
        s.close()
    engine, store = _rest_engine(tmp_path, f"http://127.0.0.1:{port}{PREFIX}")
    _no_home_reads(monkeypatch)
    run = store.add_run("quick", name, {"n": 1}, account=unix_users.account)

    async def go() -> Run:
        return await _until_ended(engine, await engine.submit(run))

    ended = asyncio.run(go())
    assert ended.status == "failed"
    assert "without sending its outputs" in ended.error and str(port) in ended.error
