"""What the hub's own web services (Reports, Courses) share.

- :class:`Person` and :class:`People`: who a signed-in user is (groups, admin flag), read
  from the hub's API with the service's own token and kept for a few seconds;
- :class:`Refused`: a request the service turns down, with the HTTP status and the message
  for the person (and, for forms, the problem of each field);
- :class:`ServiceHandler`: a tornado handler behind the hub's login (JupyterHub OAuth for
  pages, a hub token in the ``Authorization`` header for scripts), which renders the
  service's jinja pages and answers JSON;
- :func:`api` and :func:`page`: decorators that authenticate and turn a :class:`Refused`
  into a JSON answer or the service's ``refused.html`` page;
- :func:`application`: the tornado application of a service's pages and API at its prefix
  (index, the OAuth callback, then the service's own routes), with its jinja templates;
- :func:`run_until_stopped`: the service's life after it listens: a periodic upkeep tick
  (never two at once, a failure logged and retried), ending on SIGTERM/SIGINT or when the
  hub that started it is gone (a hub killed with SIGKILL leaves no service holding a port).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import PeriodicCallback

PARENT_CHECK_S = 2.0
PERSON_TTL_S = 15.0


class Refused(Exception):
    """A request the service turns down; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, problems: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = dict(problems or {})


@dataclass(frozen=True)
class Person:
    name: str
    groups: frozenset[str]
    admin: bool = False


class People:
    """A user's groups and admin flag, from the hub's API (the service's own token)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url
        self.token = token
        self._cache: dict[str, tuple[float, Person]] = {}

    async def person(self, name: str) -> Person:
        cached = self._cache.get(name)
        if cached and time.monotonic() - cached[0] < PERSON_TTL_S:
            return cached[1]
        url = url_path_join(self.api_url, "users", quote(name, safe=""))
        try:
            response = await AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {self.token}"}, request_timeout=10
            )
        except HTTPClientError as e:
            raise Refused(503, f"The hub did not tell who {name} is ({e.code}).") from e
        except OSError as e:
            raise Refused(503, f"The hub did not tell who {name} is ({e}).") from e
        model = json.loads(response.body)
        person = Person(name, frozenset(model.get("groups") or ()), bool(model.get("admin")))
        self._cache[name] = (time.monotonic(), person)
        return person


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    def check_xsrf_cookie(self) -> None:
        """Scripts send a token in the Authorization header, which no other site can make a
        browser send: they need no XSRF token. Pages' forms (the hub's cookie) do."""
        if self.request.headers.get("Authorization", "").startswith(("token ", "Bearer ")):
            return
        super().check_xsrf_cookie()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.finish({"status": status_code, "message": message})

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError:
            raise Refused(400, "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise Refused(400, "The request body must be a JSON object.")
        return data

    def refuse(self, e: Refused) -> None:
        self.set_status(e.status)
        self.finish({"status": e.status, "message": e.message, "problems": e.problems})

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        env: jinja2.Environment = self.settings["jinja"]
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            env.get_template(template).render(
                prefix=self.prefix,
                hub_prefix=self.settings["hub_prefix"],
                base_url=self.settings.get("base_url", "/"),
                user=self.current_user,
                xsrf=self.xsrf_token.decode(),
                url=url_path_join,
                **values,
            )
        )


def api(method: Any) -> Any:
    """Authenticated JSON API method whose :class:`Refused` becomes a JSON answer."""

    @web.authenticated
    async def wrapper(self: ServiceHandler, *args: str) -> None:
        try:
            await method(self, *args)
        except Refused as e:
            self.refuse(e)

    return wrapper


def page(method: Any) -> Any:
    """Authenticated page method whose :class:`Refused` becomes the ``refused.html`` page."""

    @web.authenticated
    async def wrapper(self: ServiceHandler, *args: str) -> None:
        try:
            await method(self, *args)
        except Refused as e:
            self.render_page("refused.html", status=e.status, error=e)

    return wrapper


def application(
    prefix: str,
    index: type[web.RequestHandler],
    routes: Sequence[tuple[str, type[web.RequestHandler]]],
    templates: str,
    filters: Mapping[str, Callable[..., Any]],
    **settings: Any,
) -> web.Application:
    """The service's application: ``routes`` are paths under ``prefix``; ``settings`` must
    hold ``hub_prefix`` and ``cookie_secret`` (and whatever the handlers read)."""
    jinja = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates), autoescape=True, trim_blocks=True
    )
    jinja.filters.update(filters)
    return web.Application(
        [
            (prefix.rstrip("/") + "/?", index),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            *((url_path_join(prefix, path), handler) for path, handler in routes),
        ],
        prefix=prefix,
        jinja=jinja,
        hub_auth=HubOAuth(cache_max_age=60),
        xsrf_cookies=True,
        **settings,
    )


async def run_until_stopped(
    tick: Callable[[], Awaitable[None]], every_s: float, log: logging.Logger, what: str
) -> None:
    """Run ``tick`` every ``every_s`` seconds until a signal ends the service or its hub is
    gone. ``what`` names the service in the log."""
    busy = asyncio.Lock()

    async def guarded() -> None:
        if busy.locked():
            return
        async with busy:
            try:
                await tick()
            except Exception:
                log.exception("the %s upkeep failed; trying again next time", what)

    PeriodicCallback(guarded, every_s * 1000).start()
    stop = asyncio.Event()
    parent = os.getppid()

    def hub_gone() -> None:
        if os.getppid() != parent:
            # The services keep their state in databases: nothing in memory to save.
            log.warning("the hub that started the %s service is gone; stopping", what)
            logging.shutdown()
            os._exit(0)

    if parent != 1:
        PeriodicCallback(hub_gone, PARENT_CHECK_S * 1000).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def listen_address(port: int) -> tuple[int, str]:
    """(port, address) a hub-managed service listens on: the port and host of
    ``$JUPYTERHUB_SERVICE_URL``. A loopback host is kept; any other name (the hub's
    Kubernetes Service, ``hub.services_host``) is where the proxy reaches the hub's pod, so
    the service listens on all interfaces there."""
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{port}"))
    host = url.hostname or "127.0.0.1"
    return url.port or port, host if host in LOOPBACK else "0.0.0.0"  # noqa: S104
