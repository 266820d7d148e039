"""`make up` from nothing on a fresh machine of this kind, then sign-in, spawn and stop.

A clean Debian 12 container (tests/fresh/machine.py: the fresh-machine image, this host's
package-client configuration, its own network namespace) gets a copy of the tree (tracked and
not-ignored files, as they are in the working tree; ``$FACTORYHUB_FRESH_SOURCE`` names another
tree) at /root/factoryhub and runs ``make up`` there as root, as a new operator would. Its
output goes to test-artifacts/fresh-make-up.log; past 15 minutes it fails with the log's tail.

Then, from the host's side (the host's venv Python in the container's network namespace, so
every target is the container's loopback; tests/fresh/checker.py): the hub answers, the demo
user sofia signs in through the IdP and lands on the spawn form, a spawn through the hub API
(the operator token of the container's `make up`) becomes a running Slurm job whose server
answers, the stop leaves no job in Slurm; and a second ``make up`` succeeds within a minute.
Timings go to the terminal and test-artifacts/fresh-timings.json, the container's logs (the
factory's and the jobs') to test-artifacts/fresh-logs/. The container (unique name
per run) and the temporary tree are removed at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .machine import REPO, FreshMachine, ensure_image

pytestmark = pytest.mark.fresh

ARTIFACTS = REPO / "test-artifacts"
SOURCE = Path(os.environ.get("FACTORYHUB_FRESH_SOURCE") or REPO).resolve()
CHECKER = Path(__file__).with_name("checker.py")
MAKE_UP_LIMIT = 15 * 60
SECOND_MAKE_UP_LIMIT = 60
TOKEN_FILE = "/var/lib/factoryhub/local/admin-api-token"
HUB_LOG = "/var/lib/factoryhub/local/hub.log"
USER, PASSWORD = "sofia", "factory-demo"  # local/idp/demo-users.json, project acme-ai
SPAWN_OPTIONS = {"project": "acme-ai", "profile": "cpu-small"}
# Slurm's job states of a job that has ended; any other state still holds a place.
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}
ENDED |= {"DEADLINE", "OUT_OF_MEMORY"}


@dataclass
class Fresh:
    machine: FreshMachine
    say: Any
    make_up: tuple[int | None, float] = (None, 0.0)
    timings: dict[str, float] = field(default_factory=dict)

    def require_up(self) -> None:
        rc, seconds = self.make_up
        if rc != 0:
            pytest.fail(f"make up failed ({_outcome(rc, seconds)}); see test_make_up_from_nothing")

    def check(self, action: str, *args: str, secret: str = "") -> dict[str, Any]:
        """tests/fresh/checker.py with the host's Python in the container's network namespace."""
        pid = str(self.machine.pid())
        done = subprocess.run(
            [
                "nsenter",
                "--target",
                pid,
                "--net",
                "--",
                sys.executable,
                str(CHECKER),
                action,
                *args,
            ],
            input=secret + "\n",
            capture_output=True,
            text=True,
            timeout=400,
        )
        if done.returncode != 0:
            hub_log = self.machine.exec("tail", "-n", "40", HUB_LOG).stdout
            pytest.fail(f"check {action}: {done.stderr.strip()[-3000:]}\n{HUB_LOG}:\n{hub_log}")
        return json.loads(done.stdout)

    def jobs_of(self, user: str) -> list[tuple[int, str]]:
        """(id, state) of ``user``'s jobs in the container's Slurm, from ``squeue --json``
        (which lists recently ended jobs too). Read here, not with factoryhub's parser: the
        test must not depend on what is installed on the host."""
        done = self.machine.exec("squeue", "--json")
        assert done.returncode == 0, done.stderr
        jobs = json.loads(done.stdout)["jobs"]
        return [
            (job["job_id"], _state(job["job_state"])) for job in jobs if job["user_name"] == user
        ]


def _state(value: str | list[str]) -> str:  # v0.0.38: a string; later versions: a list
    return value[0] if isinstance(value, list) else value


def _outcome(rc: int | None, seconds: float) -> str:
    return f"ran past {seconds:.0f} s" if rc is None else f"exit {rc} after {seconds:.0f} s"


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def fresh(request: pytest.FixtureRequest) -> Iterator[Fresh]:
    missing = [tool for tool in ("podman", "nsenter", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: make install-test installs podman")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:  # on the terminal even while pytest captures output
        if reporter is None or capture is None:
            print(f"fresh: {message}")
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"fresh: {message}")

    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    image, built = ensure_image()
    image_s = time.monotonic() - started
    say(f"{image} {'built' if built else 'cached'} in {image_s:.1f} s")
    fresh = Fresh(FreshMachine(image, SOURCE), say)
    fresh.timings["image_built" if built else "image_cached"] = round(image_s, 1)
    try:
        fresh.machine.start()
        fresh.make_up = fresh.machine.run_logged(
            ["make", "up"], ARTIFACTS / "fresh-make-up.log", MAKE_UP_LIMIT
        )
        fresh.timings["make_up"] = round(fresh.make_up[1], 1)
        say(f"make up in the fresh container: {_outcome(*fresh.make_up)}")
        yield fresh
    finally:
        try:
            fresh.machine.collect_logs(ARTIFACTS / "fresh-logs")
        finally:
            fresh.machine.remove()
        fresh.timings["whole"] = round(time.monotonic() - started, 1)
        say(f"timings (s): {fresh.timings}")
        (ARTIFACTS / "fresh-timings.json").write_text(json.dumps(fresh.timings, indent=1) + "\n")


def test_make_up_from_nothing(fresh: Fresh) -> None:
    rc, seconds = fresh.make_up
    log = ARTIFACTS / "fresh-make-up.log"
    assert rc == 0, f"make up on a fresh machine: {_outcome(rc, seconds)}; {log}:\n{_tail(log)}"
    assert fresh.check("hub")["status"] == 200


def test_sign_in_lands_on_the_spawn_form(fresh: Fresh) -> None:
    fresh.require_up()
    page = fresh.check("sign-in", USER, secret=PASSWORD)
    fresh.timings["sign_in"] = page["seconds"]
    assert (page["status"], page["path"]) == (200, "/hub/spawn"), page
    assert "profile" in page["form_fields"], page


def test_a_spawned_server_is_a_slurm_job_and_its_stop_leaves_none(fresh: Fresh) -> None:
    fresh.require_up()
    fresh.check("sign-in", USER, secret=PASSWORD)  # makes the Unix user and the hub user
    token = fresh.machine.exec("cat", TOKEN_FILE)
    assert token.returncode == 0, token.stderr
    try:
        spawned = fresh.check("spawn", USER, json.dumps(SPAWN_OPTIONS), secret=token.stdout)
        fresh.timings["spawn_ready"] = spawned["ready_seconds"]
        assert spawned["status"] == 200, spawned
        states = [state for _, state in fresh.jobs_of(USER)]
        assert states == ["RUNNING"], states
    finally:
        stopped = fresh.check("stop", USER, secret=token.stdout)
        fresh.timings["stop"] = stopped["seconds"]
    deadline = time.monotonic() + 30
    while (left := [j for j in fresh.jobs_of(USER) if j[1] not in ENDED]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert left == [], left
    assert [state for _, state in fresh.jobs_of(USER)] == ["CANCELLED"]


def test_a_second_make_up_takes_seconds(fresh: Fresh) -> None:
    fresh.require_up()
    log = ARTIFACTS / "fresh-make-up-again.log"
    rc, seconds = fresh.machine.run_logged(["make", "up"], log, SECOND_MAKE_UP_LIMIT * 2)
    fresh.timings["make_up_again"] = round(seconds, 1)
    fresh.say(f"second make up: {_outcome(rc, seconds)}")
    assert rc == 0, f"second make up: {_outcome(rc, seconds)}; {log}:\n{_tail(log)}"
    assert seconds < SECOND_MAKE_UP_LIMIT, f"second make up took {seconds:.0f} s:\n{_tail(log)}"
    assert fresh.check("hub")["status"] == 200
