"""Hub-side API: a user's server reports the address it listens on.

Replaces batchspawner's ``/hub/api/batchspawner`` handler, which sets *any*
attribute the request names on the spawner (``exec_prefix`` included, a command the
hub runs as root). Here the server may report exactly a validated IP address and port
(and, for the progress messages, the name of the node it runs on), and only for the
spawner that owns the token it authenticates with. The address must be one of the node's
that Slurm says the job runs on (``ready_address``): the job cannot aim the proxy elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

from factoryhub.spawners.ready_address import ForeignAddress

READY_ROUTE = r"/api/factoryhub/server-ready"
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def parse_address(body: Any) -> tuple[str, int, str]:
    """Validate ``{"ip": ..., "port": ..., "node": ...}`` (node optional); raise ValueError."""
    if not isinstance(body, dict) or not {"ip", "port"} <= set(body) <= {"ip", "port", "node"}:
        raise ValueError('expected {"ip": ..., "port": ...} and optionally "node"')
    node = body.get("node", "")
    if not isinstance(node, str) or (node and not NODE_NAME.fullmatch(node)):
        raise ValueError("node must be a host name")
    ip, port = body["ip"], body["port"]
    if not isinstance(ip, str):
        raise ValueError("ip must be a string")
    address = ipaddress.ip_address(ip)  # raises ValueError
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"ip {ip} is not an address the hub can reach")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError("port must be an integer between 1 and 65535")
    return str(address), port, node


class ServerReadyHandler(APIHandler):
    """POST /hub/api/factoryhub/server-ready, authenticated with the server's own token."""

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        token = self.get_auth_token()
        spawner = next(
            (
                s
                for s in getattr(user, "spawners", {}).values()
                if s.api_token and s.api_token == token
            ),
            None,
        )
        if spawner is None or not hasattr(spawner, "check_ready_address"):
            raise web.HTTPError(403, "this token belongs to no server waiting to start")
        try:
            ip, port, _said_node = parse_address(self.get_json_body())
        except ValueError as e:
            raise web.HTTPError(400, f"bad address: {e}") from None
        try:
            # the node comes from Slurm, never from the job
            node = await spawner.check_ready_address(ip)
        except ForeignAddress as e:
            self.log.warning("Refused the ready call of %s's server: %s", user.name, e)
            raise web.HTTPError(403, f"refused: {e}") from None
        spawner.report_ready(ip, port, node)
        self.set_status(200)
        self.finish(json.dumps({"message": "ready noted"}))


def remove_batchspawner_handler() -> None:
    """Drop batchspawner's attribute-setting API from the hub's routes."""
    default_handlers[:] = [h for h in default_handlers if not h[0].endswith("/api/batchspawner")]


# Importing batchspawner registers its handler; this module (imported by the
# spawner, after batchspawner) takes it out again and registers its own. JupyterHub
# reads this list when it builds its routes, after loading the configuration.
remove_batchspawner_handler()
if not any(h[1] is ServerReadyHandler for h in default_handlers):
    default_handlers.append((READY_ROUTE, ServerReadyHandler))
