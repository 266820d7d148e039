"""The ready call as an attacker would make it: from inside the user's own job (where the
server's API token lives), naming an address that is not the job's node. Before the fix the
hub accepted any unicast address, so a job could aim the proxy's route for ``/user/<name>/``
at any host and port the hub reaches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.hub import RunningHub
from tests.support.kernel import run_in_kernel

pytestmark = [pytest.mark.slurm, pytest.mark.security]

READY_CALL = """
import json, os, urllib.request, urllib.error
def ready(ip, port):
    request = urllib.request.Request(
        os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/factoryhub/server-ready",
        data=json.dumps({"ip": ip, "port": port, "node": "elsewhere"}).encode(),
        headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"],
                 "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
print(json.dumps([ready(ip, port) for ip, port in ATTEMPTS]))
"""


def test_a_ready_call_with_a_foreign_address_is_refused_and_logged(
    hub: RunningHub, unix_users: Any
) -> None:
    (user,) = unix_users(1)
    assert hub.spawn(user, {"profile": "cpu-small"}).status_code in (201, 202)
    hub.wait_ready(user)
    with hub.client() as c:
        before = c.get(f"/hub/api/users/{user}").json()["servers"][""]
    # the hub's own API port, a loopback address that is not the node's, a public address
    attempts = [["127.0.0.1", 1], ["127.0.0.2", 8081], ["192.0.2.10", 443]]
    out = run_in_kernel(hub, user, f"ATTEMPTS = {attempts!r}\n{READY_CALL}")
    codes = json.loads(out.strip().splitlines()[-1])
    # 127.0.0.1 is the node's address (NodeAddr on the local factory): accepted; others not
    assert codes == [200, 403, 403], codes
    log = hub.log_tail(400)
    assert "Refused the ready call" in log and "127.0.0.2 is not an address of node" in log
    with hub.client() as c:
        after = c.get(f"/hub/api/users/{user}").json()["servers"][""]
        assert c.get(f"/user/{user}/api/status").status_code == 200
    assert after["url"] == before["url"]
    hub.stop_server(user)
