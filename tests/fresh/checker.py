"""Checks of the factory in the fresh-machine container, from the host's side.

Run by the host's venv Python inside the container's network namespace (nsenter --net), so
127.0.0.1 is the container's loopback:

    checker.py hub                       the hub's API answers
    checker.py sign-in USER              OIDC sign-in through the IdP, as a browser would
    checker.py spawn USER OPTIONS_JSON   start USER's server through the hub API, wait until it
                                         is ready, then GET /user/USER/api/status
    checker.py stop USER                 stop it, wait until the hub has no server for USER

The secret (the password for sign-in, the operator's API token otherwise) comes on stdin, never
in argv. Each prints one JSON object; a failed check exits 1 with its reason on stderr.
Only httpx and the standard library: it must not import the tests' packages.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

HUB = "http://127.0.0.1:8000"


class CheckFailed(Exception):
    pass


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def check_hub(_: list[str], __: str) -> dict[str, Any]:
    answer = httpx.get(f"{HUB}/hub/api", timeout=10)
    if answer.status_code != 200:
        raise CheckFailed(f"GET /hub/api answered {answer.status_code}")
    return {"status": answer.status_code, "version": answer.json().get("version")}


def check_sign_in(args: list[str], password: str) -> dict[str, Any]:
    """The browser's way: the hub sends us to the provider's login page, we fill it in, the
    provider sends us back to the hub (see hub_sign_in in tests/integration/oidc_fixtures.py)."""
    (user,) = args
    started = time.monotonic()
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        page = client.get(f"{HUB}/hub/oauth_login", params={"next": "/hub/spawn"})
        action = re.search(r'<form[^>]*\baction="([^"]+)"', page.text)
        if 'name="password"' not in page.text or not action:
            raise CheckFailed(f"no login form at {page.url} ({page.status_code})")
        landed = client.post(
            urljoin(str(page.url), action.group(1).replace("&amp;", "&")),
            data={"username": user, "password": password},
        )
    return {
        "status": landed.status_code,
        "path": urlsplit(str(landed.url)).path,
        "form_fields": sorted(set(re.findall(r'\bname="([a-z_]+)"', landed.text))),
        "seconds": round(time.monotonic() - started, 2),
    }


def operator(token: str) -> httpx.Client:
    return httpx.Client(base_url=HUB, headers={"Authorization": f"token {token}"}, timeout=60)


def server_of(client: httpx.Client, user: str) -> dict[str, Any] | None:
    answer = client.get(f"/hub/api/users/{user}")
    answer.raise_for_status()
    return answer.json().get("servers", {}).get("")


def check_spawn(args: list[str], token: str) -> dict[str, Any]:
    user, options = args
    started = time.monotonic()
    with operator(token) as client:
        posted = client.post(f"/hub/api/users/{user}/server", json=json.loads(options))
        if posted.status_code not in (201, 202):
            raise CheckFailed(f"spawn refused: {posted.status_code} {posted.text[:500]}")

        def ready() -> bool:
            server = server_of(client, user)
            if server is None:
                raise CheckFailed(f"the spawn of {user}'s server failed (see the hub's log)")
            return bool(server.get("ready"))

        wait_for(f"{user}'s server ready", ready, timeout=240)
        ready_s = time.monotonic() - started
        status = client.get(f"/user/{user}/api/status")
    return {
        "post": posted.status_code,
        "ready_seconds": round(ready_s, 2),
        "status": status.status_code,
        "status_body": status.json() if status.status_code == 200 else status.text[:300],
    }


def check_stop(args: list[str], token: str) -> dict[str, Any]:
    (user,) = args
    started = time.monotonic()
    with operator(token) as client:
        deleted = client.delete(f"/hub/api/users/{user}/server")
        if deleted.status_code not in (202, 204):
            raise CheckFailed(f"stop refused: {deleted.status_code} {deleted.text[:500]}")
        wait_for(f"{user}'s server gone", lambda: server_of(client, user) is None, timeout=120)
    return {"delete": deleted.status_code, "seconds": round(time.monotonic() - started, 2)}


CHECKS = {"hub": check_hub, "sign-in": check_sign_in, "spawn": check_spawn, "stop": check_stop}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in CHECKS:
        print(__doc__, file=sys.stderr)
        return 2
    secret = "" if argv[0] == "hub" else sys.stdin.readline().strip()
    try:
        result = CHECKS[argv[0]](argv[1:], secret)
    except (CheckFailed, httpx.HTTPError) as failed:
        print(f"{argv[0]}: {type(failed).__name__}: {failed}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
