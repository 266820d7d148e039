"""slurmrestd for the local factory: Slurm's REST API on 127.0.0.1:6820 with JWT sign-in.

A hub in the "rest" access mode (``slurm.access: rest``) talks to it instead of running
sbatch/squeue/scancel: it mints a token per user with the HS256 key that slurm.conf names in
``AuthAltParameters=jwt_key=...`` (:data:`KEY`). slurmrestd refuses to run as root or as
SlurmUser, so it runs as its own system user (:data:`USER`), with ``SLURM_JWT=daemon`` so
that it passes each caller's token on to slurmctld and slurmdbd. It does not fork: this
module starts it in its own session and records its pid.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import httpx

from factoryhub.local import pids
from factoryhub.local.keys import create_key

SLURM_DIR = pids.STATE_ROOT / "slurm"
KEY = SLURM_DIR / "jwt_hs256.key"
PORT = 6820
URL = f"http://127.0.0.1:{PORT}"
API_VERSION = "v0.0.38"
USER = "slurmrestd"
# openapi/v0.0.38: jobs, nodes, partitions, reservations; openapi/dbv0.0.38: accounting.
PLUGINS = f"openapi/{API_VERSION},openapi/db{API_VERSION}"
AUTH_PLUGIN = "rest_auth/jwt"
BINARY = "/usr/sbin/slurmrestd"


def ensure_key() -> bool:
    """Create the HS256 key (32 random bytes, slurm 0600) if missing; True when created."""
    return create_key(KEY, 32, 0o600, "slurm")


def ensure_user() -> None:
    """The unprivileged system user slurmrestd runs as."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )


def start(log: Path, pidfile: Path, address: str = f"127.0.0.1:{PORT}") -> int:
    """Start slurmrestd listening on ``address`` (``IP:PORT``; the local factory's is
    127.0.0.1:PORT); its pid (also written to ``pidfile``)."""
    if not Path(BINARY).exists():
        raise FileNotFoundError(f"{BINARY} is missing: install the Debian package slurmrestd")
    ensure_user()
    entry = pwd.getpwnam(USER)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "SLURM_JWT": "daemon", "LANG": "C.UTF-8"}
    # slurmrestd logs callers and requests: root's (and the daemon's) alone
    with open(
        os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "ab"
    ) as out:
        os.fchmod(out.fileno(), 0o600)
        proc = subprocess.Popen(
            [BINARY, "-s", PLUGINS, "-a", AUTH_PLUGIN, address],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def answers(url: str = URL) -> bool:
    """True when slurmrestd answers HTTP at ``url`` (401 without a token counts)."""
    try:
        response = httpx.get(f"{url}/slurm/{API_VERSION}/ping", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 401)
