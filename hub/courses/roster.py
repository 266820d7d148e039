"""Who is in a course and what their course server is doing, from the hub's REST API.

The Courses service talks to the hub with its own token, whose role (``hub.services``)
allows only what the course page needs: read users (their groups and servers), and for each
course's group (``course:<name>``) read and start/stop its members' servers, edit its
members and share their servers; and read and revoke the shares the course's trainers hold.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from factoryhub.spawners.model.courses import Course, hub_group


class HubError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Participant:
    """A participant and their course server (``state``: never-signed-in, invited,
    declined, stopped, starting, running, stopping). ``signed_in``: a hub user who is in the
    course (an invited person is not, until they accept)."""

    name: str
    signed_in: bool
    state: str
    url: str = ""
    started: str = ""
    last_activity: str = ""
    admin: bool = False
    has_server: bool = False  # the hub holds their course server (running or not)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signed_in": self.signed_in,
            "state": self.state,
            "url": self.url,
            "started": self.started,
            "last_activity": self.last_activity,
            "admin": self.admin,
        }


def server_state(server: dict[str, Any] | None) -> str:
    if not server:
        return "stopped"
    if server.get("pending") == "spawn":
        return "starting"
    if server.get("pending") == "stop":
        return "stopping"
    if server.get("ready"):
        return "running"
    return "stopped"  # a stopped named server (include_stopped_servers)


class Hub:
    """The hub's REST API with the service's token."""

    def __init__(self, api_url: str, token: str, timeout: float = 20.0) -> None:
        self.api_url = api_url
        self.token = token
        self.timeout = timeout

    async def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        request = HTTPRequest(
            url_path_join(self.api_url, path),
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else (None if method == "GET" else "{}"),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.code in ok:
                return None
            detail = ""
            if e.response is not None and e.response.body:
                try:
                    detail = json.loads(e.response.body).get("message", "")
                except (ValueError, AttributeError):
                    detail = e.response.body.decode(errors="replace")[:200]
            raise HubError(e.code, detail or str(e)) from None
        except OSError as e:
            raise HubError(503, f"the hub did not answer: {e}") from None
        return json.loads(response.body) if response.body else None

    # ------------------------------------------------------------------ users

    async def users(self) -> dict[str, dict[str, Any]]:
        """Every hub user with their groups and servers, by name (paged through)."""
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = await self.call(
                "GET", f"users?include_stopped_servers=1&limit=200&offset={offset}"
            )
            items = page["items"] if isinstance(page, dict) else page
            for model in items:
                found[model["name"]] = model
            if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
                return found
            offset = page["_pagination"]["next"]["offset"]

    # ------------------------------------------------------------------ groups

    async def sync_group(
        self, course: Course, members: set[str], users: dict[str, dict[str, Any]]
    ) -> tuple[set[str], set[str]]:
        """Make ``course:<name>``'s members exactly ``members``, given every hub user's model
        (``users``, whose groups say who is in it now); returns (added, removed)."""
        group = hub_group(course.name)
        name = quote(group, safe="")
        have = {n for n, model in users.items() if group in (model.get("groups") or ())}
        added, removed = members - have, have - members
        if added:
            await self.call("POST", f"groups/{name}", {}, ok=(409,))  # made once, then 409
            await self.call("POST", f"groups/{name}/users", {"users": sorted(added)})
        if removed:
            await self.call("DELETE", f"groups/{name}/users", {"users": sorted(removed)})
        return added, removed

    # ------------------------------------------------------------------ servers

    async def start(self, user: str, server: str) -> None:
        await self.call(
            "POST", f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}", {}
        )

    async def stop(self, user: str, server: str) -> None:
        await self.call(
            "DELETE", f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}", {}
        )

    # ------------------------------------------------------------------ shares

    async def shared_with(self, kind: str, name: str) -> set[tuple[str, str]]:
        """The servers (owner, server name) shared with a user or group (``kind``: "user"
        or "group"); empty when there is no such user or group."""
        found: set[tuple[str, str]] = set()
        offset = 0
        while True:
            page = await self.call(
                "GET",
                f"{kind}s/{quote(name, safe='')}/shared?limit=200&offset={offset}",
                ok=(404,),
            )
            if not page:
                return found
            for share in page.get("items", []):
                server = share.get("server") or {}
                found.add(((server.get("user") or {}).get("name", ""), server.get("name", "")))
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return found
            offset = following["offset"]

    async def share(self, owner: str, server: str, kind: str, name: str) -> None:
        """Share ``owner``'s server ``server`` (access to that server only) with a user or
        group."""
        await self.call(
            "POST", f"shares/{quote(owner, safe='')}/{quote(server, safe='')}", {kind: name}
        )

    async def unshare(self, owner: str, server: str, kind: str, name: str) -> None:
        """Revoke what ``owner``'s server ``server`` is shared with a user or group (gone
        already: nothing to do)."""
        path = f"{kind}s/{quote(name, safe='')}/shared/{quote(owner, safe='')}"
        await self.call("DELETE", f"{path}/{quote(server, safe='')}", ok=(404,))


def participants(course: Course, users: dict[str, dict[str, Any]]) -> list[Participant]:
    """The course's participants: the hub users it names or whose groups it names, the named
    users who have never signed in (no hub user yet), and those invited who have not
    accepted (state ``invited`` or ``declined``)."""
    found: list[Participant] = []
    for name, model in sorted(users.items()):
        if not course.is_participant(name, model.get("groups") or ()):
            continue
        servers = model.get("servers") or {}
        server = servers.get(course.name)
        state = server_state(server)
        found.append(
            Participant(
                name=name,
                signed_in=True,
                state=state,
                url=(server or {}).get("url", "") if state == "running" else "",
                started=(server or {}).get("started") or "",
                last_activity=(server or {}).get("last_activity") or "",
                admin=bool(model.get("admin")),
                has_server=course.name in servers,
            )
        )
    known = {p.name for p in found}
    for name in sorted(set(course.participant_users) - known):
        hub_user = users.get(name)
        answer = course.invitation(name, (hub_user or {}).get("groups") or ())
        state = answer or ("never-signed-in" if hub_user is None else "invited")
        found.append(
            Participant(
                name=name, signed_in=False, state=state, admin=bool((hub_user or {}).get("admin"))
            )
        )
    return found


async def wait_for(
    hub: Hub, course: Course, names: set[str], want: str, within: float, every: float = 1.0
) -> dict[str, float]:
    """Poll until every name's course server is in state ``want``; returns the seconds each
    took (from now), leaving out those still not there after ``within`` seconds."""
    begun = time.monotonic()
    reached: dict[str, float] = {}
    while True:
        users = await hub.users()
        for p in participants(course, users):
            if p.name in names and p.name not in reached and p.state == want:
                reached[p.name] = time.monotonic() - begun
        if set(reached) >= names or time.monotonic() - begun > within:
            return reached
        await asyncio.sleep(every)
