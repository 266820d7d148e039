"""Trainers reach course servers only, and only of people who consented: against the real hub,
IdP, Slurm and Courses service, with the test course of ``oidc_fixtures`` (trainer
fhtest-trainer by the group fhtest-trainers; participants fhtest-pupil-a/-b by group and
fhtest-pupil-c by name).

fhtest-oidc (a project member with a default server of their own) is added by the trainer:
invited, they cannot be started or reached until they accept; after accepting, the trainer
opens their course server (through the hub's "Authorize" page) and is refused their default
server; another participant is refused it too; when the course ends, the trainer's share is
gone. A hub admin cannot be added at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.hub import RunningHub

from .idp_fixtures import DEMO_PASSWORD
from .oidc_fixtures import COURSE, COURSE_TRAINER, cancel_jobs_of, hub_sign_in
from .test_courses import API, Person, confirm_access
from .test_dask import wait_for

pytestmark = [pytest.mark.security, pytest.mark.slurm]

INVITEE = "fhtest-oidc"
OTHER = "fhtest-pupil-a"
ADMIN = "ada"  # a demo user of the IdP in factory-admins: a hub admin once signed in
INVITATIONS = "/services/courses/api/invitations"


@pytest.fixture(scope="module")
def people(oidc_hub: RunningHub) -> Iterator[dict[str, Person]]:
    signed = {n: Person(oidc_hub, n) for n in (COURSE_TRAINER, INVITEE, OTHER)}
    r = signed[COURSE_TRAINER].api.get(API)
    assert r.status_code == 200, r.text
    original = r.json()["course"]
    try:
        yield signed
    finally:
        signed[COURSE_TRAINER].api.patch(
            API,
            json={
                "participant_users": original["participant_users"],
                "start": original["start"],
                "end": original["end"],
            },
        )
        with oidc_hub.client() as c:
            c.delete(f"/hub/api/users/{INVITEE}/servers/{COURSE}")
        oidc_hub.stop_server(INVITEE)
        time.sleep(2)
        cancel_jobs_of([INVITEE])
        for p in signed.values():
            p.close()


def shares_of(owner: Person) -> set[tuple[str, str]]:
    """(server name, whom) for every share of ``owner``'s servers, as the owner sees them
    (whom: "user:<name>" or "group:<name>")."""
    r = owner.api.get(f"/hub/api/shares/{owner.name}")
    assert r.status_code == 200, r.text
    found = set()
    for share in r.json()["items"]:
        whom = share.get("user") or share.get("group") or {}
        kind = "user" if share.get("user") else "group"
        found.add((share["server"]["name"], f"{kind}:{whom.get('name')}"))
    return found


TRAINERS = f"user:{COURSE_TRAINER}"


def ready(hub: RunningHub, user: str, server: str) -> bool:
    with hub.client() as c:
        model = c.get(f"/hub/api/users/{user}").json()
    return bool((model.get("servers") or {}).get(server, {}).get("ready"))


def participant_list(people: dict[str, Person]) -> list[str]:
    return people[COURSE_TRAINER].api.get(API).json()["course"]["participant_users"]


def test_a_hub_admin_cannot_be_added(oidc_hub: RunningHub, people: dict[str, Person]) -> None:
    hub_sign_in(oidc_hub, ADMIN, DEMO_PASSWORD)[0].close()
    with oidc_hub.client() as c:
        assert c.get(f"/hub/api/users/{ADMIN}").json()["admin"] is True
    names = participant_list(people)
    r = people[COURSE_TRAINER].api.patch(API, json={"participant_users": [*names, ADMIN]})
    assert r.status_code == 400, r.text
    assert "hub admins cannot be added" in r.json()["message"], r.text
    assert ADMIN not in participant_list(people)


def test_an_invited_person_cannot_be_started_or_reached_before_accepting(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    trainer = people[COURSE_TRAINER]
    names = participant_list(people)
    r = trainer.api.patch(API, json={"participant_users": [*names, INVITEE]})
    assert r.status_code == 200, r.text
    roster = {p["name"]: p["state"] for p in trainer.api.get(API).json()["participants"]}
    assert roster[INVITEE] == "invited", roster
    # the trainer can start nothing of theirs
    r = trainer.api.post(f"{API}/participants/{INVITEE}/start")
    assert r.status_code == 409 and "not accepted" in r.text, r.text
    r = trainer.api.post(f"{API}/start-all")
    assert r.status_code == 200 and INVITEE not in r.json()["asked"], r.text
    time.sleep(6)  # more than one upkeep tick of the service
    assert not ready(oidc_hub, INVITEE, COURSE)
    # the invitee's own course server start is refused too (they are not in the course)
    r = people[INVITEE].api.post(f"/hub/api/users/{INVITEE}/servers/{COURSE}", json={})
    assert r.status_code == 400, r.text
    assert shares_of(people[INVITEE]) == set()
    # they see the invitation
    r = people[INVITEE].api.get(INVITATIONS)
    assert [i["course"] for i in r.json()["invitations"]] == [COURSE], r.text
    home = people[INVITEE].browser.get(f"{oidc_hub.url}/hub/home")
    assert "factoryhub-course-answer" in home.text


def test_the_trainer_reaches_the_course_server_only_after_acceptance(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    trainer = people[COURSE_TRAINER]
    invitee = people[INVITEE]
    r = invitee.api.post(f"{INVITATIONS}/{COURSE}/accept")
    assert r.status_code == 200 and r.json()["participant"], r.text
    # the invitee's default server (their own work) and the course server, started by the
    # trainer
    assert invitee.api.post(f"/hub/api/users/{INVITEE}/server", json={}).status_code in (201, 202)
    r = trainer.api.post(f"{API}/participants/{INVITEE}/start")
    assert r.status_code == 200, r.text
    wait_for(lambda: ready(oidc_hub, INVITEE, ""), 120, "the invitee's default server")
    wait_for(lambda: ready(oidc_hub, INVITEE, COURSE), 120, "the invitee's course server")
    wait_for(lambda: (COURSE, TRAINERS) in shares_of(invitee), 30, "the course share")
    assert shares_of(invitee) == {(COURSE, TRAINERS)}  # that server, not the default one
    # the trainer opens the course server through the "Authorize" page
    course_server = f"{oidc_hub.url}/user/{INVITEE}/{COURSE}"
    lab = confirm_access(trainer.browser, trainer.browser.get(f"{course_server}/lab"))
    assert lab.status_code == 200 and str(lab.url).startswith(course_server), lab.url
    assert "JupyterLab" in lab.text
    # ... and is refused the default server, and another participant the course server
    mine = trainer.browser.get(f"{oidc_hub.url}/user/{INVITEE}/lab")
    assert mine.status_code == 403, (mine.status_code, mine.url)
    other = people[OTHER].browser.get(f"{course_server}/lab")
    assert other.status_code == 403, (other.status_code, other.url)


def test_when_the_course_ends_the_trainers_access_is_gone(
    oidc_hub: RunningHub, people: dict[str, Person]
) -> None:
    trainer = people[COURSE_TRAINER]
    assert (COURSE, TRAINERS) in shares_of(people[INVITEE])
    ended = time.strftime("%Y-%m-%d", time.localtime(time.time() - 2 * 86400))
    r = trainer.api.patch(API, json={"start": ended, "end": ended})
    assert r.status_code == 200 and not r.json()["course"]["open"], r.text
    wait_for(lambda: not shares_of(people[INVITEE]), 30, "the course share revoked")
    assert not shares_of(people[OTHER])
    wait_for(lambda: not ready(oidc_hub, INVITEE, COURSE), 60, "the course server stopped")
