"""A single-node Slurm (slurm-wlm 22.05 + munge, Debian) on loopback for the local factory.

With accounting: slurmdbd on 127.0.0.1:6819 in front of a private MariaDB on 127.0.0.1:3307
(datadir under ``/var/lib/factoryhub/mysql``), and ``AccountingStorageEnforce=associations``:
a user needs an association (``factoryhub.local.accounting``) before Slurm runs their jobs.

Everything here runs as root. ``up()`` is idempotent and records what it started in
``/var/lib/factoryhub/local/started.json`` so that ``down()`` stops exactly that.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import jinja2

from factoryhub.local import accounting, pids, slurmrestd
from factoryhub.local.keys import create_key

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
SLURM_DIR = pids.STATE_ROOT / "slurm"
STATE_DIR = SLURM_DIR / "state"
SPOOL_DIR = SLURM_DIR / "spool"
LOG_DIR = SLURM_DIR / "log"
RUN_DIR = SLURM_DIR / "run"
# The HS256 key of auth/jwt (slurmrestd's callers): slurm 0600; root (the hub) reads it too.
JWT_KEY = slurmrestd.KEY
MUNGE_RUN_DIR = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN_DIR / "munged.pid"
MUNGE_LOG = Path("/var/log/munge/munged.log")

# Accounting: slurmdbd, and MariaDB behind it (loopback only, away from a system MariaDB).
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
DBD_PORT = 6819
DBD_PASSWORD_FILE = SLURM_DIR / "dbd-password"
MYSQL_DATADIR = pids.STATE_ROOT / "mysql"
MYSQL_RUN_DIR = pids.STATE_ROOT / "run"
MYSQL_LOG_DIR = pids.STATE_ROOT / "log"
MARIADB_SOCKET = MYSQL_RUN_DIR / "mariadbd.sock"
MARIADB_PIDFILE = MYSQL_RUN_DIR / "mariadbd.pid"
MARIADB_LOG = MYSQL_LOG_DIR / "mariadbd.log"
MARIADB_PORT = 3307
STORAGE_DB = "slurm_acct_db"
STORAGE_USER = "slurm"

CPUS = 64  # declared, not real: jobs here mostly wait on the network, not on cores
MEMORY_FRACTION = 0.7
DEF_MEM_PER_CPU = 512  # MB: a job without --mem must not claim the whole node

READY_STATES = ("idle", "mixed", "allocated", "completing")
# start order; stop reversed
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmrestd")


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


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("factoryhub.local", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - a Slurm config file, not HTML
    )
    return env.get_template(name)


def render_conf() -> str:
    return _template("slurm.conf.j2").render(
        generator="factoryhub.local.slurm",
        jwt_key=JWT_KEY,
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
        dbd_port=DBD_PORT,
    )


def render_dbd_conf(password: str) -> str:
    return _template("slurmdbd.conf.j2").render(
        generator="factoryhub.local.slurm",
        jwt_key=JWT_KEY,
        dbd_port=DBD_PORT,
        log_dir=LOG_DIR,
        run_dir=RUN_DIR,
        storage_port=MARIADB_PORT,
        storage_user=STORAGE_USER,
        storage_pass=password,
        storage_loc=STORAGE_DB,
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
    _mkdir(pids.LOCAL_DIR, "root", 0o700)  # root's alone: hub.log, the admin token
    for log in [*LOG_DIR.glob("slurmctld.log*"), *LOG_DIR.glob("slurmdbd.log*")]:
        _chown(log, "slurm")
    _mkdir(MYSQL_DATADIR, "mysql", 0o700)
    _mkdir(MYSQL_RUN_DIR, "mysql", 0o755)
    _mkdir(MYSQL_LOG_DIR, "mysql", 0o750)
    # munged refuses to start unless its directories belong to it.
    _mkdir(MUNGE_RUN_DIR, "munge", 0o755)
    _mkdir(Path("/var/lib/munge"), "munge", 0o700)
    _mkdir(MUNGE_LOG.parent, "munge", 0o700)
    _mkdir(MUNGE_KEY.parent, "munge", 0o700)


def ensure_munge_key() -> bool:
    """Create ``/etc/munge/munge.key`` (munge, 0400) if missing; True when created."""
    return create_key(MUNGE_KEY, 1024, 0o400, "munge")


def _write_file(path: Path, text: str, mode: int, owner: str = "root") -> bool:
    """Write ``path`` atomically (owner, mode set before it appears); True when it changed."""
    try:
        st = path.stat()
        if (
            path.read_text() == text
            and st.st_mode & 0o777 == mode
            and st.st_uid == pwd.getpwnam(owner).pw_uid
        ):
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    _chown(tmp, owner)
    tmp.replace(path)
    return True


def write_conf() -> bool:
    """Write ``/etc/slurm/slurm.conf``; True when its content changed."""
    return _write_file(SLURM_CONF, render_conf(), 0o644)


def dbd_password() -> str:
    """The MariaDB password of slurmdbd (created once, root 0600 in ``DBD_PASSWORD_FILE``)."""
    try:
        password = DBD_PASSWORD_FILE.read_text().strip()
    except FileNotFoundError:
        password = ""
    if not password:
        _write_file(DBD_PASSWORD_FILE, secrets.token_hex(24) + "\n", 0o600)
        password = DBD_PASSWORD_FILE.read_text().strip()
    DBD_PASSWORD_FILE.chmod(0o600)
    return password


def write_dbd_conf(password: str) -> bool:
    """Write ``/etc/slurm/slurmdbd.conf`` (slurm, 0600: slurmdbd demands it); True if changed."""
    return _write_file(SLURMDBD_CONF, render_dbd_conf(password), 0o600, owner="slurm")


# --- MariaDB ---------------------------------------------------------------------------------


def _mariadb_client(sql: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``sql`` as MariaDB's root (unix-socket auth) through our private socket."""
    return subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={MARIADB_SOCKET}", "-u", "root", "-N", "-B"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mariadb_ok() -> bool:
    try:
        out = _run(
            ["mariadb-admin", "--no-defaults", f"--socket={MARIADB_SOCKET}", "-u", "root", "ping"],
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def init_mariadb_datadir() -> bool:
    """``mariadb-install-db`` into ``MYSQL_DATADIR`` when it holds no database; True if run."""
    if (MYSQL_DATADIR / "mysql").is_dir():
        return False
    out = _run(
        ["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={MYSQL_DATADIR}",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        timeout=180,
    )  # fmt: skip
    if out.returncode != 0:
        raise SlurmError(f"mariadb-install-db failed: {(out.stderr or out.stdout).strip()}")
    return True


def ensure_storage_db(password: str) -> None:
    """Database ``slurm_acct_db`` and its user slurm@localhost/127.0.0.1 (idempotent)."""
    users = [f"'{STORAGE_USER}'@'{host}'" for host in ("localhost", "127.0.0.1")]
    sql = [f"CREATE DATABASE IF NOT EXISTS {STORAGE_DB};"]
    for user in users:  # password: hex digits only (dbd_password), safe inside quotes
        sql += [
            f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}';",
            f"ALTER USER {user} IDENTIFIED BY '{password}';",
            f"GRANT ALL ON {STORAGE_DB}.* TO {user};",
        ]
    out = _mariadb_client("\n".join(sql))
    if out.returncode != 0:
        raise _fail(f"setting up {STORAGE_DB} failed: {out.stderr.strip()}", "mariadbd")


def dbd_ok() -> bool:
    """slurmdbd answers (``sacctmgr -n show cluster``)."""
    try:
        out = _run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


# --- daemons -------------------------------------------------------------------------------


def _pidfile(name: str) -> Path:
    return {"munged": MUNGE_PIDFILE, "mariadbd": MARIADB_PIDFILE}.get(name, RUN_DIR / f"{name}.pid")


def _logfile(name: str) -> Path:
    return {"munged": MUNGE_LOG, "mariadbd": MARIADB_LOG}.get(name, LOG_DIR / f"{name}.log")


def _pid(name: str) -> int | None:
    """The running daemon's pid: from its pid file, else any process of that name (for
    mariadbd: only one on our datadir, never a system MariaDB)."""
    pid = pids.read_pidfile(_pidfile(name))
    if pids.alive(pid, comm=name):
        return pid
    others = pids.find_by_comm(name)
    if name == "mariadbd":
        mine = f"--datadir={MYSQL_DATADIR}"
        others = [p for p in others if mine in pids.proc_cmdline(p)]
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


def _mariadbd_cmd() -> list[str]:
    return [
        "/usr/sbin/mariadbd",
        "--no-defaults",  # none of /etc/mysql: this one is private to the local factory
        "--user=mysql",
        f"--datadir={MYSQL_DATADIR}",
        f"--socket={MARIADB_SOCKET}",
        f"--pid-file={MARIADB_PIDFILE}",
        f"--log-error={MARIADB_LOG}",
        "--bind-address=127.0.0.1",
        f"--port={MARIADB_PORT}",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=512M",  # slurmdbd warns below half its 1 GiB advice
        "--innodb-lock-wait-timeout=900",  # what slurmdbd asks for (rollups lock long)
    ]


def _start_mariadbd() -> None:
    """mariadbd stays in the foreground: run it detached, in its own session, as user mysql."""
    with open(os.devnull, "rb") as devnull, MARIADB_LOG.open("ab") as log:
        subprocess.Popen(
            _mariadbd_cmd(),
            stdin=devnull,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    _chown(MARIADB_LOG, "mysql")


def _spawn_daemon(name: str) -> int:
    """Start one daemon (it forks itself into the background) and wait until it answers."""
    _pidfile(name).unlink(missing_ok=True)
    if name == "mariadbd":
        init_mariadb_datadir()
        _start_mariadbd()
    elif name == "slurmrestd":
        slurmrestd.start(_logfile(name), _pidfile(name))
    else:
        cmd = {
            "munged": ["runuser", "-u", "munge", "--", "/usr/sbin/munged"],
            "slurmdbd": ["/usr/sbin/slurmdbd"],
            "slurmctld": ["/usr/sbin/slurmctld"],
            "slurmd": ["/usr/sbin/slurmd", "-N", nodename()],
        }[name]
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
            out = proc.stdout.strip()
            raise _fail(f"{name} failed to start (exit {proc.returncode}): {out}", name)
    ready = {
        "munged": munge_ok,
        "mariadbd": mariadb_ok,
        "slurmdbd": dbd_ok,
        "slurmctld": controller_up,
        "slurmd": lambda: True,
        "slurmrestd": slurmrestd.answers,
    }[name]
    if not _wait(lambda: pids.alive(pids.read_pidfile(_pidfile(name)), comm=name), 30):
        raise _fail(f"{name} did not come up (no live pid in {_pidfile(name)})", name)
    if not _wait(ready, 60):
        raise _fail(f"{name} is running but does not answer", name)
    pid = pids.read_pidfile(_pidfile(name))
    assert pid is not None
    return pid


def _stop_daemon(name: str, pid: int) -> None:
    pids.terminate(pid, timeout=60 if name == "mariadbd" else 15)  # InnoDB flushes on the way out
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
    elif name == "mariadbd" and not _wait(mariadb_ok, 30):
        raise _fail("mariadbd runs but `mariadb-admin ping` fails", name)
    elif name == "slurmrestd" and not _wait(slurmrestd.answers, 30):
        raise _fail("slurmrestd runs but does not answer HTTP", name)
    elif name == "slurmdbd" and not _wait(dbd_ok, 30):
        raise _fail("slurmdbd runs but `sacctmgr show cluster` fails", name)


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
         f"--account={accounting.OPS_ACCOUNT}", "--output=/dev/null", "--chdir=/tmp",
         "--wrap", "true"],
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


def _register_accounting() -> None:
    """The cluster in slurmdbd (before slurmctld starts), and root's account for check jobs."""
    try:
        accounting.ensure_cluster(accounting.CLUSTER)
        accounting.ensure_account(accounting.OPS_ACCOUNT, "Local factory operations")
        accounting.ensure_user_in_account("root", accounting.OPS_ACCOUNT)
    except accounting.AccountingError as exc:
        raise _fail(f"registering the cluster in slurmdbd failed: {exc}", "slurmdbd") from exc


def up(verify: bool = True) -> dict[str, int]:
    """Bring munged, mariadbd, slurmdbd, slurmctld and slurmd up (idempotent); returns what
    THIS call started."""
    if os.geteuid() != 0:
        raise SlurmError("the local Slurm must be managed as root")
    _prepare_dirs()
    ensure_munge_key()
    slurmrestd.ensure_key()
    password = dbd_password()
    changed = write_conf()
    dbd_changed = write_dbd_conf(password)
    started: dict[str, int] = {}
    restart = ("slurmrestd", "slurmd", "slurmctld") if changed else ()
    # daemons running on an old config: restart them, not just reconfigure
    for name in (*restart, *(("slurmdbd",) if dbd_changed else ())):
        pid = _pid(name)
        if pid is not None:
            _stop_daemon(name, pid)
    for name in ("munged", "mariadbd"):
        _ensure(name, started)
    ensure_storage_db(password)
    _ensure("slurmdbd", started)
    _register_accounting()
    for name in ("slurmctld", "slurmd", "slurmrestd"):
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
    """Create a login user (``useradd -m -s /bin/bash``) in ``groups``; idempotent. The user
    also gets a Slurm association (account ``factoryhub-default``) unless they have one."""
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
    try:
        accounting.ensure_default_association(name)
    except accounting.AccountingError as exc:
        raise SlurmError(f"giving {name} a Slurm association failed: {exc}") from exc
