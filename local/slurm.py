"""A single-node Slurm (slurm-wlm 22.05 + munge, Debian) on loopback for the local factory.

Everything here runs as root. ``up()`` is idempotent and records what it started in
``/var/lib/factoryhub/local/started.json`` so that ``down()`` stops exactly that.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import jinja2

from . import pids

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
SLURM_DIR = pids.STATE_ROOT / "slurm"
STATE_DIR = SLURM_DIR / "state"
SPOOL_DIR = SLURM_DIR / "spool"
LOG_DIR = SLURM_DIR / "log"
RUN_DIR = SLURM_DIR / "run"
MUNGE_RUN_DIR = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN_DIR / "munged.pid"
MUNGE_LOG = Path("/var/log/munge/munged.log")

CPUS = 16
MEMORY_FRACTION = 0.7
DEF_MEM_PER_CPU = 512  # MB: a job without --mem must not claim the whole node

READY_STATES = ("idle", "mixed", "allocated", "completing")
DAEMONS = ("munged", "slurmctld", "slurmd")  # start order; stop in reverse


class SlurmError(RuntimeError):
    """The local Slurm could not be brought up (the message carries a log tail)."""


def _run(cmd: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=check, stdin=subprocess.DEVNULL
    )


def nodename() -> str:
    return socket.gethostname().split(".")[0]


def _real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * MEMORY_FRACTION)
    raise SlurmError("MemTotal missing from /proc/meminfo")


def render_conf() -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("factoryhub.local", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - a Slurm config file, not HTML
    )
    return env.get_template("slurm.conf.j2").render(
        generator="factoryhub.local.slurm",
        hostname=nodename(),
        nodename=nodename(),
        cpus=CPUS,
        real_memory=_real_memory_mb(),
        def_mem_per_cpu=DEF_MEM_PER_CPU,
        state_dir=STATE_DIR,
        spool_dir=SPOOL_DIR,
        log_dir=LOG_DIR,
        run_dir=RUN_DIR,
        message_timeout=5,
        slurmctld_timeout=10,
    )


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _mkdir(path: Path, user: str, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _chown(path, user)
    path.chmod(mode)


def _prepare_dirs() -> None:
    _mkdir(SLURM_DIR, "root", 0o755)
    _mkdir(STATE_DIR, "slurm", 0o700)
    _mkdir(SPOOL_DIR, "root", 0o755)
    _mkdir(LOG_DIR, "slurm", 0o755)
    _mkdir(RUN_DIR, "slurm", 0o755)
    _mkdir(pids.LOCAL_DIR, "root", 0o755)
    for log in LOG_DIR.glob("slurmctld.log*"):
        _chown(log, "slurm")
    # munged refuses to start unless its directories belong to it.
    _mkdir(MUNGE_RUN_DIR, "munge", 0o755)
    _mkdir(Path("/var/lib/munge"), "munge", 0o700)
    _mkdir(MUNGE_LOG.parent, "munge", 0o700)
    _mkdir(MUNGE_KEY.parent, "munge", 0o700)


def ensure_munge_key() -> bool:
    """Create ``/etc/munge/munge.key`` (munge, 0400) if missing; True when created."""
    if MUNGE_KEY.exists():
        return False
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MUNGE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(1024))
    _chown(MUNGE_KEY, "munge")
    return True


def write_conf() -> bool:
    """Write ``/etc/slurm/slurm.conf``; True when its content changed."""
    text = render_conf()
    try:
        if SLURM_CONF.read_text() == text:
            return False
    except OSError:
        pass
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    tmp = SLURM_CONF.with_suffix(".conf.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(SLURM_CONF)
    return True


# --- daemons -------------------------------------------------------------------------------


def _pidfile(name: str) -> Path:
    return MUNGE_PIDFILE if name == "munged" else RUN_DIR / f"{name}.pid"


def _logfile(name: str) -> Path:
    return MUNGE_LOG if name == "munged" else LOG_DIR / f"{name}.log"


def _pid(name: str) -> int | None:
    """The running daemon's pid: from its pid file, else any process of that name."""
    pid = pids.read_pidfile(_pidfile(name))
    if pids.alive(pid, comm=name):
        return pid
    others = pids.find_by_comm(name)
    return others[0] if others else None


def status() -> dict[str, int | None]:
    """Daemon name → pid of the running daemon, or None."""
    return {name: _pid(name) for name in DAEMONS}


def _fail(message: str, name: str) -> SlurmError:
    log = _logfile(name)
    return SlurmError(f"{message}\n--- last lines of {log} ---\n{pids.tail(log)}")


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def munge_ok() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=5)
        if cred.returncode != 0:
            return False
        out = subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def controller_up() -> bool:
    try:
        out = _run(["scontrol", "ping"], timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " is UP" in out.stdout


def _spawn_daemon(name: str) -> int:
    """Start one daemon (it forks itself into the background) and wait until it answers."""
    cmd = {
        "munged": ["runuser", "-u", "munge", "--", "/usr/sbin/munged"],
        "slurmctld": ["/usr/sbin/slurmctld"],
        "slurmd": ["/usr/sbin/slurmd", "-N", nodename()],
    }[name]
    _pidfile(name).unlink(missing_ok=True)
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    if proc.returncode != 0:
        raise _fail(f"{name} failed to start (exit {proc.returncode}): {proc.stdout.strip()}", name)
    ready = {"munged": munge_ok, "slurmctld": controller_up, "slurmd": lambda: True}[name]
    if not _wait(lambda: pids.alive(pids.read_pidfile(_pidfile(name)), comm=name), 30):
        raise _fail(f"{name} did not come up (no live pid in {_pidfile(name)})", name)
    if not _wait(ready, 60):
        raise _fail(f"{name} is running but does not answer", name)
    pid = pids.read_pidfile(_pidfile(name))
    assert pid is not None
    return pid


def _stop_daemon(name: str, pid: int) -> None:
    pids.terminate(pid, timeout=15)
    if name != "munged":
        _pidfile(name).unlink(missing_ok=True)


def _ensure(name: str, started: dict[str, int]) -> None:
    if _pid(name) is None:
        started[name] = _spawn_daemon(name)
        pids.record_started(name, started[name])
    elif name == "munged" and not munge_ok():
        raise _fail("munged runs but `munge -n | unmunge` fails", name)
    elif name == "slurmctld" and not _wait(controller_up, 30):
        raise _fail("slurmctld runs but `scontrol ping` does not answer UP", name)


def node_state() -> str:
    out = _run(["sinfo", "-h", "-N", "-n", nodename(), "-o", "%T"], timeout=15)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def wait_node_ready(timeout: float = 60) -> str:
    """Wait until the node is idle/mixed/allocated, resuming it once if it is down/drained."""
    resumed = False
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = node_state()
        base = state.rstrip("*~#!%$@^-")
        if state and not state.endswith("*") and base in READY_STATES:
            return state
        if not resumed and base.startswith(("down", "drain")):
            _run(["scontrol", "update", f"nodename={nodename()}", "state=resume"], timeout=15)
            resumed = True
        time.sleep(0.3)
    raise _fail(f"node {nodename()} is not ready after {timeout:.0f}s (state {state!r})", "slurmd")


def job_state(job_id: str) -> str:
    out = _run(["scontrol", "-o", "show", "job", job_id], timeout=15)
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def verify_job(timeout: float = 60) -> float:
    """Run ``sbatch --wrap true`` as root to completion; the seconds it took."""
    begin = time.monotonic()
    out = _run(
        ["sbatch", "--parsable", "--oversubscribe", "--job-name=factoryhub-check",
         "--output=/dev/null", "--chdir=/tmp", "--wrap", "true"],
        timeout=30,
    )  # fmt: skip
    if out.returncode != 0:
        raise _fail(f"sbatch failed: {out.stderr.strip()}", "slurmctld")
    job_id = out.stdout.strip().split(";")[0]
    state = ""
    while time.monotonic() - begin < timeout:
        state = job_state(job_id)
        if state == "COMPLETED":
            return time.monotonic() - begin
        if state in ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL"):
            break
        time.sleep(0.2)
    _run(["scancel", job_id], timeout=15)
    raise _fail(f"check job {job_id} did not complete (state {state or 'unknown'})", "slurmd")


def up(verify: bool = True) -> dict[str, int]:
    """Bring munged, slurmctld and slurmd up (idempotent); returns what THIS call started."""
    if os.geteuid() != 0:
        raise SlurmError("the local Slurm must be managed as root")
    _prepare_dirs()
    ensure_munge_key()
    changed = write_conf()
    started: dict[str, int] = {}
    if changed:  # daemons running on an old config: restart them, not just reconfigure
        for name in ("slurmd", "slurmctld"):
            pid = _pid(name)
            if pid is not None:
                _stop_daemon(name, pid)
    for name in DAEMONS:
        _ensure(name, started)
    wait_node_ready()
    if verify:
        verify_job()
    return started


def down() -> list[str]:
    """Stop the daemons that ``up`` started (reverse order); the names stopped."""
    recorded = pids.load_started()
    stopped = []
    for name in reversed(DAEMONS):
        pid = recorded.get(name)
        if pid is None:
            continue
        if pids.alive(pid, comm=name):
            _stop_daemon(name, pid)
            stopped.append(name)
        pids.forget_started(name)
    return stopped


def stop_slurmctld() -> None:
    """Stop the controller (to simulate an outage); jobs and slurmd stay."""
    pid = _pid("slurmctld")
    if pid is not None:
        _stop_daemon("slurmctld", pid)


def start_slurmctld(timeout: float = 60) -> int:
    """Start the controller if it is down and wait until `scontrol ping` answers UP."""
    pid = _pid("slurmctld")
    if pid is None:
        pid = _spawn_daemon("slurmctld")
        if "slurmctld" in pids.load_started():
            pids.record_started("slurmctld", pid)
    if not _wait(controller_up, timeout):
        raise _fail("slurmctld does not answer `scontrol ping`", "slurmctld")
    return pid


def cancel_user_jobs(username: str) -> None:
    """Cancel every job of ``username`` (no error when there are none)."""
    _run(["scancel", "--user", username], timeout=30)


def create_unix_user(name: str, password: str | None = None, groups: tuple[str, ...] = ()) -> None:
    """Create a login user (``useradd -m -s /bin/bash``) in ``groups``; idempotent."""
    for group in groups:
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", group], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        cmd = ["useradd", "-m", "-s", "/bin/bash"]
        if groups:
            cmd += ["-G", ",".join(groups)]
        _run([*cmd, name], check=True)
    else:
        missing = [g for g in groups if name not in grp.getgrnam(g).gr_mem]
        if missing:
            _run(["usermod", "-a", "-G", ",".join(missing), name], check=True)
    if password is not None:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
