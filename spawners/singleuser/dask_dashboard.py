"""dask-labextension behind JupyterHub: its dashboard check, made to work.

The Dask sidebar asks the user's server whether a link hosts a dashboard (its
``dask/dashboard-check`` handler); the server then fetches that link itself. The link of a
factoryhub cluster goes through the user's own jupyter-server-proxy
(``/user/<name>/proxy/<port>/status``), so that fetch would leave through the hub's proxy
without the user's credentials and be sent to the login page: the sidebar would call every
cluster inactive. Here a link through this server's own proxy is checked at the dashboard
on loopback instead (where jupyter-server-proxy sends it too); the sidebar is still given
the user-facing link. Nobody else can use the route: the handler stays authenticated.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib import parse

from tornado import httpclient, web

_PROXIED = re.compile(r"(?:(?:127\.0\.0\.1|localhost):)?(?P<port>[0-9]{1,5})(?P<rest>/.*)?")


def loopback_url(link: str, base_url: str) -> str | None:
    """The loopback address of a dashboard ``link`` through this server's own proxy (its
    ``/status`` page stripped); None for any other link."""
    path = parse.urlparse(link).path
    prefix = base_url.rstrip("/") + "/proxy/"
    if not path.startswith(prefix):
        return None
    match = _PROXIED.fullmatch(path[len(prefix) :])
    if not match or not 0 < int(match["port"]) < 65536:
        return None
    rest = (match["rest"] or "").removesuffix("/status").rstrip("/")
    return f"http://127.0.0.1:{int(match['port'])}{rest}"


def install() -> bool:
    """Patch dask-labextension's check handler (False: the extension is not installed)."""
    try:
        from dask_labextension import dashboardhandler
    except ImportError:
        return False
    handler = dashboardhandler.DaskDashboardCheckHandler
    if getattr(handler, "_factoryhub", False):
        return True
    original = handler.get

    @web.authenticated
    async def get(self: Any, url: str) -> None:
        link = parse.unquote(url)
        inner = loopback_url(link, self.base_url)
        if inner is None:
            return await original(self, url)
        public = dashboardhandler._normalize_dashboard_link(link, self.request)
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"{inner}/individual-plots.json", request_timeout=5
            )
            plots = json.loads(response.body)
            answer = {"url": public, "isActive": True, "effectiveUrl": None, "plots": plots}
        except Exception:  # like the original: anything wrong means "not a live dashboard"
            answer = {"url": public, "isActive": False, "plots": {}}
        self.set_status(200)
        self.finish(json.dumps(answer))

    handler.get = get
    handler._factoryhub = True
    return True
