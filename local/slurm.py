"""A single-node Slurm (slurm-wlm 22.05 + munge, Debian) on loopback for the local factory.

With accounting: slurmdbd on 127.0.0.1:6819 in front of a private MariaDB on 127.0.0.1:3307
(:mod:`~.mariadb`, datadir under ``/var/lib/factoryhub/mysql``), and
``AccountingStorageEnforce=associations``: a user needs an association
(``factoryhub.local.accounting``) before Slurm runs their jobs.

Everything here runs as root. ``up()`` is idempotent and records what it started in
``/var/lib/factoryhub/local/started.json`` so that ``down()`` stops exactly that. Where
things live is :mod:`~.slurm_layout`; whether each part answers, :mod:`~.slurm_checks`.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import subprocess
from pathlib import Path

import jinja2

from factoryhub.local import accounting, mariadb, pids, slurmrestd
from factoryhub.local.keys import create_key
from factoryhub.local.slurm_checks import (
    controller_up,
    dbd_ok,
    munge_ok,
    verify_job,
    wait_node_ready,
)
from factoryhub.local.slurm_layout import (
    DAEMONS,
    DBD_PASSWORD_FILE,
    DBD_PORT,
    JWT_KEY,
    LOG_DIR,
    MARIADB_LOG,
    MARIADB_PORT,
    MUNGE_KEY,
    MUNGE_LOG,
    MUNGE_RUN_DIR,
    MYSQL_DATADIR,
    MYSQL_LOG_DIR,
    MYSQL_RUN_DIR,
    RUN_DIR,
    SLURM_CONF,
    SLURM_DIR,
    SLURMDBD_CONF,
    SPOOL_DIR,
    STATE_DIR,
    STORAGE_DB,
    STORAGE_USER,
    SlurmError,
    fail,
    logfile,
    nodename,
    pidfile,
    run,
    wait,
)

# What the local factory's tools and tests use from here.
__all__ = [
    "CPUS",
    "DBD_PASSWORD_FILE",
    "LOG_DIR",
    "MARIADB_LOG",
    "MUNGE_LOG",
    "SLURMDBD_CONF",
    "SLURM_CONF",
    "SlurmError",
    "cancel_user_jobs",
    "create_unix_user",
    "dbd_password",
    "down",
    "nodename",
    "render_conf",
    "start_slurmctld",
    "status",
    "stop_slurmctld",
    "up",
    "wait_node_ready",
]

CPUS = 64  # declared, not real: jobs here mostly wait on the network, not on cores
MEMORY_FRACTION = 0.7
DEF_MEM_PER_CPU = 512  # MB: a job without --mem must not claim the whole node


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


# --- daemons -------------------------------------------------------------------------------


def _pid(name: str) -> int | None:
    """The running daemon's pid: from its pid file, else any process of that name (for
    mariadbd: only one on our datadir, never a system MariaDB)."""
    pid = pids.read_pidfile(pidfile(name))
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


def _spawn_daemon(name: str) -> int:
    """Start one daemon (it forks itself into the background) and wait until it answers."""
    pidfile(name).unlink(missing_ok=True)
    if name == "mariadbd":
        mariadb.start()
    elif name == "slurmrestd":
        slurmrestd.start(logfile(name), pidfile(name))
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
            raise fail(f"{name} failed to start (exit {proc.returncode}): {out}", name)
    ready = {
        "munged": munge_ok,
        "mariadbd": mariadb.mariadb_ok,
        "slurmdbd": dbd_ok,
        "slurmctld": controller_up,
        "slurmd": lambda: True,
        "slurmrestd": slurmrestd.answers,
    }[name]
    if not wait(lambda: pids.alive(pids.read_pidfile(pidfile(name)), comm=name), 30):
        raise fail(f"{name} did not come up (no live pid in {pidfile(name)})", name)
    if not wait(ready, 60):
        raise fail(f"{name} is running but does not answer", name)
    pid = pids.read_pidfile(pidfile(name))
    assert pid is not None
    return pid


def _stop_daemon(name: str, pid: int) -> None:
    pids.terminate(pid, timeout=60 if name == "mariadbd" else 15)  # InnoDB flushes on the way out
    if name != "munged":
        pidfile(name).unlink(missing_ok=True)


def _ensure(name: str, started: dict[str, int]) -> None:
    if _pid(name) is None:
        started[name] = _spawn_daemon(name)
        pids.record_started(name, started[name])
    elif name == "munged" and not munge_ok():
        raise fail("munged runs but `munge -n | unmunge` fails", name)
    elif name == "slurmctld" and not wait(controller_up, 30):
        raise fail("slurmctld runs but does not answer (sinfo --json)", name)
    elif name == "mariadbd" and not wait(mariadb.mariadb_ok, 30):
        raise fail("mariadbd runs but `mariadb-admin ping` fails", name)
    elif name == "slurmrestd" and not wait(slurmrestd.answers, 30):
        raise fail("slurmrestd runs but does not answer HTTP", name)
    elif name == "slurmdbd" and not wait(dbd_ok, 30):
        raise fail("slurmdbd runs but `sacctmgr show cluster` fails", name)


def _register_accounting() -> None:
    """The cluster in slurmdbd (before slurmctld starts), and root's account for check jobs."""
    try:
        accounting.ensure_cluster(accounting.CLUSTER)
        accounting.ensure_account(accounting.OPS_ACCOUNT, "Local factory operations")
        accounting.ensure_user_in_account("root", accounting.OPS_ACCOUNT)
    except accounting.AccountingError as exc:
        raise fail(f"registering the cluster in slurmdbd failed: {exc}", "slurmdbd") from exc


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
    mariadb.ensure_storage_db(password)
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
    """Start the controller if it is down and wait until it answers."""
    pid = _pid("slurmctld")
    if pid is None:
        pid = _spawn_daemon("slurmctld")
        if "slurmctld" in pids.load_started():
            pids.record_started("slurmctld", pid)
    if not wait(controller_up, timeout):
        raise fail("slurmctld does not answer (sinfo --json)", "slurmctld")
    return pid


def cancel_user_jobs(username: str) -> None:
    """Cancel every job of ``username`` (no error when there are none)."""
    run(["scancel", "--user", username], timeout=30)


def create_unix_user(name: str, password: str | None = None, groups: tuple[str, ...] = ()) -> None:
    """Create a login user (``useradd -m -s /bin/bash``) in ``groups``; idempotent. The user
    also gets a Slurm association (account ``factoryhub-default``) unless they have one."""
    for group in groups:
        try:
            grp.getgrnam(group)
        except KeyError:
            run(["groupadd", group], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        cmd = ["useradd", "-m", "-s", "/bin/bash"]
        if groups:
            cmd += ["-G", ",".join(groups)]
        run([*cmd, name], check=True)
    else:
        missing = [g for g in groups if name not in grp.getgrnam(g).gr_mem]
        if missing:
            run(["usermod", "-a", "-G", ",".join(missing), name], check=True)
    if password is not None:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
    try:
        accounting.ensure_default_association(name)
    except accounting.AccountingError as exc:
        raise SlurmError(f"giving {name} a Slurm association failed: {exc}") from exc
