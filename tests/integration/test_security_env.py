"""What a user can read of the processes the hub starts for them: every ``runuser`` call the
hub makes (submit, cancel, reading as the user) is recorded by a ``runuser`` placed first on
the hub's PATH, and none of them, nor the user's server job, may carry anything of the
hub's own environment (a canary secret, the proxy's auth token, service tokens). Before the
fix the calls ran with the hub's whole environment (``env=None``), which the user can read in
``/proc/<pid>/environ`` of their own processes."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import REPO, RunningHub
from tests.support.kernel import run_in_kernel

from .hub_fixtures import write_site

pytestmark = [pytest.mark.slurm, pytest.mark.security]

PORTS = (18230, 18231, 18232)
CANARY = "FHCANARY-" + secrets.token_hex(12)
RECORDER = """#!/bin/sh
# records its environment (NUL-separated), then is the real runuser
env -0 > "$(mktemp {records}/call.XXXXXX)"
exec /usr/sbin/runuser "$@"
"""


@pytest.fixture(scope="module")
def recorded_hub(
    slurm: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningHub, Path]]:
    state = tmp_path_factory.mktemp("env-hub-state")
    state.chmod(0o700)
    records = state / "runuser-calls"
    records.mkdir(mode=0o700)
    shim = state / "bin"
    shim.mkdir()
    (shim / "runuser").write_text(RECORDER.format(records=records))
    (shim / "runuser").chmod(0o700)
    site = write_site(state / "factory.yaml", state, ports=PORTS)
    hub = RunningHub(
        state_dir=state,
        site_file=site,
        token=secrets.token_hex(32),
        log_path=REPO / "test-artifacts" / "hub-env.log",
        url=f"http://127.0.0.1:{PORTS[0]}",
        extra_env={"FACTORYHUB_TEST_CANARY": CANARY, "CONFIGPROXY_AUTH_TOKEN": CANARY},
    )
    hub.log_path.parent.mkdir(exist_ok=True)
    # runuser is looked up on the hub's PATH: the recorder first
    hub.extra_env["PATH"] = f"{shim}:{hub.venv() / 'bin'}:{os.environ['PATH']}"
    hub.start()
    try:
        yield hub, records
    finally:
        hub.stop()


def recorded_calls(records: Path) -> list[dict[str, str]]:
    calls = []
    for path in sorted(records.iterdir()):
        items = [i for i in path.read_bytes().split(b"\0") if i]
        calls.append(dict(i.decode(errors="replace").split("=", 1) for i in items))
    return calls


def test_no_process_started_for_a_user_carries_the_hubs_environment(
    recorded_hub: tuple[RunningHub, Path], unix_users: Any
) -> None:
    hub, records = recorded_hub
    (user,) = unix_users(1)
    assert hub.spawn(user, {"profile": "cpu-small"}).status_code in (201, 202)
    hub.wait_ready(user)
    job_env = json.loads(
        run_in_kernel(hub, user, "import json, os; print(json.dumps(dict(os.environ)))")
    )
    hub.stop_server(user)
    calls = recorded_calls(records)
    assert len(calls) >= 2, "expected at least the submit and the cancel through runuser"
    for env in [*calls, job_env]:
        leaked = sorted(k for k, v in env.items() if CANARY in v)
        assert not leaked, f"the hub's secrets reached a user's process: {leaked}"
        assert "FACTORYHUB_TEST_CANARY" not in env
        assert not any(k.startswith("CONFIGPROXY") for k in env)
    for env in calls:
        # system folders (and, for sbatch, the job's venv): none a user may write to
        for folder in env["PATH"].split(":"):
            info = os.stat(folder)
            assert info.st_uid == 0 and not info.st_mode & 0o022, (folder, env["PATH"])
        assert hub.token not in env.values()  # the operator's token
