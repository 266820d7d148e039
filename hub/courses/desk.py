"""The Courses service's work: what a trainer may see and do with a course.

Pages and JSON API both call :class:`CourseDesk`; it talks to the hub (users, the course
groups, starting and stopping servers), to Slurm (free capacity) and to the store of
trainers' edits and actions. A :class:`Refused` carries the HTTP status and the message for
the person.

Who reaches whose server: each participant's course server (and no other server of theirs)
is shared with the course's trainers while the course is open and the person is in it; the
upkeep tick grants and revokes those shares. A person a trainer adds is invited and is in
only after accepting; hub admins can never be added by a trainer, and an admin's server is
never shared.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from factoryhub.hub.courses import capacity as capacity_mod
from factoryhub.hub.courses.collect import Collected, collect
from factoryhub.hub.courses.roster import Hub, HubError, Participant, participants, wait_for
from factoryhub.hub.service_web import People, Person, Refused
from factoryhub.hub.site.model import Site
from factoryhub.spawners.courses.materials import MaterialsError, mirror_git
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import Course, apply_edits, course_named
from factoryhub.spawners.model.users import is_posix_name
from factoryhub.spawners.slurm.access import make_client
from factoryhub.spawners.slurm.client import SlurmClient, SlurmError, SlurmUnavailable

log = logging.getLogger("factoryhub.courses")
RESERVATION = re.compile(r"^([A-Za-z0-9_.-]{1,64})?$")
START_CONCURRENCY = 8


@dataclass
class Batch:
    """A start-all or stop-all: what was asked of the hub, and how it went."""

    kind: str
    course: str
    asked: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "course": self.course,
            "asked": self.asked,
            "skipped": self.skipped,
            "errors": self.errors,
        }


def trainers_of(course: Course, users: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Whom a course's servers are shared with: ("user", name) for each hub user who is one
    of its trainers, by name or group. (Shares with a whole group are not used: JupyterHub
    leaves group shares out of the tokens its OAuth issues, so the browser never gets them.)"""
    return [
        ("user", name)
        for name, model in sorted(users.items())
        if course.is_trainer(name, model.get("groups") or ())
    ]


def home_of(username: str) -> str | None:
    """The home of ``username`` in this host's user database (the "local" access mode: the
    service runs on a submit host); None when this host does not know them."""
    try:
        return pwd.getpwnam(username).pw_dir
    except KeyError:
        return None


class CourseDesk:
    def __init__(
        self, site: Site, store: CourseStore, hub: Hub, slurm: SlurmClient | None = None
    ) -> None:
        self.site = site
        self.settings = site.courses
        self.store = store
        self.hub = hub
        self.people = People(hub.api_url, hub.token)
        self.slurm = slurm or make_client()
        self.tasks: set[asyncio.Task[Any]] = set()

    def home(self, username: str) -> str | None:
        """Where ``username``'s files are on the cluster; None when the cluster does not
        know them. "local": this host's passwd. "rest": the Slurm client's home
        (slurm.rest.home), never this host's passwd (the service's pod knows nobody); who
        exists was Slurm's word at sign-in."""
        if self.site.slurm.access == "local":
            return home_of(username)
        try:
            return self.slurm.home(username)
        except SlurmError:
            return None

    # ------------------------------------------------------------------ courses and people

    def courses(self) -> tuple[Course, ...]:
        return apply_edits(self.settings.courses, self.store.edits())

    def course(self, name: str) -> Course:
        course = course_named(self.courses(), name)
        if course is None:
            raise Refused(404, f"There is no course called {name}.")
        return course

    async def person(self, name: str) -> Person:
        return await self.people.person(name)

    @staticmethod
    def manages(person: Person, course: Course) -> bool:
        return person.admin or course.is_trainer(person.name, person.groups)

    def managed(self, person: Person) -> list[Course]:
        return [c for c in self.courses() if self.manages(person, c)]

    def taken(self, person: Person) -> list[Course]:
        return [c for c in self.courses() if c.is_participant(person.name, person.groups)]

    def invitations(self, person: Person) -> list[Course]:
        """The courses that invite ``person`` (waiting for, or declined by, them)."""
        return [c for c in self.courses() if c.invitation(person.name, person.groups)]

    def answer(self, person: Person, name: str, accept: bool) -> Course:
        """``person`` accepts or declines their invitation to the course ``name``."""
        course = self.course(name)
        if not course.invitation(person.name, person.groups) and not (
            not accept and course.is_participant(person.name, person.groups)
        ):
            raise Refused(404, f"{course.display_name} has no invitation for {person.name}.")
        if not accept and person.name in (course.site_participant_users or ()):
            raise Refused(409, "The factory's site file puts you in this course.")
        if accept and person.admin:
            raise Refused(403, "A hub admin cannot join a course as a participant.")
        self.store.answer(course.name, person.name, accept)
        log.info(
            "%s %s the invitation to %s",
            person.name,
            "accepted" if accept else "declined",
            course.name,
        )
        return self.course(course.name)

    async def course_for(self, person: Person, name: str) -> Course:
        """The course, if ``person`` is one of its trainers (or a hub admin)."""
        course = self.course(name)
        if not self.manages(person, course):
            raise Refused(
                403,
                f"Only the trainers of {course.display_name} may open its course page. If "
                "you teach it, ask the factory's support to add you to its trainers.",
            )
        return course

    async def roster(self, course: Course) -> list[Participant]:
        try:
            return participants(course, await self.hub.users())
        except HubError as e:
            raise Refused(503, f"The hub did not list the participants: {e.message}") from None

    async def synced_roster(self, course: Course) -> list[Participant]:
        """The roster, with the course's hub group brought up to it first (a person who has
        just accepted can be started at once, not after the next upkeep tick)."""
        try:
            users = await self.hub.users()
            people = participants(course, users)
            await self.hub.sync_group(course, {p.name for p in people if p.signed_in}, users)
        except HubError as e:
            raise Refused(503, f"The hub did not list the participants: {e.message}") from None
        return people

    async def capacity(self, course: Course) -> capacity_mod.Capacity:
        try:
            profile = self.site.profile(course.profile)
        except KeyError:
            return capacity_mod.Capacity(0, 0, 0, "", f"the profile {course.profile} is gone")
        try:
            return await capacity_mod.capacity(self.slurm, profile, course.reservation)
        except (SlurmError, SlurmUnavailable) as e:
            return capacity_mod.Capacity(0, 0, 0, "", f"Slurm did not answer: {e}")

    # ------------------------------------------------------------------ edits

    async def edit(self, course: Course, who: str, form: dict[str, str]) -> Course:
        """Check and save a trainer's changes; every problem is named by its field."""
        problems: dict[str, str] = {}
        changes: dict[str, Any] = {}
        if "participant_users" in form:
            names = sorted({n for n in re.split(r"[\s,]+", form["participant_users"]) if n})
            bad = [n for n in names if not is_posix_name(n)]
            if bad:
                problems["participant_users"] = (
                    f"not user names: {', '.join(bad[:5])} (lowercase letters, digits, _ and -)"
                )
            elif admins := await self._admins(
                set(names) - set(course.site_participant_users or ())
            ):
                problems["participant_users"] = (
                    f"{', '.join(admins)}: hub admins cannot be added to a course from its page"
                )
            changes["participant_users"] = names
            # answers of people no longer invited go with them (a new invitation asks again)
            changes["accepted_users"] = sorted(set(course.accepted_users) & set(names))
            changes["declined_users"] = sorted(set(course.declined_users) & set(names))
        days: dict[str, date] = {}
        for key in ("start", "end"):
            if key in form:
                try:
                    days[key] = date.fromisoformat(form[key].strip())
                    changes[key] = days[key].isoformat()
                except ValueError:
                    problems[key] = f"expected a day written YYYY-MM-DD, got {form[key]!r}"
        start = days.get("start", course.start)
        end = days.get("end", course.end)
        if "start" not in problems and "end" not in problems and end < start:
            problems["end"] = f"the course would end ({end}) before it starts ({start})"
        if "reservation" in form:
            value = form["reservation"].strip()
            if not RESERVATION.fullmatch(value):
                problems["reservation"] = "a Slurm reservation name (letters, digits, _.-) or empty"
            changes["reservation"] = value
        if "description" in form:
            if len(form["description"]) > 500:
                problems["description"] = "at most 500 characters"
            changes["description"] = form["description"].strip()
        if problems:
            raise Refused(
                400, "The course was not changed: " + "; ".join(problems.values()), problems
            )
        self.store.save_edits(course.name, changes, who)
        log.info("%s changed the course %s: %s", who, course.name, changes)
        return self.course(course.name)

    async def _admins(self, names: set[str]) -> list[str]:
        if not names:
            return []
        try:
            users = await self.hub.users()
        except HubError as e:
            raise Refused(503, f"The hub did not list its users: {e.message}") from None
        return sorted(n for n in names if (users.get(n) or {}).get("admin"))

    # ------------------------------------------------------------------ servers

    async def start_all(self, course: Course, who: str) -> Batch:
        if not course.is_open():
            raise Refused(409, course.closed_message())
        batch = Batch("start-all", course.name)
        people = await self.synced_roster(course)
        todo = []
        for p in people:
            if p.state in ("invited", "declined"):
                batch.skipped[p.name] = f"{p.state}, has not accepted the invitation"
            elif not p.signed_in:
                batch.skipped[p.name] = "has not signed in to the hub yet"
            elif self.home(p.name) is None:
                batch.skipped[p.name] = "has no Unix account on the cluster yet"
            elif p.state != "stopped":
                batch.skipped[p.name] = f"already {p.state}"
            else:
                todo.append(p.name)
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def one(name: str) -> None:
            async with limit:
                try:
                    await self.hub.start(name, course.name)
                    batch.asked.append(name)
                except HubError as e:
                    batch.errors[name] = e.message

        begun = time.monotonic()
        await asyncio.gather(*(one(n) for n in todo))
        await self.share_now(course, set(batch.asked))
        self.store.log(course.name, who, "start-all", batch.to_json())
        log.info("%s started all of %s: %s", who, course.name, batch.to_json())
        if batch.asked:
            self._background(self._record_ready(course, who, set(batch.asked), begun))
        return batch

    async def _record_ready(self, course: Course, who: str, names: set[str], begun: float) -> None:
        offset = time.monotonic() - begun  # the POSTs themselves
        reached = await wait_for(self.hub, course, names, "running", self.settings.start_timeout)
        detail = {
            "ready": len(reached),
            "asked": len(names),
            "seconds": round(offset + max(reached.values(), default=0.0), 1),
            "still_starting": sorted(names - set(reached)),
        }
        self.store.log(
            course.name, who, "all-ready" if len(reached) == len(names) else "not-ready", detail
        )

    async def stop_all(self, course: Course, who: str, why: str = "stop-all") -> Batch:
        batch = Batch(why, course.name)
        for p in await self.roster(course):
            if p.state in ("running", "starting"):
                try:
                    await self.hub.stop(p.name, course.name)
                    batch.asked.append(p.name)
                except HubError as e:
                    batch.errors[p.name] = e.message
        self.store.log(course.name, who, why, batch.to_json())
        return batch

    async def start_one(self, course: Course, who: str, name: str, stop: bool = False) -> None:
        person = next((p for p in await self.synced_roster(course) if p.name == name), None)
        if person is None:
            raise Refused(404, f"{name} is not a participant of {course.display_name}.")
        if not stop and person.state in ("invited", "declined"):
            raise Refused(
                409, f"{name} has not accepted the invitation to {course.display_name} yet."
            )
        if not stop and not course.is_open():
            raise Refused(409, course.closed_message())
        try:
            await (self.hub.stop if stop else self.hub.start)(name, course.name)
        except HubError as e:
            raise Refused(e.status if e.status in (400, 409) else 502, e.message) from None
        if not stop:
            await self.share_now(course, {name})
        self.store.log(course.name, who, "stop" if stop else "start", {"participant": name})

    # ------------------------------------------------------------------ notebooks

    def collect_refused(self) -> str:
        """Why collecting is not offered here ("" where it is). Collecting copies files
        between homes as each person (``runuser``): the "rest" mode's service, in a pod with
        no users and no root, cannot."""
        if self.site.slurm.access == "local":
            return ""
        return (
            "Collecting notebooks is not available with the hub on Kubernetes (slurm.access: "
            "rest): it copies files between homes as each person, which only a hub on a Slurm "
            "submit host can. Ask the participants to download their notebooks from "
            "JupyterLab (File > Download) and hand them in."
        )

    async def collect(self, course: Course, who: str) -> Collected:
        refused = self.collect_refused()
        if refused:
            raise Refused(409, refused)
        home = self.home(who)
        if home is None:
            raise Refused(409, f"{who} has no Unix account here to collect the notebooks into.")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = Path(self.settings.collect_dir_for(home, who)) / course.name / stamp
        sources, homes = {}, {who: home}
        for p in await self.roster(course):
            p_home = self.home(p.name)
            if p_home is not None:
                sources[p.name] = self.settings.folder_for(p_home, p.name, course.name)
                homes[p.name] = p_home
        made = await collect(sources, who, str(target), homes=homes)
        self.store.log(
            course.name,
            who,
            "collect",
            {"target": made.target, "copied": made.copied, "problems": made.problems},
        )
        return made

    async def update_materials(self, course: Course, who: str) -> str:
        """Fetch a git course's materials again (participants get them at their next start)."""
        if not course.materials_git:
            return ""
        try:
            commit = await asyncio.to_thread(
                mirror_git, course.materials_git, Path(course.materials_path), course.materials_ref
            )
        except MaterialsError as e:
            raise Refused(502, f"The materials could not be fetched: {e}") from None
        self.store.log(course.name, who, "materials", {"commit": commit})
        return commit

    # ------------------------------------------------------------------ upkeep

    async def tick(self) -> None:
        """Keep each course's hub group equal to its participants, its trainers' shares equal
        to its open course servers; close ended courses."""
        users = await self.hub.users()
        wanted: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for course in self.courses():
            people = participants(course, users)
            members = {p.name for p in people if p.signed_in}
            added, removed = await self.hub.sync_group(course, members, users)
            if added or removed:
                log.info("course %s: group +%s -%s", course.name, sorted(added), sorted(removed))
            is_open = course.is_open()
            for recipient in trainers_of(course, users):
                servers = wanted.setdefault(recipient, set())
                if is_open:
                    servers |= {
                        (p.name, course.name)
                        for p in people
                        if p.signed_in and p.has_server and not p.admin
                    }
            if datetime.now().astimezone() >= course.closes_at() and any(
                p.state in ("running", "starting") for p in people
            ):
                await self.stop_all(course, "factoryhub", why="course-ended")
        await self.sync_shares(wanted, {c.name for c in self.courses()})

    async def share_now(self, course: Course, names: set[str]) -> None:
        """Share the course servers of ``names`` (just started, so the hub holds them) with the
        trainers at once, not at the next upkeep tick; admins' servers never."""
        if not names or not course.is_open():
            return
        try:
            users = await self.hub.users()
            for kind, trainer in trainers_of(course, users):
                for name in sorted(names):
                    if not (users.get(name) or {}).get("admin"):
                        await self.hub.share(name, course.name, kind, trainer)
        except HubError as e:
            log.warning("course %s: sharing %s waits for the upkeep: %s", course.name, names, e)

    async def sync_shares(
        self, wanted: dict[tuple[str, str], set[tuple[str, str]]], course_names: set[str]
    ) -> None:
        """Grant each trainer (user or group) the course servers in ``wanted`` and revoke
        any other course server shared with them (shares of other servers are the owners'
        own and left alone)."""
        for (kind, name), servers in wanted.items():
            try:
                have = {s for s in await self.hub.shared_with(kind, name) if s[1] in course_names}
                for owner, server in sorted(have - servers):
                    await self.hub.unshare(owner, server, kind, name)
                    log.info("revoked %s/%s from %s %s", owner, server, kind, name)
                for owner, server in sorted(servers - have):
                    await self.hub.share(owner, server, kind, name)
                    log.info("shared %s/%s with %s %s", owner, server, kind, name)
            except HubError as e:
                log.warning("the shares of %s %s were not updated: %s", kind, name, e.message)

    async def prepare(self) -> None:
        """At service start: fetch git materials that are not there yet."""
        for course in self.courses():
            if course.materials_git and not (Path(course.materials_path) / ".git").exists():
                try:
                    await self.update_materials(course, "factoryhub")
                except Refused as e:
                    log.error("course %s: %s", course.name, e.message)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
