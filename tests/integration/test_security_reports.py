"""Security tests of the Reports service (issue 17), against the real hub, identity provider
and Slurm (the OIDC hub of oidc_fixtures): path parameters stay in the runner's folders, one
run's malformed outputs cannot stop the service or other runs, limits refuse naming the
limit, and the service account runs only the site file's site reports. That a person's
schedule runs as that person: test_reports.test_a_schedule_fires_on_time_as_the_member_who_made_it
(marked security too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.hub import RunningHub

from .oidc_fixtures import REPORTS_LIMITS, REPORTS_USER, SITE_REPORT
from .test_reports import (
    API,
    OTHER,
    STAFF,
    report_jobs,
    start,
    token_of,
    wait_for_service,
    wait_run,
)

pytestmark = [pytest.mark.slurm, pytest.mark.security]

FINAL = {"succeeded", "failed", "cancelled"}
MALFORMED = {
    "list": "not a notebook",
    "cells": "cell 0 is not an object",
    "deep": "nested deeper than",
    "big": "larger than",
}


@pytest.fixture(scope="module")
def staff(oidc_hub: RunningHub) -> Iterator[httpx.Client]:
    c = httpx.Client(
        base_url=oidc_hub.url,
        headers={"Authorization": f"token {token_of(oidc_hub, STAFF)}"},
        timeout=60,
    )
    wait_for_service(c, 60)
    yield c
    c.close()


def test_a_path_parameter_outside_the_allowed_folders_is_refused_naming_it(
    staff: httpx.Client,
) -> None:
    """model-evaluation's ``data`` and ``evaluate_notebook`` are path parameters: a path out
    of the runner's home (or through a link out of it) never reaches a job."""
    for name, value in [
        ("data", "/etc"),
        ("evaluate_notebook", "/root/evil.ipynb"),
        ("data", f"~/../{OTHER}"),
        ("evaluate_notebook", f"/home/{REPORTS_USER}/x.ipynb"),
    ]:
        for path in ("runs", "schedules"):
            body: dict[str, Any] = {"report": "model-evaluation", "parameters": {name: value}}
            if path == "schedules":
                body["cron"] = "0 6 * * 1"
            r = staff.post(f"{API}/{path}", json=body)
            assert r.status_code == 400, (name, value, r.text)
            assert set(r.json()["problems"]) == {name}, r.text
            assert f"the path parameter {name}" in r.json()["message"], r.text
    assert report_jobs(STAFF) == []
    assert not [s for s in staff.get(f"{API}/schedules").json()["schedules"] if not s["site"]]


def test_malformed_outputs_fail_their_runs_while_others_finish_and_the_service_answers(
    staff: httpx.Client,
) -> None:
    hostile = {kind: start(staff, "hostile", kind=kind) for kind in MALFORMED}
    good = start(staff, "quick", label="beside hostile runs")
    slowest = 0.0
    stop = threading.Event()

    def probe() -> None:  # the service keeps answering while it reads the hostile outputs
        nonlocal slowest
        while not stop.is_set():
            began = time.monotonic()
            assert staff.get(f"{API}/reports").status_code == 200
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        done = wait_run(staff, good["id"], FINAL, 180)
        ended = {kind: wait_run(staff, run["id"], FINAL, 180) for kind, run in hostile.items()}
    finally:
        stop.set()
        prober.join(10)
    assert done["status"] == "succeeded", done
    for kind, run in ended.items():
        assert run["status"] == "failed", (kind, run)
        assert MALFORMED[kind] in run["error"], (kind, run["error"])
    assert slowest < 5, f"the service took {slowest:.1f} s to answer"
    # and it goes on: a new run after them succeeds
    after = start(staff, "quick", label="after")
    assert wait_run(staff, after["id"], FINAL, 120)["status"] == "succeeded"


def test_the_schedules_limit_refuses_naming_itself(staff: httpx.Client) -> None:
    limit = REPORTS_LIMITS["schedules_per_person"]
    made = []
    try:
        for i in range(limit):
            r = staff.post(f"{API}/schedules", json={"report": "quick", "cron": f"{i} 6 * * 1"})
            assert r.status_code == 201, r.text
            made.append(r.json()["id"])
        r = staff.post(f"{API}/schedules", json={"report": "quick", "cron": "30 6 * * 1"})
        assert r.status_code == 429, r.text
        message = r.json()["message"]
        assert f"reports.limits.schedules_per_person is {limit}" in message, message
    finally:
        for schedule_id in made:
            staff.delete(f"{API}/schedules/{schedule_id}")


def test_the_concurrent_runs_limit_refuses_naming_itself(staff: httpx.Client) -> None:
    limit = REPORTS_LIMITS["concurrent_runs_per_person"]
    active = [r for r in staff.get(f"{API}/runs").json()["runs"] if r["status"] not in FINAL]
    started = []
    try:
        for _ in range(limit - len([r for r in active if r["user"] == STAFF])):
            started.append(start(staff, "slow", seconds=120))
        r = staff.post(f"{API}/runs", json={"report": "quick", "parameters": {}})
        assert r.status_code == 429, r.text
        message = r.json()["message"]
        assert f"reports.limits.concurrent_runs_per_person is {limit}" in message, message
    finally:
        for run in started:
            staff.post(f"{API}/runs/{run['id']}/cancel")


def test_only_the_site_files_site_report_runs_as_the_service_account(
    staff: httpx.Client,
) -> None:
    listed = staff.get(f"{API}/schedules").json()["schedules"]
    site = [s for s in listed if s["site"]]
    assert len(site) == 1, listed
    (s,) = site
    assert (s["report"], s["cron"], s["run_as"]) == ("quick", SITE_REPORT["schedule"], REPORTS_USER)
    assert s["parameters"]["label"] == "site"
    # nobody removes it through the service, not even its see_all staff
    r = staff.delete(f"{API}/schedules/{s['id']}")
    assert r.status_code == 403 and "reports.site_reports" in r.json()["message"], r.text
    assert all(s["run_as"] == s["user"] == STAFF for s in listed if not s["site"])
