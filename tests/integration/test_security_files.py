"""Root never follows a path a user controls (issue 16): a user's job log as an attack.

Against the real hub and Slurm. The user plants, at the name of her next job log, a symbolic
link to a file only root may read (Slurm cannot write the log, the job fails), or swaps the
log of a running job for a FIFO or a link to ``/dev/zero`` before the job ends. The spawn
fails; neither the spawn error nor the hub's log nor any file under the hub's state holds the
secret, and the hub stays responsive meanwhile: its API answers within a second, another
user's spawn succeeds, and its memory does not grow.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import resource
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from factoryhub.local import pids
from tests.support.hub import RunningHub
from tests.support.waiting import squeue_jobs, sse_events, wait_until

pytestmark = [pytest.mark.security, pytest.mark.slurm]

PLANTED = 40  # job ids planted ahead: the tests hold the integration lock, nobody else submits
SWAP_CONFIG = """\
# factoryhub security test: the server swaps its own job's log, then dies
import glob, os
job = os.environ.get("SLURM_JOB_ID", "")
for log in glob.glob(os.path.expanduser(f"~/.factoryhub/logs/*-{{job}}.log")) if job else []:
    swap = log + ".swap"
    {make}
    os.replace(swap, log)
os._exit(3)
"""
MAKERS = {"fifo": "os.mkfifo(swap)", "zero": 'os.symlink("/dev/zero", swap)'}


def as_user(user: str, *argv: str, input: str | None = None) -> str:
    home = pwd.getpwnam(user).pw_dir
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "USER": user, "LOGNAME": user}
    done = subprocess.run(
        [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", *argv],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


def log_dir(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / ".factoryhub" / "logs"


@pytest.fixture
def canary() -> Iterator[tuple[Path, str]]:
    """A secret only root may read, in a folder everyone may pass (like the local factory's
    admin token was)."""
    folder = Path(tempfile.mkdtemp(prefix="fh-canary-", dir="/var/tmp"))
    folder.chmod(0o755)
    secret = "FHCANARY-" + secrets.token_hex(16)
    path = folder / "admin-api-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    try:
        yield path, secret
    finally:
        shutil.rmtree(folder)


def next_job_id(user: str) -> int:
    """The id Slurm gives the next job: a held probe job's id plus one."""
    out = as_user(user, "sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap", "true")
    probe = out.strip().split(";")[0]
    subprocess.run(["scancel", probe], check=True, timeout=30)
    return int(probe) + 1


def spawn_failure(
    hub: RunningHub, user: str, check: Callable[[], None] = lambda: None, bound: float = 120
) -> str:
    """Spawn ``user``'s server and return the hub's failure message (it must fail);
    ``check`` runs on every look and may end the wait with an AssertionError."""
    with hub.watch([user]) as watch:
        r = hub.spawn(user)
        if r.status_code == 500:  # it failed within the hub's slow-spawn timeout
            return f"{r.json()['message']}\n{failure_event(hub, user)}"
        assert r.status_code in (201, 202), r.text

        def failed() -> str:
            check()
            return watch.failed()

        return wait_until(failed, bound, lambda: f"the spawn did not fail:\n{watch.describe()}")


def failure_event(hub: RunningHub, user: str) -> str:
    """The message of the failed spawn's last progress event (what the spawn page shows)."""
    with hub.client() as c:
        text = c.get(f"/hub/api/users/{user}/server/progress").text
    events = [json.loads(data) for data in sse_events(iter(text.splitlines()))]
    assert events and events[-1].get("failed"), text
    return str(events[-1].get("message", ""))


def stop_any(hub: RunningHub, *users: str) -> None:
    """Stop the users' servers where they have one; wait until Slurm has no live job of
    theirs."""
    for user in users:
        with hub.client() as c:
            model = c.get(f"/hub/api/users/{user}").json()
        if model.get("servers") or model.get("pending"):
            hub.stop_server(user)
    wait_until(
        lambda: not squeue_jobs(users),
        60,
        lambda: f"jobs left: {[str(j) for j in squeue_jobs(users)]}",
    )


def files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path))
    return found


def assert_secret_nowhere(hub: RunningHub, secret: str, *shown: str) -> None:
    for text in shown:
        assert secret not in text, f"the secret reached the user: {text!r}"
    assert secret not in hub.log_path.read_text(errors="replace"), "the secret is in the hub log"
    assert files_holding(hub.state_dir, secret.encode()) == [], "the secret is in the hub state"


def test_a_link_to_a_root_only_file_at_the_next_job_logs(
    hub: RunningHub, unix_users: Any, canary: tuple[Path, str]
) -> None:
    (user,) = unix_users(1)
    secret_path, secret = canary
    logs = log_dir(user)
    as_user(user, "mkdir", "-p", str(logs))
    first = next_job_id(user)
    names = [logs / f"factoryhub-server-{user}-{first + i}.log" for i in range(PLANTED)]
    for name in names:
        as_user(user, "ln", "-sfn", str(secret_path), str(name))
    try:
        message = spawn_failure(hub, user)
        job = re.search(r"Job (\d+) ended", message)
        assert job and first <= int(job.group(1)) < first + PLANTED, message
        assert f"{logs}/factoryhub-server-{user}-{job.group(1)}.log" in message
        with hub.client() as c:
            model = c.get(f"/hub/api/users/{user}").json()
        assert not model.get("servers"), model
        assert_secret_nowhere(hub, secret, message, str(model))
    finally:
        for name in names:
            name.unlink(missing_ok=True)
        stop_any(hub, user)


@dataclass
class Responsiveness:
    """How long the hub's API takes to answer, asked every 0.1 s in a thread."""

    url: str
    worst: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.1):
                begun = time.monotonic()
                try:
                    client.get(f"{self.url}/hub/api/").raise_for_status()
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                self.worst = max(self.worst, time.monotonic() - begun)

    @contextlib.contextmanager
    def measured(self) -> Iterator[Responsiveness]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@contextlib.contextmanager
def memory_bound(pid: int, headroom: int = 2 << 30) -> Iterator[None]:
    """The hub's address space capped while the test runs (an unfixed hub reading
    /dev/zero would otherwise take the machine's memory), and restored after."""
    before = resource.prlimit(pid, resource.RLIMIT_AS)
    size = (
        int(
            next(
                ln
                for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ln.startswith("VmSize:")
            ).split()[1]
        )
        * 1024
    )
    resource.prlimit(pid, resource.RLIMIT_AS, (size + headroom, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, before)


def release_fifos(folder: Path) -> None:
    """Open each FIFO there for writing once: a reader blocked on it (an unfixed hub) gets
    its end of file."""
    for path in folder.glob("*.log"):
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_fifo_or_dev_zero_at_the_job_log_leaves_the_hub_responsive(
    hub: RunningHub, unix_users: Any, kind: str
) -> None:
    attacker, other = unix_users(2)
    home = Path(pwd.getpwnam(attacker).pw_dir)
    config = home / ".jupyter" / "jupyter_server_config.py"
    as_user(attacker, "mkdir", "-p", str(config.parent))
    as_user(
        attacker,
        "sh",
        "-c",
        'cat > "$1"',
        "sh",
        str(config),
        input=SWAP_CONFIG.format(make=MAKERS[kind]),
    )
    assert hub.proc is not None
    pid = hub.proc.pid
    peak_before = peak_rss_kib(pid)
    try:
        with memory_bound(pid), Responsiveness(hub.url).measured() as answers:

            def responsive() -> None:
                assert not answers.failures, f"the hub did not answer: {answers.failures[:3]}"
                assert answers.worst < 1.0, f"the hub took {answers.worst:.2f} s to answer"

            message = spawn_failure(hub, attacker, responsive)
            assert hub.spawn(other).status_code in (201, 202)
            hub.wait_ready(other)
            responsive()
        grew_mib = (peak_rss_kib(pid) - peak_before) / 1024
        assert grew_mib < 256, f"the hub's memory grew by {grew_mib:.0f} MiB"
        assert "before JupyterLab answered" in message and "\0" not in message
    finally:
        config.unlink(missing_ok=True)
        release_fifos(log_dir(attacker))
        for path in log_dir(attacker).glob("*.log"):
            with contextlib.suppress(OSError):
                if not path.is_file() or path.is_symlink():
                    path.unlink()
        stop_any(hub, other, attacker)


def test_the_local_factory_state_folder_is_root_only(slurm: Any) -> None:
    """``factoryhub-local`` keeps hub.log, started.json and the admin token in a folder only
    root may enter (``slurm-up`` makes it so; the session's Slurm fixture ran it)."""
    info = pids.LOCAL_DIR.stat()
    assert info.st_uid == 0 and info.st_mode & 0o777 == 0o700, oct(info.st_mode)


def test_the_hubs_state_files_are_private(hub: RunningHub) -> None:
    """Every file in the hub's state folder (its database, cookie secret, identities, token
    files) is the hub's alone, in a folder only it may enter."""
    assert hub.state_dir.stat().st_mode & 0o777 == 0o700
    # (factory.yaml is the test's own site file, written before the hub started; proxy.pid
    # holds a process id, rewritten by JupyterHub with the umask's mode)
    files = [
        p
        for p in hub.state_dir.iterdir()
        if p.is_file() and p.name not in ("factory.yaml", "proxy.pid")
    ]
    assert any(p.name == "jupyterhub.sqlite" for p in files)
    loose = {p.name: oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o077}
    assert not loose, loose
