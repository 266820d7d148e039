"""Run code in a kernel of a user's real server, over the kernel websocket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from benchmarks.kernel_client import Kernel

from .hub_fixtures import RunningHub


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
