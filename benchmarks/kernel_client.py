"""Run code in a kernel of a user's server through the hub, over the kernel websocket
(the integration tests and the benchmarks that measure from inside a user server)."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import websocket


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
        ws_url = (
            self.url.replace("http://", "ws://")
            + f"/user/{self.user}/api/kernels/{self.kernel_id}/channels"
        )
        ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], timeout=timeout
        )
        try:
            msg_id = uuid.uuid4().hex
            ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": "test",
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
            output: list[str] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    output.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(output)
            raise AssertionError(f"no answer in {timeout} s; output so far: {''.join(output)}")
        finally:
            ws.close()

    def shutdown(self) -> None:
        self.client.delete(f"/user/{self.user}/api/kernels/{self.kernel_id}")
