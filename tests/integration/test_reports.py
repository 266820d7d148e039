"""The Reports service on the real hub, Slurm and identity provider: runs are Slurm jobs of
the user, failures keep their traceback, schedules fire, a restart loses nothing, access
follows the site file."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psutil
import pytest

from tests.support.hub import RunningHub

from .idp_fixtures import TEST_PASSWORD
from .oidc_fixtures import TEST_PROJECT, hub_sign_in

pytestmark = pytest.mark.slurm

STAFF, OTHER, NOBODY = "fhtest-oidc", "fhtest-oidc-two", "fhtest-oidc-nogroups"
API = "/services/reports/api"


def token_of(hub: RunningHub, user: str) -> str:
    hub_sign_in(hub, user, TEST_PASSWORD)[0].close()
    with hub.client() as c:
        r = c.post(f"/hub/api/users/{user}/tokens", json={"note": "reports test"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


@pytest.fixture(scope="module")
def clients(oidc_hub: RunningHub) -> Iterator[dict[str, httpx.Client]]:
    made = {
        user: httpx.Client(
            base_url=oidc_hub.url,
            headers={"Authorization": f"token {token_of(oidc_hub, user)}"},
            timeout=60,
        )
        for user in (STAFF, OTHER, NOBODY)
    }
    wait_for_service(made[STAFF], 60)
    yield made
    for c in made.values():
        c.close()


def wait_for_service(c: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if c.get(f"{API}/reports").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the Reports service did not answer within {timeout} s")


def wait_run(c: httpx.Client, run_id: int, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = c.get(f"{API}/runs/{run_id}")
        if r.status_code == 200:
            run = r.json()
            if run["status"] in statuses:
                return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not {statuses} within {timeout} s: {run}")


def start(c: httpx.Client, report: str, **parameters: Any) -> dict[str, Any]:
    r = c.post(f"{API}/runs", json={"report": report, "parameters": parameters})
    assert r.status_code == 201, r.text
    return r.json()


def sacct(job_id: str) -> list[str]:
    """User, account, state and name of the job: the newest of that id (a restarted test
    Slurm numbers jobs from the start again, and accounting keeps the old ones)."""
    from .slurm_fixtures import accounted

    job = accounted(job_id)
    assert job is not None, f"accounting has no job {job_id}"
    return [job.user, job.account, job.state, job.name]


def report_jobs(user: str) -> list[str]:
    """The ids of the user's active report jobs (``squeue --json``)."""
    from .slurm_fixtures import queue_jobs

    return [str(j["job_id"]) for j in queue_jobs(user) if "-report-" in j["name"]]


def test_each_user_sees_the_reports_the_site_file_gives_them(
    clients: dict[str, httpx.Client],
) -> None:
    names = {
        u: [r["name"] for r in c.get(f"{API}/reports").json()["reports"]]
        for u, c in clients.items()
    }
    assert {"quick", "fails", "slow", "usage", "model-evaluation"} <= set(names[STAFF])
    assert names[OTHER] == ["quick"]
    assert names[NOBODY] == []
    quick = clients[STAFF].get(f"{API}/reports/quick").json()
    assert quick["title"] == "Quick check"
    assert [(p["name"], p["type"], p["default"]) for p in quick["parameters"]] == [
        ("n", "int", 5),
        ("label", "str", "hello"),
        ("scale", "float", 1.5),
        ("show_plot", "bool", True),
    ]


def test_run_now_is_a_slurm_job_of_the_user_and_keeps_its_outputs(
    oidc_hub: RunningHub, clients: dict[str, httpx.Client]
) -> None:
    c = clients[STAFF]
    run = start(c, "quick", n=10, label="from the test")
    assert run["status"] in ("queued", "running") and run["job_id"].isdigit()
    assert run["parameters"] == {"n": 10, "label": "from the test", "scale": 1.5, "show_plot": True}
    done = wait_run(c, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert done["status"] == "succeeded", done
    assert done["duration_s"] is not None and done["started"] and done["finished"]
    # the job was the user's, charged to their project's account
    user, account, state, name = sacct(run["job_id"])
    assert (user, account, state) == (STAFF, TEST_PROJECT["account"], "COMPLETED")
    assert name == f"factoryhub-report-{run['id']}"
    # the HTML keeps the printed line and the plot inline; the notebook its parameters
    html = c.get(done["links"]["html"])
    assert html.status_code == 200 and "label=from the test total=67.5" in html.text
    assert re.search(r'<img [^>]*src="data:image/png;base64', html.text)  # the plot, inline
    assert "sandbox" in html.headers["content-security-policy"]
    executed = c.get(done["links"]["notebook"])
    assert executed.status_code == 200
    injected = [
        "".join(cell["source"])
        for cell in executed.json()["cells"]
        if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert injected and "n = 10" in injected[0]
    # on disk: in the user's home, readable by nobody else
    out_dir = f"/home/{STAFF}/.factoryhub/reports/run-{run['id']}"
    info = os.stat(out_dir)
    assert info.st_uid == psutil_uid(STAFF) and stat.S_IMODE(info.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(f"{out_dir}/quick.html").st_mode) & 0o077 == 0
    # someone else cannot open it, not even knowing its number
    assert clients[OTHER].get(done["links"]["html"]).status_code == 404
    assert clients[OTHER].get(f"{API}/runs/{run['id']}").status_code == 404
    assert run["id"] not in [r["id"] for r in clients[OTHER].get(f"{API}/runs").json()["runs"]]
    # re-run: the same parameters, a new job
    again = c.post(f"{API}/runs/{run['id']}/rerun")
    assert again.status_code == 201, again.text
    assert again.json()["parameters"] == done["parameters"]
    assert again.json()["job_id"] != run["job_id"]
    assert wait_run(c, again.json()["id"], {"succeeded", "failed"}, 120)["status"] == "succeeded"


def psutil_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_bad_values_are_refused_before_any_job(clients: dict[str, httpx.Client]) -> None:
    c = clients[STAFF]
    before = len(c.get(f"{API}/runs").json()["runs"])
    r = c.post(
        f"{API}/runs",
        json={"report": "quick", "parameters": {"n": "many", "scale": "x", "color": "red"}},
    )
    assert r.status_code == 400, r.text
    problems = r.json()["problems"]
    assert set(problems) == {"n", "scale", "color"}
    assert "whole number" in problems["n"] and "not a parameter" in problems["color"]
    assert len(c.get(f"{API}/runs").json()["runs"]) == before
    assert report_jobs(STAFF) == []


def test_a_failing_notebook_fails_with_its_traceback_kept(
    clients: dict[str, httpx.Client],
) -> None:
    c = clients[STAFF]
    run = start(c, "fails")
    done = wait_run(c, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert done["status"] == "failed", done
    assert "ZeroDivisionError" in done["error"]
    assert done["failed_cell"] is not None
    executed = c.get(done["links"]["notebook"]).json()
    cell = executed["cells"][done["failed_cell"]]
    assert "".join(cell["source"]) == "x / divisor"
    assert any(o.get("ename") == "ZeroDivisionError" for o in cell["outputs"])
    assert "ZeroDivisionError" in c.get(done["links"]["html"]).text
    page = c.get(done["links"]["page"])
    assert page.status_code == 200 and 'id="fh-failure"' in page.text
    assert f"Cell {done['failed_cell']} of the executed notebook raised an error" in page.text


def test_users_without_the_right_are_refused(clients: dict[str, httpx.Client]) -> None:
    other, nobody = clients[OTHER], clients[NOBODY]
    # a report the rules do not give them: as if it did not exist
    r = other.post(f"{API}/runs", json={"report": "fails", "parameters": {}})
    assert r.status_code == 404, r.text
    # a report they may run but not schedule
    r = other.post(f"{API}/schedules", json={"report": "quick", "cron": "0 6 * * 1"})
    assert r.status_code == 403 and "may not schedule" in r.json()["message"], r.text
    r = nobody.post(f"{API}/runs", json={"report": "quick", "parameters": {}})
    assert r.status_code == 404, r.text
    page = nobody.get("/services/reports/")
    assert page.status_code == 200 and "There is no report you may run" in page.text
    assert report_jobs(OTHER) == [] and report_jobs(NOBODY) == []


@pytest.mark.security
def test_a_schedule_fires_on_time_as_the_member_who_made_it(
    clients: dict[str, httpx.Client],
) -> None:
    """Issue 17: a schedule's runs are Slurm jobs of the person who made it, under their
    project's account; the service account runs only the site file's site reports."""
    c = clients[STAFF]
    preview = c.get(f"{API}/next-runs", params={"cron": "*/2 * * * *"})
    assert preview.status_code == 200 and len(preview.json()["next_runs"]) == 5
    too_often = c.post(f"{API}/schedules", json={"report": "quick", "cron": "* * * * * *"})
    assert too_often.status_code == 400 and "five fields" in too_often.json()["message"]
    made = c.post(
        f"{API}/schedules",
        json={"report": "quick", "cron": "* * * * *", "parameters": {"label": "scheduled"}},
    )
    assert made.status_code == 201, made.text
    schedule = made.json()
    try:
        first = datetime.fromisoformat(schedule["next_runs"][0])
        deadline = time.monotonic() + 90
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not runs:
            listed = c.get(f"{API}/runs").json()["runs"]
            runs = [r for r in listed if r["schedule_id"] == schedule["id"]]
            time.sleep(0.5)
        assert runs, "the schedule did not fire"
        fired = datetime.fromisoformat(runs[0]["created"])
        # on time: within a few seconds of the minute it was due
        assert 0 <= (fired - first).total_seconds() < 10, (fired, first)
        run = runs[0]
        assert run["user"] == STAFF and run["run_as"] == STAFF
        assert run["parameters"]["label"] == "scheduled"
        done = wait_run(c, run["id"], {"succeeded", "failed"}, 120)
        assert done["status"] == "succeeded", done
        assert sacct(done["job_id"])[:2] == [STAFF, TEST_PROJECT["account"]]
        # its outputs are the member's, in their home
        out_dir = f"/home/{STAFF}/.factoryhub/reports/run-{run['id']}"
        assert os.stat(out_dir).st_uid == psutil_uid(STAFF)
        assert "label=scheduled" in c.get(done["links"]["html"]).text
    finally:
        assert c.delete(f"{API}/schedules/{schedule['id']}").status_code == 204


def reports_service(hub: RunningHub) -> psutil.Process:
    assert hub.proc is not None
    (service,) = [
        p
        for p in psutil.Process(hub.proc.pid).children()
        if "factoryhub.hub.reports.service" in " ".join(p.cmdline())
    ]
    return service


def test_a_hub_crash_mid_run_loses_nothing(
    oidc_hub: RunningHub, clients: dict[str, httpx.Client]
) -> None:
    c = clients[STAFF]
    run = start(c, "slow", seconds=12)
    wait_run(c, run["id"], {"running"}, 60)
    service = reports_service(oidc_hub)
    oidc_hub.kill_hub_only()  # SIGKILL: the service notices its hub is gone and ends
    try:
        service.wait(15)
    finally:
        oidc_hub.start()  # whatever happened: the other tests need their hub
    wait_for_service(c, 60)
    assert reports_service(oidc_hub).pid != service.pid
    # the run went on as a Slurm job and the new service follows it to its end
    done = wait_run(c, run["id"], {"succeeded", "failed", "cancelled"}, 90)
    assert done["status"] == "succeeded", done
    assert done["job_id"] == run["job_id"]
    assert "slept 12 s" in c.get(done["links"]["html"]).text


def test_cancel_ends_the_job(clients: dict[str, httpx.Client]) -> None:
    c = clients[STAFF]
    run = start(c, "slow", seconds=120)
    wait_run(c, run["id"], {"running"}, 60)
    r = c.post(f"{API}/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    deadline = time.monotonic() + 20
    while run["job_id"] in report_jobs(STAFF) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run["job_id"] not in report_jobs(STAFF)
    assert json.loads(c.get(f"{API}/runs/{run['id']}").text)["status"] == "cancelled"


def test_the_command_line_runs_and_lists_through_the_service(
    oidc_hub: RunningHub, clients: dict[str, httpx.Client]
) -> None:
    env = {
        **os.environ,
        "FACTORYHUB_HUB_URL": oidc_hub.url,
        "FACTORYHUB_TOKEN": clients[STAFF].headers["Authorization"].removeprefix("token "),
    }
    cli = str(RunningHub.venv() / "bin" / "factoryhub")
    done = subprocess.run(
        [cli, "report", "run", "quick", "-p", "n=4", "-p", "label=cli", "--wait"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("run ") and "of quick:" in first
    assert "succeeded" in done.stdout and "html: http://127.0.0.1" in done.stdout
    run_id = first.split()[1]
    listed = subprocess.run(
        [cli, "report", "list", "--report", "quick"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0 and run_id in listed.stdout.split()
    bad = subprocess.run(
        [cli, "report", "run", "quick", "-p", "n=four"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "n: expected a whole number" in bad.stderr


def test_the_built_in_usage_report_runs_through_the_service(
    clients: dict[str, httpx.Client],
) -> None:
    c = clients[STAFF]
    run = start(c, "usage", days=2)
    done = wait_run(c, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert done["status"] == "succeeded", done
    html = c.get(done["links"]["html"]).text
    # this session's report jobs are in Slurm accounting: the test project is charged
    assert TEST_PROJECT["account"] in html
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64', html)) >= 2
