"""Participants consent, trainers reach course servers only: the course model's invitations,
the store's answers, and the Courses service's desk against a fake hub (edits that add an
admin are refused, an invited person cannot be started, shares follow the course)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from factoryhub.hub.courses.desk import CourseDesk
from factoryhub.hub.courses.home import courses_for_home
from factoryhub.hub.courses.roster import participants
from factoryhub.hub.service_web import Person, Refused
from factoryhub.hub.site import loader as site
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import Course, course_groups, load_courses

from .test_courses import a_course as base_course

TODAY = date.today()


def a_course(**changes: Any) -> Course:
    """test_courses' course, named and taught as the consent tests need."""
    return base_course(**{"name": "intro-ai", "trainer_users": ("tara",), **changes})


def test_people_a_trainer_adds_are_invited_until_they_accept() -> None:
    (c,) = load_courses(
        [a_course().to_config()], {"intro-ai": {"participant_users": ["ann", "ivy"]}}
    )
    assert c.is_participant("ann", []) and c.is_participant("bob", ["cohort"])
    assert not c.is_participant("ivy", []) and c.invitation("ivy", []) == "invited"
    assert course_groups([c], "ivy", []) == set()  # no course group at sign-in either
    (c,) = load_courses(
        [a_course().to_config()],
        {"intro-ai": {"participant_users": ["ann", "ivy", "joe"], "accepted_users": ["ivy"]}},
    )
    assert c.is_participant("ivy", []) and c.invitation("ivy", []) == ""
    assert c.invitation("joe", []) == "invited"
    (c,) = load_courses(
        [a_course().to_config()],
        {"intro-ai": {"participant_users": ["ann", "joe"], "declined_users": ["joe"]}},
    )
    assert c.invitation("joe", []) == "declined" and not c.is_participant("joe", [])
    # an answer for someone no longer listed makes them nothing
    assert (
        load_courses([a_course().to_config()], {"intro-ai": {"accepted_users": ["zed"]}})[
            0
        ].is_participant("zed", [])
        is False
    )


def test_the_store_keeps_answers_beside_the_edits(tmp_path: Path) -> None:
    store = CourseStore(tmp_path / "c" / "courses.sqlite")
    store.save_edits("intro-ai", {"participant_users": ["ann", "ivy"]}, "tara")
    store.answer("intro-ai", "ivy", accept=False)
    assert store.edits()["intro-ai"]["declined_users"] == ["ivy"]
    store.answer("intro-ai", "ivy", accept=True)
    edits = store.edits()["intro-ai"]
    assert edits["accepted_users"] == ["ivy"] and edits["declined_users"] == []
    assert [e.kind for e in store.events("intro-ai")][:2] == [
        "invitation-accepted",
        "invitation-declined",
    ]


def test_the_home_page_shows_an_invitation(tmp_path: Path) -> None:
    db = tmp_path / "courses.sqlite"
    CourseStore(db).save_edits("intro-ai", {"participant_users": ["ann", "ivy"]}, "tara")
    user = type("U", (), {"name": "ivy", "groups": [], "spawners": {}})()
    (entry,) = courses_for_home([a_course()], str(db), user)
    assert entry["invited"] and not entry["takes"]


class FakeHub:
    """The Courses service's view of the hub: users, groups and shares in memory."""

    api_url = "http://127.0.0.1:1/hub/api"
    token = "t"

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.models = users
        self.shares: set[tuple[str, str, str, str]] = set()  # (owner, server, kind, name)
        self.started: list[tuple[str, str]] = []

    async def users(self) -> dict[str, dict[str, Any]]:
        return self.models

    async def sync_group(self, course: Course, members: set[str], users: Any) -> Any:
        return set(), set()

    async def shared_with(self, kind: str, name: str) -> set[tuple[str, str]]:
        return {(o, s) for o, s, k, n in self.shares if (k, n) == (kind, name)}

    async def share(self, owner: str, server: str, kind: str, name: str) -> None:
        self.shares.add((owner, server, kind, name))

    async def unshare(self, owner: str, server: str, kind: str, name: str) -> None:
        self.shares.discard((owner, server, kind, name))

    async def start(self, user: str, server: str) -> None:
        self.started.append((user, server))

    async def stop(self, user: str, server: str) -> None:
        pass


def server(ready: bool = True) -> dict[str, Any]:
    return {"ready": ready, "url": "/user/x/intro-ai/"}


@pytest.fixture
def desk(tmp_path: Path) -> tuple[CourseDesk, FakeHub]:
    s = site.load_site(site.example_site_path())
    hub = FakeHub(
        {
            "tara": {"groups": ["trainers"], "servers": {}},
            "sofia": {"groups": [], "servers": {"intro-ai": server(), "": server()}},
            "ivy": {"groups": [], "servers": {"intro-ai": server(False)}},
            "ada": {"groups": [], "admin": True, "servers": {}},
        }
    )
    store = CourseStore(tmp_path / "courses.sqlite")
    d = CourseDesk(s, store, hub, slurm=object())  # type: ignore[arg-type]  # consent never asks Slurm
    return d, hub


async def test_an_admin_cannot_be_added_and_an_invitee_cannot_be_started(
    desk: tuple[CourseDesk, FakeHub],
) -> None:
    d, hub = desk
    course = d.course("intro-ai")
    with pytest.raises(Refused) as refused:
        await d.edit(course, "tara", {"participant_users": "sofia ada"})
    assert "ada" in refused.value.problems["participant_users"]
    assert "hub admins cannot be added" in refused.value.message
    course = await d.edit(course, "tara", {"participant_users": "sofia ivy"})
    roster = {p.name: p.state for p in await d.roster(course)}
    assert roster["ivy"] == "invited"
    with pytest.raises(Refused) as refused:
        await d.start_one(course, "tara", "ivy")
    assert refused.value.status == 409 and "not accepted" in refused.value.message
    assert (await d.start_all(course, "tara")).skipped["ivy"].startswith("invited")
    assert ("ivy", "intro-ai") not in hub.started
    # ivy accepts: now she is in, and the trainer may start her course server
    d.answer(Person("ivy", frozenset()), "intro-ai", accept=True)
    await d.start_one(d.course("intro-ai"), "tara", "ivy")
    assert ("ivy", "intro-ai") in hub.started


async def test_shares_follow_the_course_and_its_people(desk: tuple[CourseDesk, FakeHub]) -> None:
    d, hub = desk
    course = await d.edit(d.course("intro-ai"), "tara", {"participant_users": "sofia ivy"})
    hub.shares.add(("sofia", "", "user", "tara"))  # sofia's own share of her own server
    await d.tick()
    # sofia's course server only (not her default server), not ivy's (she has not accepted)
    assert hub.shares == {
        ("sofia", "", "user", "tara"),
        ("sofia", "intro-ai", "user", "tara"),
    }
    d.answer(Person("ivy", frozenset()), "intro-ai", accept=True)
    await d.tick()
    assert ("ivy", "intro-ai", "user", "tara") in hub.shares
    # ivy leaves the course: her share goes
    await d.edit(d.course("intro-ai"), "tara", {"participant_users": "sofia"})
    await d.tick()
    assert ("ivy", "intro-ai", "user", "tara") not in hub.shares
    # the course ends: every course share goes, the owner's own share stays
    ended = (TODAY - timedelta(days=3)).isoformat()
    await d.edit(course, "tara", {"start": ended, "end": ended})
    await d.tick()
    assert hub.shares == {("sofia", "", "user", "tara")}
    assert participants(d.course("intro-ai"), hub.models)
