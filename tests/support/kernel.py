"""The one kernel client of the tests and the benchmarks: run code in a kernel of a user's
real server through the hub, over the kernel websocket (Jupyter's messaging protocol)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import websocket

from tests.support.hub import RunningHub


class Kernel:
    """A kernel in a user's server that stays up between ``execute`` calls."""

    def __init__(self, url: str, user: str, client: httpx.Client, token: str) -> None:
        """``url``: the hub's public URL; ``client``: an httpx client for it."""
        self.url, self.user, self.client, self.token = url, user, client, token
        r = client.post(f"/user/{user}/api/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text
        self.kernel_id = r.json()["id"]
        self.session = uuid.uuid4().hex

    def execute(self, code: str, timeout: float = 60) -> str:
        """Run ``code``; return its stdout; raise AssertionError with the traceback."""
        output: list[str] = []
        with self._channels(timeout) as ws:
            for msg in self._replies(ws, code, timeout):
                kind = msg["msg_type"]
                if kind == "stream":
                    output.append(msg["content"]["text"])
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(output)
        raise AssertionError(f"no answer in {timeout} s; output so far: {''.join(output)}")

    def begin(self, code: str, timeout: float = 60) -> None:
        """Start ``code`` and return once it has printed (it runs), without waiting for it
        to finish; the websocket closes, as a browser tab closed while a cell runs."""
        with self._channels(timeout) as ws:
            for msg in self._replies(ws, code, timeout):
                if msg["msg_type"] == "stream":
                    return
        raise AssertionError(f"the cell did not start within {timeout} s")

    def shutdown(self) -> None:
        self.client.delete(f"/user/{self.user}/api/kernels/{self.kernel_id}")

    @contextlib.contextmanager
    def _channels(self, timeout: float) -> Iterator[websocket.WebSocket]:
        ws_url = (
            self.url.replace("http://", "ws://")
            + f"/user/{self.user}/api/kernels/{self.kernel_id}/channels"
        )
        ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], timeout=timeout
        )
        try:
            yield ws
        finally:
            ws.close()

    def _replies(
        self, ws: websocket.WebSocket, code: str, timeout: float
    ) -> Iterator[dict[str, Any]]:
        """Send ``code`` for execution; the messages that answer it, until ``timeout``. An
        error raises AssertionError with the traceback."""
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": self.user,
                        "session": self.session,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False},
                    "channel": "shell",
                }
            )
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            yield msg


@contextlib.contextmanager
def kernel(hub: RunningHub, user: str, token: str | None = None) -> Iterator[Kernel]:
    """A kernel in ``user``'s server (as the hub's operator, or with ``token``), shut down
    at the end of the ``with`` if the server still runs."""
    token = token or hub.token
    with hub.client(token, timeout=120) as c:
        k = Kernel(hub.url, user, c, token)
        try:
            yield k
        finally:
            with contextlib.suppress(httpx.HTTPError):
                k.shutdown()


def run_in_kernel(
    hub: RunningHub, user: str, code: str, timeout: float = 60, token: str | None = None
) -> str:
    """Start a kernel in the user's server, run ``code``, shut the kernel down, return stdout."""
    with kernel(hub, user, token) as k:
        return k.execute(code, timeout)
