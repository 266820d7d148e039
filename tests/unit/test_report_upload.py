"""Report outputs in the "rest" access mode (issue 19, item 2): the run's job sends them to the
Reports service with a token for that run only; the service keeps them in its own state
folder and serves them from there, never reading a home.

The service's tornado application runs on loopback; the requests are real HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from factoryhub.hub.reports import uploads
from factoryhub.hub.reports.app import make_app
from factoryhub.hub.reports.catalog import Catalog
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.outputs import NOTEBOOK_MAX_BYTES
from factoryhub.hub.reports.runner import UPLOADER
from factoryhub.hub.reports.store import Run, RunStore
from factoryhub.hub.service_web import People
from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import parse_site
from factoryhub.spawners.slurm.client import JobInfo, SlurmClient

PREFIX = "/services/reports/"
NOTEBOOK = json.dumps({"cells": [{"metadata": {}, "outputs": [], "source": "n = 7"}]})
HTML = "<html><body>over-rest 7</body></html>"


class RestSlurm:
    """What the engine asks of Slurm in these tests: a submit that keeps the script and the
    job's environment, a queue that answers ``states``, homes nobody may read."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str, dict[str, str]]] = []
        self.states: dict[str, str] = {}

    async def submit(self, user: str, script: str, env: Any, **kw: Any) -> str:
        self.submitted.append((user, script, dict(env)))
        return str(500 + len(self.submitted))

    async def query(self, ids: Any) -> dict[str, JobInfo]:
        return {i: JobInfo(i, self.states[i]) for i in ids if i in self.states}

    async def accounted_state(self, job_id: str) -> str:
        return self.states.get(job_id, "")

    def home(self, username: str) -> str:
        return f"/nonexistent/home/{username}"


def rest_engine(tmp_path: Path) -> tuple[ReportEngine, RunStore, RestSlurm]:
    data = yaml.safe_load(site.example_site_path().read_text())
    data["auth"]["type"] = "local"
    del data["auth"]["oidc"]
    data["hub"]["state_dir"] = str(tmp_path / "state")
    data["slurm"]["access"] = "rest"
    data["slurm"]["rest"] = {"url": "http://127.0.0.1:1", "key_file": str(tmp_path / "key")}
    data["slurm"]["manage_associations"] = False
    data["auth"]["unix_users"] = {"create": False}
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]},
                     "source": "n = 1", "outputs": [], "execution_count": None}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 4}  # fmt: skip
    (folder / "quick.ipynb").write_text(json.dumps(nb))
    store = RunStore(tmp_path / "state" / "reports" / "runs.sqlite")
    slurm = RestSlurm()
    engine = ReportEngine(
        parse_site(data),
        store,
        Catalog([folder]),
        cast(SlurmClient, slurm),
        "tag",
        service_url="http://127.0.0.1:8000" + PREFIX,
    )
    return engine, store, slurm


def submitted_run(tmp_path: Path) -> tuple[ReportEngine, RunStore, RestSlurm, Run, str]:
    """A rest-mode run, submitted: its token is the one in its job's environment."""
    engine, store, slurm = rest_engine(tmp_path)
    run = store.add_run("quick", "sofia", {"n": 7}, account="lab")
    run = asyncio.run(engine.submit(run))
    token = slurm.submitted[-1][2][uploads.TOKEN_ENV]
    return engine, store, slurm, run, token


def serve(
    engine: ReportEngine, talk: Callable[[str], Awaitable[Any]], max_body: int = uploads.MAX_BODY
) -> Any:
    """``talk(base_url)`` against the service's application on a loopback port."""

    async def main() -> Any:
        app = make_app(
            engine, PREFIX, "/hub/", People("http://127.0.0.1:1/hub/api", ""), cookie_secret=b"x"
        )
        server = HTTPServer(app, max_body_size=max_body)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            return await talk(f"http://127.0.0.1:{port}{PREFIX}")
        finally:
            server.stop()

    return asyncio.run(main())


def upload(
    engine: ReportEngine, run_id: int, token: str, body: bytes, kind: str = "application/json"
) -> HTTPResponse:
    async def talk(base: str) -> HTTPResponse:
        return await AsyncHTTPClient().fetch(
            f"{base}api/runs/{run_id}/upload",
            method="POST",
            body=body,
            headers={"Content-Type": kind, "Authorization": f"Bearer {token}"},
            raise_error=False,
        )

    return cast(HTTPResponse, serve(engine, talk))


def outputs(notebook: str = NOTEBOOK, html: str = HTML) -> bytes:
    return json.dumps(
        {"status": {"papermill_exit": 0}, "notebook": notebook, "html": html, "log": "done\n"}
    ).encode()


def test_the_token_travels_in_the_jobs_environment_and_only_its_digest_is_kept(
    tmp_path: Path,
) -> None:
    _engine, _store, slurm, run, token = submitted_run(tmp_path)
    _user, script, env = slurm.submitted[-1]
    assert len(token) >= 40 and token not in script
    assert env[uploads.URL_ENV] == f"http://127.0.0.1:8000{PREFIX}api/runs/{run.id}/upload"
    # the notebook's code runs without the token in its environment
    assert "unset FACTORYHUB_REPORT_UPLOAD_TOKEN" in script
    assert script.index("unset FACTORYHUB") < script.index("-m papermill")
    stored = (tmp_path / "state" / "reports" / "runs.sqlite").read_bytes()
    assert token.encode() not in stored and uploads.digest(token).encode() in stored


def test_a_wrong_token_or_another_runs_token_lets_nothing_in(tmp_path: Path) -> None:
    engine, store, slurm, run, token = submitted_run(tmp_path)
    other = asyncio.run(engine.submit(store.add_run("quick", "ravi", {"n": 1}, account="lab")))
    other_token = slurm.submitted[-1][2][uploads.TOKEN_ENV]
    assert upload(engine, run.id, "not-the-token", outputs()).code == 403
    assert upload(engine, run.id, other_token, outputs()).code == 403
    assert upload(engine, run.id, "", outputs()).code == 403
    assert upload(engine, 999, token, outputs()).code == 403
    assert engine.uploads is not None
    assert store.run(run.id).status == "queued" and not engine.uploads.has(run.id, "status")
    # the right token still works, once; the other run's token is still its own
    assert upload(engine, run.id, token, outputs()).code == 201
    second = upload(engine, run.id, token, outputs())
    assert second.code == 403 and b"already used" in second.body
    assert upload(engine, other.id, other_token, outputs()).code == 201


def test_the_wrong_content_type_is_refused_and_keeps_the_token(tmp_path: Path) -> None:
    engine, _store, _slurm, run, token = submitted_run(tmp_path)
    assert upload(engine, run.id, token, outputs(), kind="text/plain").code == 415
    form = "application/x-www-form-urlencoded"
    assert upload(engine, run.id, token, outputs(), kind=form).code == 415
    assert upload(engine, run.id, token, outputs()).code == 201


def test_too_large_an_upload_fails_the_run_saying_why(tmp_path: Path) -> None:
    engine, store, _slurm, run, token = submitted_run(tmp_path)
    big = "x" * (NOTEBOOK_MAX_BYTES + 1)
    answer = upload(engine, run.id, token, outputs(notebook=big))
    assert answer.code == 413
    ended = store.run(run.id)
    assert ended.status == "failed" and "notebook is larger than" in ended.error
    assert str(NOTEBOOK_MAX_BYTES) in ended.error
    assert upload(engine, run.id, token, outputs()).code == 403  # used up


def test_a_body_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    engine, store, _slurm, run, token = submitted_run(tmp_path)
    answer = serve(
        engine,
        lambda base: AsyncHTTPClient().fetch(
            f"{base}api/runs/{run.id}/upload",
            method="POST",
            body=b"{" + b" " * 4096 + b"}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            raise_error=False,
        ),
        max_body=1024,
    )
    assert answer.code in (400, 413) or answer.code >= 599  # the server closed on it
    assert store.run(run.id).status == "queued"


def test_an_upload_that_is_no_json_object_fails_the_run(tmp_path: Path) -> None:
    engine, store, _slurm, run, token = submitted_run(tmp_path)
    assert upload(engine, run.id, token, b"[1, 2]").code == 400
    assert "not a JSON object" in store.run(run.id).error


def test_uploaded_outputs_end_the_run_and_are_served_from_the_services_folder(
    tmp_path: Path,
) -> None:
    engine, store, slurm, run, token = submitted_run(tmp_path)
    assert upload(engine, run.id, token, outputs()).code == 201
    folder = tmp_path / "state" / "reports" / "outputs" / f"run-{run.id}"
    assert folder.stat().st_mode & 0o777 == folder.parent.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "executed.ipynb": 0o600,
        "report.html": 0o600,
        "job.log": 0o600,
        "status.json": 0o600,
    }
    slurm.states[run.job_id] = "COMPLETED"
    asyncio.run(engine.follow())
    ended = store.run(run.id)
    assert ended.status == "succeeded", ended.error
    assert ended.html_path and ended.notebook_path
    assert asyncio.run(engine.output(ended, "html")) == HTML.encode()
    assert asyncio.run(engine.output(ended, "ipynb")) == NOTEBOOK.encode()
    assert asyncio.run(engine.output(ended, "log")) == b"done\n"


def test_a_job_that_sent_nothing_fails_its_run_saying_where_it_should_have(
    tmp_path: Path,
) -> None:
    engine, store, slurm, run, _token = submitted_run(tmp_path)
    slurm.states[run.job_id] = "FAILED"
    asyncio.run(engine.follow())
    ended = store.run(run.id)
    assert ended.status == "failed"
    assert "without sending its outputs" in ended.error
    assert engine.upload_url(run.id) in ended.error


def test_an_ended_runs_token_lets_nothing_in(tmp_path: Path) -> None:
    engine, store, _slurm, run, token = submitted_run(tmp_path)
    store.move(run.id, "cancelled", error="Cancelled by sofia.")
    assert upload(engine, run.id, token, outputs()).code == 403


@pytest.mark.parametrize("works", [True, False])
def test_the_jobs_uploader_sends_the_files_and_says_why_it_failed(
    tmp_path: Path, works: bool
) -> None:
    """The uploader as the job script runs it (``python -I -c``, the token in its env)."""
    engine, _store, _slurm, run, token = submitted_run(tmp_path)
    (tmp_path / "out.ipynb").write_text(NOTEBOOK)
    (tmp_path / "out.html").write_text(HTML)
    (tmp_path / "slurm.log").write_text("papermill said things\n")

    async def talk(base: str) -> tuple[int, bytes]:
        env = {
            uploads.URL_ENV: f"{base}api/runs/{run.id}/upload",
            uploads.TOKEN_ENV: token if works else "forged",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", UPLOADER.read_text(), "0",
            str(tmp_path / "out.ipynb"), str(tmp_path / "out.html"), str(tmp_path / "slurm.log"),
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        return proc.returncode or 0, err

    code, err = serve(engine, talk)
    if works:
        assert code == 0, err
        assert engine.uploads is not None
        assert engine.uploads.read(run.id, "html") == HTML.encode()
        assert engine.uploads.read(run.id, "log") == b"papermill said things\n"
    else:
        assert code == 1 and b"refused the outputs (403)" in err
