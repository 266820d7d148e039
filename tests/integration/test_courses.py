"""Courses against the real hub, IdP, Slurm (slurmdbd) and Courses service: the test course
of ``oidc_fixtures`` (trainer fhtest-trainer; participants fhtest-pupil-a and -b by IdP group,
fhtest-pupil-c by name; materials in a git repository).

The tests run in file order and build on each other like a course day: participants sign in
and one starts their pinned course server; the trainer checks capacity against a Slurm
reservation and starts all; opens a participant's server; updates the materials; collects the
notebooks; stops all; and the course closes after its end date.
"""

from __future__ import annotations

import contextlib
import html
import json
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from tests.support.hub import RunningHub

from .idp_fixtures import TEST_PASSWORD
from .oidc_fixtures import (
    COURSE,
    COURSE_PUPILS,
    COURSE_TRAINER,
    TEST_PROJECT,
    cancel_jobs_of,
    commit_course_files,
    hub_sign_in,
    notebook_text,
    reset_course_homes,
)
from .test_dask import token_of, wait_for

pytestmark = pytest.mark.slurm

API = f"/services/courses/api/courses/{COURSE}"
RESERVATION = "fhtest-course-res"
# Measured on the 2-core test machine: 3 servers ready 6-12 s after start-all. The bound
# leaves room for a loaded CI machine, and still fails when start-all serialises or hangs.
START_ALL_BOUND_S = 90.0


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def course_folder(user: str) -> Path:
    return home(user) / "courses" / COURSE


def squeue(user: str) -> list[dict[str, str]]:
    """The user's active jobs, read from ``squeue --json``."""
    from .slurm_fixtures import queue_jobs

    return [
        {"id": str(j["job_id"]), "state": j["job_state"], "name": j["name"],
         "account": j["account"], "reservation": j["resv_name"],
         "partition": j["partition"], "cpus": str(j["cpus"])}
        for j in queue_jobs(user)
    ]  # fmt: skip


def course_jobs(user: str) -> list[dict[str, str]]:
    return [
        j
        for j in squeue(user)
        if j["name"] == f"factoryhub-server-{user}-{COURSE}" and j["state"] != "COMPLETING"
    ]


class Person:
    """A signed-in test user: a token for the hub API and the service, and a cookie client."""

    def __init__(self, hub: RunningHub, name: str) -> None:
        self.name = name
        self.browser, _ = hub_sign_in(hub, name, TEST_PASSWORD)
        self.token = token_of(hub, name)
        self.api = httpx.Client(
            base_url=hub.url, headers={"Authorization": f"token {self.token}"}, timeout=60
        )

    def close(self) -> None:
        self.browser.close()
        self.api.close()


@pytest.fixture(scope="module")
def people(oidc_hub: RunningHub) -> Iterator[dict[str, Person]]:
    reset_course_homes()
    signed = {n: Person(oidc_hub, n) for n in [COURSE_TRAINER, *COURSE_PUPILS, "fhtest-oidc"]}
    try:
        yield signed
    finally:
        # the course as the fixture made it: no reservation (it is deleted below)
        signed[COURSE_TRAINER].api.patch(API, json={"reservation": ""})
        with oidc_hub.client() as c:
            for name in COURSE_PUPILS:
                c.delete(f"/hub/api/users/{name}/servers/{COURSE}")
        time.sleep(2)
        cancel_jobs_of([COURSE_TRAINER, *COURSE_PUPILS])
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                ["scontrol", "delete", f"reservation={RESERVATION}"],
                check=True,
                capture_output=True,
            )
        for p in signed.values():
            p.close()


def state(people: dict[str, Person]) -> dict[str, Any]:
    r = people[COURSE_TRAINER].api.get(API)
    assert r.status_code == 200, r.text
    return r.json()


def states(people: dict[str, Person]) -> dict[str, str]:
    return {p["name"]: p["state"] for p in state(people)["participants"]}


def server_of(hub: RunningHub, user: str) -> dict[str, Any] | None:
    with hub.client() as c:
        return c.get(f"/hub/api/users/{user}").json().get("servers", {}).get(COURSE)


def test_participants_are_in_the_course_group_and_see_their_course(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    # the service keeps the hub group course:<name> equal to the participants (by IdP group
    # and by name), which is what the trainers' role grants access to
    with oidc_hub.client() as c:

        def grouped() -> bool:
            r = c.get(f"/hub/api/groups/course:{COURSE}")
            return r.status_code == 200 and sorted(r.json()["users"]) == COURSE_PUPILS

        wait_for(grouped, 20, "the course group holding the three participants")
    page = people["fhtest-pupil-c"].browser.get(f"{oidc_hub.url}/hub/home")
    assert 'id="factoryhub-courses"' in page.text and "FH Test Course" in page.text
    assert f"/hub/spawn/fhtest-pupil-c/{COURSE}" in page.text
    assert 'id="factoryhub-courses-link"' in page.text  # the Courses service is linked
    other = people["fhtest-oidc"].browser.get(f"{oidc_hub.url}/hub/home")
    assert "FH Test Course" not in other.text


def test_a_non_trainer_cannot_open_the_course_page(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    for name in ("fhtest-oidc", "fhtest-pupil-a"):
        page = people[name].browser.get(f"{oidc_hub.url}/services/courses/course/{COURSE}")
        assert page.status_code == 403, (name, page.status_code)
        assert "Only the trainers of FH Test Course" in page.text
        api = people[name].api.get(API)
        assert api.status_code == 403, api.text
        acted = people[name].api.post(f"{API}/start-all")
        assert acted.status_code == 403, acted.text
    index = people["fhtest-oidc"].browser.get(f"{oidc_hub.url}/services/courses/")
    assert 'id="fh-no-course"' in index.text
    trainer = people[COURSE_TRAINER].browser.get(f"{oidc_hub.url}/services/courses/")
    assert f'data-course="{COURSE}"' in trainer.text


def test_a_participant_gets_the_pinned_profile_and_the_materials(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    pupil = people["fhtest-pupil-c"]  # in the course by name only: not in the project's group
    # no form: the spawn page starts the server at once (pinned profile, no choice)
    spawn = pupil.browser.get(f"{oidc_hub.url}/hub/spawn/{pupil.name}/{COURSE}")
    assert 'name="profile"' not in spawn.text, spawn.text[:500]
    wait_for(lambda: (server_of(oidc_hub, pupil.name) or {}).get("ready"), 120, "pupil-c ready")
    jobs = course_jobs(pupil.name)
    assert len(jobs) == 1, jobs
    # the course project's account (the spawner added the participant to it) and the
    # profile's partition and CPUs, whatever the participant might have wished
    assert jobs[0]["account"] == TEST_PROJECT["account"]
    assert (jobs[0]["partition"], jobs[0]["cpus"]) == ("interactive", "1")
    # the materials (the service's mirror of the git repository) are in the course folder
    folder = course_folder(pupil.name)
    assert json.loads((folder / "01-welcome.ipynb").read_text())["cells"][0]["source"] == [
        "welcome, version 1"
    ]
    assert (folder / "notes/reading.md").read_text() == "reading list, version 1\n"
    assert (folder / "01-welcome.ipynb").stat().st_uid == pwd.getpwnam(pupil.name).pw_uid
    # options sent for a course server change nothing: the course's profile is pinned
    with oidc_hub.client() as c:
        r = c.post(f"/hub/api/users/fhtest-pupil-b/servers/{COURSE}", json={"profile": "gpu-1"})
        assert r.status_code in (201, 202), r.text
    wait_for(lambda: len(course_jobs("fhtest-pupil-b")) == 1, 30, "pupil-b's job")
    (job,) = course_jobs("fhtest-pupil-b")
    assert (job["partition"], job["cpus"]) == ("interactive", "1"), job
    wait_for(lambda: (server_of(oidc_hub, "fhtest-pupil-b") or {}).get("ready"), 120, "pupil-b")
    with oidc_hub.client() as c:
        assert c.delete(f"/hub/api/users/fhtest-pupil-b/servers/{COURSE}").status_code in (
            202,
            204,
        )
    wait_for(lambda: course_jobs("fhtest-pupil-b") == [], 30, "pupil-b's job ended")
    # named servers are course servers: any other name is refused, saying why
    r = pupil.api.post(f"/hub/api/users/{pupil.name}/servers/my-own", json={})
    assert r.status_code == 400 and "no course called 'my-own'" in r.text, r.text
    # someone not in the course cannot start its server
    r = people["fhtest-oidc"].api.post(f"/hub/api/users/fhtest-oidc/servers/{COURSE}", json={})
    assert r.status_code == 400 and "not a participant" in r.text, r.text


def test_start_all_uses_the_reservation_and_starts_everyone_within_the_bound(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    subprocess.run(
        [
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={RESERVATION}",
            "StartTime=now",
            "Duration=60",
            f"Nodes={node}",
            "CoreCnt=4",
            f"Accounts={TEST_PROJECT['account']}",
        ],
        check=True,
        capture_output=True,
    )
    trainer = people[COURSE_TRAINER]
    # a reservation that does not exist is shown as a problem before anyone starts
    r = trainer.api.patch(API, json={"reservation": "no-such-reservation"})
    assert r.status_code == 200, r.text
    assert "no reservation called no-such-reservation" in state(people)["capacity"]["problem"]
    r = trainer.api.patch(API, json={"reservation": "bad name!"})
    assert r.status_code == 400 and "reservation" in r.json()["problems"], r.text
    assert trainer.api.patch(API, json={"reservation": RESERVATION}).status_code == 200

    # pupil-c runs already (the test before, outside the reservation): 2 waiting, and the
    # reservation's 4 cores hold 4 servers of the course's 1-CPU profile
    before = state(people)
    assert before["waiting"] == 2 and before["running"] == 1, before
    assert before["capacity"]["slots"] == 4 and before["capacity"]["problem"] == ""
    page = trainer.browser.get(f"{oidc_hub.url}/services/courses/course/{COURSE}")
    assert 'id="fh-capacity" data-slots="4" data-waiting="2"' in page.text

    begun = time.monotonic()
    r = trainer.api.post(f"{API}/start-all")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["asked"]) == ["fhtest-pupil-a", "fhtest-pupil-b"], r.json()
    assert r.json()["skipped"] == {"fhtest-pupil-c": "already running"}
    took = wait_for(
        lambda: set(states(people).values()) == {"running"}, START_ALL_BOUND_S, "everyone running"
    )
    print(f"start-all: 2 servers running {time.monotonic() - begun:.1f} s after the click")
    assert took < START_ALL_BOUND_S
    for name in ("fhtest-pupil-a", "fhtest-pupil-b"):
        (job,) = course_jobs(name)
        assert job["reservation"] == RESERVATION, job
        assert job["account"] == TEST_PROJECT["account"]
    # the service records how long everyone took
    wait_for(
        lambda: any(e["kind"] == "all-ready" for e in state(people)["events"]), 20, "all-ready"
    )
    assert state(people)["capacity"]["slots"] == 2  # 2 of the 4 reserved cores in use


def test_the_trainer_opens_a_participants_server_and_others_cannot(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    server = f"{oidc_hub.url}/user/fhtest-pupil-a/{COURSE}"
    trainer = people[COURSE_TRAINER].browser
    # through the hub's OAuth, as a browser would: the hub asks the trainer to confirm the
    # access to someone else's server once, then JupyterLab answers
    lab = confirm_access(trainer, trainer.get(f"{server}/lab"))
    assert lab.status_code == 200 and str(lab.url).startswith(server), (lab.status_code, lab.url)
    assert "JupyterLab" in lab.text
    listing = trainer.get(f"{server}/api/contents/courses/{COURSE}")
    assert listing.status_code == 200, (listing.status_code, listing.text[:300])
    assert "01-welcome.ipynb" in {item["name"] for item in listing.json()["content"]}
    for name in ("fhtest-pupil-b", "fhtest-oidc"):
        refused = people[name].browser.get(f"{server}/lab")
        assert refused.status_code == 403, (name, refused.status_code, refused.url)
    # the trainer's access is to the course group's servers only
    people["fhtest-oidc"].api.post("/hub/api/users/fhtest-oidc/server", json={})
    try:
        wait_for(lambda: _ready(oidc_hub, "fhtest-oidc", ""), 120, "fhtest-oidc's server")
        other = people[COURSE_TRAINER].browser.get(f"{oidc_hub.url}/user/fhtest-oidc/lab")
        assert other.status_code == 403, (other.status_code, other.url)
    finally:
        oidc_hub.stop_server("fhtest-oidc")


def confirm_access(client: httpx.Client, page: httpx.Response) -> httpx.Response:
    """Click "Authorize" on the hub's page that asks a user to confirm their access to another
    user's server (the page a browser shows); other pages are returned as they are."""
    if "/hub/api/oauth2/authorize" not in str(page.url) or page.status_code != 200:
        return page
    fields = re.findall(r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"', page.text)
    assert fields, page.text[:500]
    return client.post(
        str(page.url),
        content=urlencode([(k, html.unescape(v)) for k, v in fields]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def _ready(hub: RunningHub, user: str, server: str) -> bool:
    with hub.client() as c:
        return bool(
            c.get(f"/hub/api/users/{user}").json().get("servers", {}).get(server, {}).get("ready")
        )


def test_a_participants_edits_survive_a_materials_update(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    pupil = "fhtest-pupil-a"
    folder = course_folder(pupil)
    mine = notebook_text("my own answers")
    subprocess.run(
        ["runuser", "-u", pupil, "--", "tee", str(folder / "01-welcome.ipynb")],
        input=mine,
        text=True,
        check=True,
        capture_output=True,
    )
    repo = Path(
        yaml.safe_load(oidc_hub.site_file.read_text())["courses"]["list"][0]["materials"]["git"]
    )
    commit = commit_course_files(
        repo,
        {
            "01-welcome.ipynb": "welcome, version 2",
            "notes/reading.md": "reading list, version 2",
            "02-next.ipynb": "the second session",
        },
        "second session",
    )
    trainer = people[COURSE_TRAINER]
    r = trainer.api.post(f"{API}/materials")
    assert r.status_code == 200 and r.json()["commit"] == commit, r.text
    # the participant gets the update at their next start
    assert trainer.api.post(f"{API}/participants/{pupil}/stop").status_code == 200
    wait_for(lambda: states(people)[pupil] == "stopped", 60, "pupil-a stopped")
    assert trainer.api.post(f"{API}/participants/{pupil}/start").status_code == 200
    wait_for(lambda: states(people)[pupil] == "running", 120, "pupil-a running again")
    assert (folder / "01-welcome.ipynb").read_text() == mine  # their edit stays
    assert (folder / "notes/reading.md").read_text() == "reading list, version 2\n"  # untouched
    assert "the second session" in (folder / "02-next.ipynb").read_text()  # new


def test_collect_copies_every_participants_notebooks_to_the_trainer(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    r = people[COURSE_TRAINER].api.post(f"{API}/collect")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["problems"] == {}, result
    assert result["copied"] == {
        "fhtest-pupil-a": 2,  # 01-welcome (their edit) and 02-next
        "fhtest-pupil-b": 1,
        "fhtest-pupil-c": 1,
    }, result
    target = Path(result["target"])
    assert target.is_relative_to(home(COURSE_TRAINER) / "collected" / COURSE)
    copy = target / "fhtest-pupil-a" / "01-welcome.ipynb"
    assert "my own answers" in copy.read_text()
    assert copy.stat().st_uid == pwd.getpwnam(COURSE_TRAINER).pw_uid
    assert not (target / "fhtest-pupil-a" / "notes").exists()  # notebooks only


def test_stop_all_then_the_course_closes_after_its_end_date(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    trainer = people[COURSE_TRAINER]
    r = trainer.api.post(f"{API}/stop-all")
    assert r.status_code == 200 and len(r.json()["asked"]) == 3, r.text
    wait_for(lambda: set(states(people).values()) == {"stopped"}, 60, "everyone stopped")
    assert all(course_jobs(name) == [] for name in COURSE_PUPILS)
    original = state(people)["course"]
    # a participant still working when the course ends is stopped by the service
    assert trainer.api.post(f"{API}/participants/fhtest-pupil-b/start").status_code == 200
    wait_for(lambda: states(people)["fhtest-pupil-b"] == "running", 120, "pupil-b running")
    ended = time.strftime("%Y-%m-%d", time.localtime(time.time() - 2 * 86400))
    try:
        r = trainer.api.patch(API, json={"start": ended, "end": ended})
        assert r.status_code == 200 and not r.json()["course"]["open"], r.text
        wait_for(lambda: states(people)["fhtest-pupil-b"] == "stopped", 30, "closed course")
        assert course_jobs("fhtest-pupil-b") == []
        # and no participant can start it again: refused before any job, saying why
        r = people["fhtest-pupil-c"].api.post(
            f"/hub/api/users/fhtest-pupil-c/servers/{COURSE}", json={}
        )
        assert r.status_code == 400 and "ended on" in r.text, r.text
        assert course_jobs("fhtest-pupil-c") == []
        assert trainer.api.post(f"{API}/start-all").status_code == 409
        kinds = [e["kind"] for e in state(people)["events"]]
        assert "course-ended" in kinds, kinds
    finally:
        trainer.api.patch(API, json={"start": original["start"], "end": original["end"]})
