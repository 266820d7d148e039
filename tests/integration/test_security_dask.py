"""Private Dask clusters: another user on the same network cannot use a user's scheduler.

The owner's ``SLURMCluster()`` (no arguments) scales to two worker jobs and computes; from
another user's kernel, the scheduler's address answers neither plain TCP nor TLS with
credentials of their own, and the owner's key cannot be read. Before the fix the other
user's ``Client("tcp://...")`` connected and ran code on the scheduler as the owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import RunningHub
from tests.support.kernel import Kernel, kernel

from .oidc_fixtures import cancel_jobs_of
from .test_dask import OTHER, USER, dask_jobs, start_server

pytestmark = [pytest.mark.slurm, pytest.mark.security]

OWNER_CLUSTER = """
import json, os, time
from dask_jobqueue import SLURMCluster
from distributed import Client
cluster = SLURMCluster()
client = Client(cluster)
begun = time.monotonic()
cluster.scale(2)
client.wait_for_workers(2, timeout=90)
print(json.dumps({
    "took": time.monotonic() - begun,
    "address": cluster.scheduler_address,
    "workers": len(client.scheduler_info()["workers"]),
    "sum": client.submit(sum, range(10)).result(),
    "script": cluster.job_script(),
    "server_job": os.environ["SLURM_JOB_ID"],
    "config": os.environ.get("DASK_CONFIG", ""),
}))
"""

# Run in the other user's kernel: every way in that needs no file of the owner's.
ATTACK = """
import json, os, socket, ssl
from distributed import Client
from distributed.security import Security
address = {address!r}
plain = "tcp://" + address.split("://", 1)[1]
tried = {{}}
for name, target, security in (
    ("plain tcp", plain, None),
    ("tls, own temporary credentials", address, Security.temporary()),
):
    try:
        with Client(target, security=security, timeout=10) as c:
            tried[name] = "ran as uid %s" % c.run_on_scheduler(os.getuid)
    except Exception as e:
        tried[name] = "refused: %s: %s" % (type(e).__name__, str(e)[:200])
host, port = address.split("://", 1)[1].rsplit(":", 1)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # trust any server
try:
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(bytes(8))
            data = tls.recv(1)
    tried["tls without a client certificate"] = "answered" if data else "refused: closed"
except (ssl.SSLError, OSError) as e:
    tried["tls without a client certificate"] = "refused: %s" % type(e).__name__
try:
    with open({key!r}) as f:
        tried["read the key"] = "read %d bytes" % len(f.read())
except OSError as e:
    tried["read the key"] = "refused: %s" % type(e).__name__
print(json.dumps(tried))
"""


@pytest.fixture(scope="module")
def owner(oidc_hub: RunningHub) -> Iterator[tuple[Kernel, dict[str, Any]]]:
    """USER's server, a kernel in it, and its zero-argument cluster with two workers."""
    token = start_server(oidc_hub, USER)
    try:
        with kernel(oidc_hub, USER, token) as k:
            out = k.execute(OWNER_CLUSTER, timeout=150)
            yield k, json.loads(out.strip().splitlines()[-1])
    finally:
        with contextlib.suppress(AssertionError):
            oidc_hub.stop_server(USER)
        cancel_jobs_of([USER])


def test_the_owners_zero_argument_cluster_scales_and_computes(
    owner: tuple[Kernel, dict[str, Any]],
) -> None:
    _, cluster = owner
    assert cluster["sum"] == 45 and cluster["workers"] == 2, cluster
    assert len(dask_jobs(USER, of=cluster["server_job"])) == 2
    assert cluster["address"].startswith("tls://"), cluster["address"]
    print(f"\nzero-argument cluster: 2 TLS workers in {cluster['took']:.1f} s")


def test_the_key_stays_private_and_out_of_job_scripts(
    owner: tuple[Kernel, dict[str, Any]],
) -> None:
    _, cluster = owner
    folder = Path(cluster["config"])
    assert folder == Path(f"/home/{USER}/.factoryhub/jobs/{cluster['server_job']}/dask")
    uid = Path(f"/home/{USER}").stat().st_uid
    info = folder.stat()
    assert info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o700
    key_file = folder / "tls-key.pem"
    key = key_file.read_text()
    assert "PRIVATE KEY" in key
    assert key_file.stat().st_uid == uid and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # the workers' job script names the file; it never holds the key
    assert f"--tls-key {key_file}" in cluster["script"]
    assert "PRIVATE KEY" not in cluster["script"]
    # nothing the user's processes left in /tmp holds it (dask-jobqueue dumps in-memory keys
    # to a shared folder, and writes job scripts there)
    body = key.splitlines()[1]
    for path in Path("/tmp").rglob("*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_uid == uid and info.st_size < 1 << 20:
                assert body not in path.read_text(errors="replace"), path


def test_another_users_kernel_cannot_use_the_scheduler(
    oidc_hub: RunningHub, owner: tuple[Kernel, dict[str, Any]]
) -> None:
    owner_kernel, cluster = owner
    key = os.path.join(cluster["config"], "tls-key.pem")
    token = start_server(oidc_hub, OTHER)
    try:
        with kernel(oidc_hub, OTHER, token) as k:
            out = k.execute(ATTACK.format(address=cluster["address"], key=key), timeout=120)
        tried = json.loads(out.strip().splitlines()[-1])
        for way, result in tried.items():
            assert result.startswith("refused"), f"{way}: {result}"
        # the owner's cluster is unharmed
        still = owner_kernel.execute("print(client.submit(sum, range(4)).result())", timeout=60)
        assert still.strip().splitlines()[-1] == "6"
    finally:
        with contextlib.suppress(AssertionError):
            oidc_hub.stop_server(OTHER)
        cancel_jobs_of([OTHER])
