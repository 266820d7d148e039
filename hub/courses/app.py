"""The Courses service's web side: the trainers' course pages behind the hub's login
(JupyterHub OAuth), and a JSON API for scripts (a hub token in the ``Authorization``
header). Both go through :class:`CourseDesk`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jupyterhub.utils import url_path_join
from tornado import web

from factoryhub.hub.courses.desk import CourseDesk
from factoryhub.hub.service_web import Person, Refused, ServiceHandler, api, application, page
from factoryhub.spawners.model.courses import Course

TEMPLATES = Path(__file__).parent / "templates"
ACTIONS = ("start-all", "stop-all", "collect", "materials")


def course_json(course: Course) -> dict[str, Any]:
    return {
        "name": course.name,
        "display_name": course.display_name,
        "description": course.description,
        "start": course.start.isoformat(),
        "end": course.end.isoformat(),
        "open": course.is_open(),
        "closed_message": course.closed_message(),
        "profile": course.profile,
        "project": course.project,
        "account": course.account,
        "reservation": course.reservation,
        "participant_users": list(course.participant_users),
        "participant_groups": list(course.participant_groups),
        "trainer_users": list(course.trainer_users),
        "trainer_groups": list(course.trainer_groups),
        "materials": course.materials_git or course.materials_path,
    }


class BaseHandler(ServiceHandler):
    @property
    def desk(self) -> CourseDesk:
        return self.settings["desk"]

    async def me(self) -> Person:
        user = self.current_user
        assert user is not None
        return await self.desk.person(user["name"])


async def course_state(
    desk: CourseDesk, course: Course, with_capacity: bool = True
) -> dict[str, Any]:
    """The course page's data; ``with_capacity=False`` (the page's own polling while servers
    start) leaves out the Slurm queries of the capacity."""
    roster = await desk.roster(course)
    waiting = sum(1 for p in roster if p.signed_in and p.state == "stopped")
    capacity = (await desk.capacity(course)).to_json() if with_capacity else None
    return {
        "course": course_json(course),
        "participants": [p.to_json() for p in roster],
        "capacity": capacity,
        "waiting": waiting,
        "running": sum(1 for p in roster if p.state == "running"),
        "events": [
            {"at": e.at, "who": e.who, "kind": e.kind, "detail": e.detail}
            for e in desk.store.events(course.name, 30)
        ],
    }


class CoursesApi(BaseHandler):
    @api
    async def get(self, name: str = "") -> None:
        me = await self.me()
        if not name:
            self.finish({"courses": [course_json(c) for c in self.desk.managed(me)]})
            return
        course = await self.desk.course_for(me, name)
        with_capacity = self.get_query_argument("capacity", "1") != "0"
        self.finish(await course_state(self.desk, course, with_capacity))

    @api
    async def patch(self, name: str) -> None:
        me = await self.me()
        course = await self.desk.course_for(me, name)
        body = self.json_body()
        form = {
            k: (" ".join(v) if isinstance(v, list) else str(v))
            for k, v in body.items()
            if k in ("participant_users", "start", "end", "reservation", "description")
        }
        unknown = sorted(set(body) - set(form))
        if unknown:
            raise Refused(400, f"These cannot be changed here: {', '.join(unknown)}.")
        course = await self.desk.edit(course, me.name, form)
        self.finish({"course": course_json(course)})


class CourseActionApi(BaseHandler):
    @api
    async def post(self, name: str, action: str) -> None:
        me = await self.me()
        course = await self.desk.course_for(me, name)
        self.finish(await run_action(self.desk, course, me, action))


async def run_action(desk: CourseDesk, course: Course, me: Person, action: str) -> dict[str, Any]:
    if action == "start-all":
        return (await desk.start_all(course, me.name)).to_json()
    if action == "stop-all":
        return (await desk.stop_all(course, me.name)).to_json()
    if action == "collect":
        made = await desk.collect(course, me.name)
        return {"target": made.target, "copied": made.copied, "problems": made.problems}
    commit = await desk.update_materials(course, me.name)
    return {"commit": commit}


class ParticipantApi(BaseHandler):
    @api
    async def post(self, name: str, participant: str, action: str) -> None:
        me = await self.me()
        course = await self.desk.course_for(me, name)
        await self.desk.start_one(course, me.name, participant, stop=action == "stop")
        self.finish({"participant": participant, "action": action})


class InvitationsApi(BaseHandler):
    """A person's invitations (GET), and their answer (POST .../<course>/accept|decline)."""

    @api
    async def get(self) -> None:
        me = await self.me()
        self.finish({"invitations": [invitation_json(c, me) for c in self.desk.invitations(me)]})

    @api
    async def post(self, name: str, action: str) -> None:
        me = await self.me()
        course = self.desk.answer(me, name, accept=action == "accept")
        self.finish({"course": name, "participant": course.is_participant(me.name, me.groups)})


def invitation_json(course: Course, me: Person) -> dict[str, Any]:
    return {
        "course": course.name,
        "display_name": course.display_name,
        "when": course.when_text(),
        "state": course.invitation(me.name, me.groups),
    }


# --------------------------------------------------------------------------- pages


class InvitationPage(BaseHandler):
    """What a course's trainers invite a person to, with Accept and Decline (XSRF-checked
    forms, like every other page's)."""

    @page
    async def get(self, name: str) -> None:
        me = await self.me()
        course = self.desk.course(name)
        self.render_page(
            "invitation.html", me=me, c=course, state=course.invitation(me.name, me.groups)
        )

    @page
    async def post(self, name: str, action: str) -> None:
        me = await self.me()
        course = self.desk.answer(me, name, accept=action == "accept")
        done = (
            f"You are in {course.display_name}: start your course server from the hub's home "
            "page. Its trainers can open that server (and no other of yours)."
            if action == "accept"
            else f"You declined {course.display_name}; its trainers cannot reach your servers."
        )
        self.render_page(
            "invitation.html",
            me=me,
            c=course,
            state=course.invitation(me.name, me.groups),
            done=done,
        )


class IndexPage(BaseHandler):
    @page
    async def get(self) -> None:
        me = await self.me()
        self.render_page(
            "index.html",
            me=me,
            managed=self.desk.managed(me),
            taken=self.desk.taken(me),
            invited=self.desk.invitations(me),
        )


class CoursePage(BaseHandler):
    async def show(self, me: Person, course: Course, status: int = 200, **values: Any) -> None:
        state = await course_state(self.desk, course)
        self.render_page(
            "course.html",
            status=status,
            me=me,
            c=course,
            state=state,
            collect_refused=self.desk.collect_refused(),
            **values,
        )

    @page
    async def get(self, name: str) -> None:
        me = await self.me()
        await self.show(me, await self.desk.course_for(me, name))

    @page
    async def post(self, name: str, action: str) -> None:
        me = await self.me()
        course = await self.desk.course_for(me, name)
        if action == "edit":
            form = {
                k: self.get_body_argument(k, "")
                for k in ("participant_users", "start", "end", "reservation", "description")
            }
            try:
                course = await self.desk.edit(course, me.name, form)
            except Refused as e:
                await self.show(me, course, status=400, error=e, sent=form)
                return
            await self.show(me, course, done="The course was saved.")
            return
        try:
            result = await run_action(self.desk, course, me, action)
        except Refused as e:
            await self.show(me, course, status=e.status, error=e)
            return
        await self.show(me, self.desk.course(name), done=done_text(action, result))


class ParticipantPage(BaseHandler):
    @page
    async def post(self, name: str, participant: str, action: str) -> None:
        me = await self.me()
        course = await self.desk.course_for(me, name)
        await self.desk.start_one(course, me.name, participant, stop=action == "stop")
        self.redirect(url_path_join(self.prefix, "course", name) + "#participants")


def done_text(action: str, result: dict[str, Any]) -> str:
    if action in ("start-all", "stop-all"):
        verb = "Starting" if action == "start-all" else "Stopping"
        text = f"{verb} {len(result['asked'])} server(s)."
        if result["skipped"]:
            text += " Left as they are: " + ", ".join(
                f"{n} ({why})" for n, why in sorted(result["skipped"].items())
            )
        if result["errors"]:
            text += " Refused: " + ", ".join(f"{n} ({e})" for n, e in result["errors"].items())
        return text
    if action == "collect":
        copied = sum(result["copied"].values())
        text = (
            f"Collected {copied} notebook(s) of {len(result['copied'])} participant(s) "
            f"into {result['target']}."
        )
        if result["problems"]:
            text += " Not collected: " + ", ".join(
                f"{n} ({why})" for n, why in sorted(result["problems"].items())
            )
        return text
    if result.get("commit"):
        return (
            f"Materials updated to commit {result['commit'][:10]}; participants get them at "
            "their next start."
        )
    return (
        "This course's materials are a folder: participants get its current files at their "
        "next start."
    )


def make_app(
    desk: CourseDesk, prefix: str, hub_prefix: str, base_url: str, **settings: Any
) -> web.Application:
    filters = {
        "when": lambda ts: (
            datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S") if ts else ""
        ),
        "iso_when": lambda iso: (
            datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
            if iso
            else ""
        ),
    }
    actions = "|".join(ACTIONS)
    routes = [
        ("course/([^/]+)", CoursePage),
        (f"course/([^/]+)/(edit|{actions})", CoursePage),
        ("course/([^/]+)/participants/([^/]+)/(start|stop)", ParticipantPage),
        ("api/courses", CoursesApi),
        ("api/courses/([^/]+)", CoursesApi),
        (f"api/courses/([^/]+)/({actions})", CourseActionApi),
        ("api/courses/([^/]+)/participants/([^/]+)/(start|stop)", ParticipantApi),
        ("invitation/([^/]+)", InvitationPage),
        ("invitation/([^/]+)/(accept|decline)", InvitationPage),
        ("api/invitations", InvitationsApi),
        ("api/invitations/([^/]+)/(accept|decline)", InvitationsApi),
    ]
    return application(
        prefix,
        IndexPage,
        routes,
        str(TEMPLATES),
        filters,
        desk=desk,
        hub_prefix=hub_prefix,
        base_url=base_url,
        **settings,
    )
