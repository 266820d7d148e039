"""Where the local factory's Slurm lives (files, ports, daemons), and the small helpers every
part of it uses: running a command, naming the node, failing with a log's tail, waiting.

``factoryhub.local.slurm`` brings the daemons up and down; ``.mariadb`` is slurmdbd's
database; ``.slurm_checks`` tells whether each part answers.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from factoryhub.local import pids, slurmrestd

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

# start order; stop reversed
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmrestd")


class SlurmError(RuntimeError):
    """The local Slurm could not be brought up (the message carries a log tail)."""


def run(cmd: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    """Run a command of the local factory's own (no Slurm answer is read from it)."""
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=check, stdin=subprocess.DEVNULL
    )


def nodename() -> str:
    return socket.gethostname().split(".")[0]


def pidfile(name: str) -> Path:
    return {"munged": MUNGE_PIDFILE, "mariadbd": MARIADB_PIDFILE}.get(name, RUN_DIR / f"{name}.pid")


def logfile(name: str) -> Path:
    return {"munged": MUNGE_LOG, "mariadbd": MARIADB_LOG}.get(name, LOG_DIR / f"{name}.log")


def fail(message: str, name: str) -> SlurmError:
    """A :class:`SlurmError` saying ``message`` with the last lines of daemon ``name``'s log."""
    log = logfile(name)
    return SlurmError(f"{message}\n--- last lines of {log} ---\n{pids.tail(log)}")


def wait(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Ask ``check`` until it says True (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
