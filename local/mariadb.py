"""The local factory's private MariaDB behind slurmdbd: its own datadir, socket and port on
loopback (``127.0.0.1:3307``), never a system MariaDB's, and the accounting database in it.
"""

from __future__ import annotations

import os
import pwd
import subprocess

from factoryhub.local.slurm_layout import (
    MARIADB_LOG,
    MARIADB_PIDFILE,
    MARIADB_PORT,
    MARIADB_SOCKET,
    MYSQL_DATADIR,
    STORAGE_DB,
    STORAGE_USER,
    SlurmError,
    fail,
    run,
)


def _client(sql: str, timeout: float = 30) -> subprocess.CompletedProcess:
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
        out = run(
            ["mariadb-admin", "--no-defaults", f"--socket={MARIADB_SOCKET}", "-u", "root", "ping"],
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def init_datadir() -> bool:
    """``mariadb-install-db`` into ``MYSQL_DATADIR`` when it holds no database; True if run."""
    if (MYSQL_DATADIR / "mysql").is_dir():
        return False
    out = run(
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
    out = _client("\n".join(sql))
    if out.returncode != 0:
        raise fail(f"setting up {STORAGE_DB} failed: {out.stderr.strip()}", "mariadbd")


def _command() -> list[str]:
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


def start() -> None:
    """mariadbd stays in the foreground: run it detached, in its own session, as user mysql
    (its datadir made first when there is none)."""
    init_datadir()
    with open(os.devnull, "rb") as devnull, MARIADB_LOG.open("ab") as log:
        subprocess.Popen(
            _command(),
            stdin=devnull,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    pw = pwd.getpwnam("mysql")
    os.chown(MARIADB_LOG, pw.pw_uid, pw.pw_gid)
