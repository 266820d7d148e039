"""Jupyter server extension: tell the hub the server listens, as soon as it does.

Loaded into the user's server by ``factoryhub-singleuser``. Jupyter Server calls
``_start_jupyter_server_extension`` once the event loop runs, after the HTTP
socket is bound, so the hub is told only when the server can answer: the hub's
first readiness check succeeds and its exponential back-off never starts. It also marks
busy kernels as activity (for the idle culler) and makes the Dask sidebar's dashboard
check work behind the hub (``dask_dashboard``).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from datetime import UTC, datetime
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import PeriodicCallback

from factoryhub.spawners.singleuser import dask_dashboard

READY_PATH = "factoryhub/server-ready"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "factoryhub.spawners.singleuser.ready"}]


BUSY_SETTING = "factoryhub_busy_kernel_last_activity"


def mark_busy_kernels(serverapp: Any) -> bool:
    """While a kernel is busy, the server is active: Jupyter counts activity only when a
    kernel sends a message, so a silent long-running cell (training, a big query) would
    otherwise look idle and be culled. True when a kernel was busy."""
    manager = serverapp.kernel_manager
    for kernel_id in list(manager.list_kernel_ids()):
        try:
            state = manager.get_kernel(kernel_id).execution_state
        except KeyError:
            continue
        if state == "busy":
            # Jupyter Server counts every setting named *_last_activity as activity.
            serverapp.web_app.settings[BUSY_SETTING] = datetime.now(UTC)
            return True
    return False


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.log.info("factoryhub: will report this server to the hub once it listens")
    if dask_dashboard.install():
        serverapp.log.info("factoryhub: the Dask sidebar checks dashboards on loopback")
    interval_s = float(os.environ.get("FACTORYHUB_BUSY_CHECK_INTERVAL", "10"))

    def check_busy() -> None:
        mark_busy_kernels(serverapp)

    PeriodicCallback(check_busy, interval_s * 1000).start()


def _post_now(url: str, body: str, headers: dict[str, str]) -> None:
    """A blocking POST on purpose (see below); loopback or the cluster network, 2 s at most."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310
    urllib.request.urlopen(request, timeout=2).close()  # noqa: S310 - scheme checked above


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    api_url = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not api_url or not token:
        serverapp.log.warning("factoryhub: no hub to report to (JUPYTERHUB_API_URL unset)")
        return
    body = json.dumps(
        {
            "ip": serverapp.ip,
            "port": serverapp.port,
            "node": os.environ.get("SLURMD_NODENAME", ""),
        }
    )
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    # First try at once, synchronously: extensions start together, and some (jupyter_lsp's
    # scan for language servers) block the event loop for a while after they begin. The hub
    # can meanwhile do its part of the start; the server answers once the loop is free.
    try:
        _post_now(f"{api_url}/{READY_PATH}", body, headers)
        serverapp.log.info("factoryhub: told the hub %s:%s is ready", serverapp.ip, serverapp.port)
        return
    except Exception as e:
        serverapp.log.warning("factoryhub: telling the hub failed (%s); retrying", e)
    request = HTTPRequest(
        f"{api_url}/{READY_PATH}",
        method="POST",
        body=body,
        headers=headers,
        request_timeout=10,
    )
    client = AsyncHTTPClient()
    for attempt in range(5):
        try:
            await client.fetch(request)
            serverapp.log.info(
                "factoryhub: told the hub %s:%s is ready", serverapp.ip, serverapp.port
            )
            return
        except Exception as e:
            serverapp.log.warning(
                "factoryhub: telling the hub failed (%s), attempt %d", e, attempt + 1
            )
            await asyncio.sleep(0.5 * 2**attempt)
    serverapp.log.error("factoryhub: could not tell the hub this server is ready")
