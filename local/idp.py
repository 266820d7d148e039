"""Start, stop and inspect the local OpenID Connect provider (``local/idp/server.mjs``).

Standard library only. The provider is a Node program run from the repository checkout
(its ``node_modules`` come from ``npm ci`` at the repository root), found through
``$FACTORYHUB_REPO`` or by searching upward from the current directory.

State directory layout (mode 0700)::

    clients.json    the OAuth clients (0600), written by up()
    client-secret   the hub's client secret (0600), made once by client_secret()
    jwks.json       the RS256 signing key (0600), made by the provider on first start
    cookie-secret   the provider's cookie signing key (0600), made on first start
    idp.pid         the provider's pid;  idp.json  the settings it was started with
    idp.log         its stdout and stderr
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_PORT = 9000
LOOPBACK = "127.0.0.1"
DEFAULT_STATE_DIR = Path("/var/lib/factoryhub/idp")
SERVER_REL = Path("local/idp/server.mjs")
START_TIMEOUT = 30.0


class IdpError(RuntimeError):
    """The provider could not be found, started or stopped."""


def find_repo(start: Path | None = None) -> Path:
    """The repository checkout holding ``local/idp/server.mjs``."""
    env = os.environ.get("FACTORYHUB_REPO")
    if env:
        repo = Path(env).resolve()
        if (repo / SERVER_REL).is_file():
            return repo
        raise IdpError(f"FACTORYHUB_REPO={env} has no {SERVER_REL}")
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SERVER_REL).is_file():
            return folder
    raise IdpError(
        f"cannot find the factoryhub checkout ({SERVER_REL}): set FACTORYHUB_REPO "
        "or run from inside the repository"
    )


def hub_client(public_url: str, secret: str, client_id: str = "factoryhub") -> dict[str, Any]:
    """The OAuth client entry of a hub served at ``public_url``."""
    base = public_url.rstrip("/")
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [f"{base}/hub/oauth_callback"],
        "post_logout_redirect_uris": [f"{base}/hub/login"],
    }


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _state(state_dir: Path) -> Path:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    return state_dir


def client_secret(state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """The hub's client secret, made once (mode 0600) in ``state_dir/client-secret``."""
    path = _state(state_dir) / "client-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if not secret:
            raise IdpError(f"{path} is empty: remove it to make a new secret") from None
        return secret
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child
        return False
    return any(part.endswith(str(SERVER_REL)) for part in _cmdline(pid))


def status(state_dir: Path = DEFAULT_STATE_DIR) -> int | None:
    """The provider's pid when it runs (per ``state_dir/idp.pid``), else None."""
    try:
        pid = int((Path(state_dir) / "idp.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def down(state_dir: Path = DEFAULT_STATE_DIR, timeout: float = 10.0) -> bool:
    """Stop the provider (SIGTERM to its session, then SIGKILL); True when one was running."""
    pid = status(state_dir)
    (Path(state_dir) / "idp.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.05)
    raise IdpError(f"the provider (pid {pid}) does not stop")


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _discovery(port: int, host: str = LOOPBACK, timeout: float = 2.0) -> dict[str, Any] | None:
    url = f"http://{host}:{port}/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _server(repo: Path) -> Path:
    """The provider's program in ``repo``, checked to be there with its node modules."""
    server = repo / SERVER_REL
    if not server.is_file():
        raise IdpError(f"{server} does not exist")
    if not (repo / "node_modules" / "oidc-provider").is_dir():
        raise IdpError(f"{repo}/node_modules/oidc-provider is missing: run `npm ci` in {repo}")
    return server


def _clients_file(state_dir: Path, clients: list[dict[str, Any]] | None) -> Path:
    """``state_dir/clients.json``, rewritten when ``clients`` are given and differ."""
    clients_file = state_dir / "clients.json"
    if clients is not None:
        text = json.dumps(clients, indent=2) + "\n"
        if not clients_file.is_file() or clients_file.read_text() != text:
            _write_private(clients_file, text)
    elif not clients_file.is_file():
        raise IdpError(f"no clients given and {clients_file} does not exist")
    return clients_file


def _already_up(
    state_dir: Path, settings: dict[str, str], port: int, issuer: str, host: str
) -> int | None:
    """The pid of a provider already running with ``settings``; one running with other
    settings is stopped (None)."""
    pid = status(state_dir)
    if pid is None:
        return None
    try:
        same = json.loads((state_dir / "idp.json").read_text()) == settings
    except (OSError, ValueError):
        same = False
    if same and (_discovery(port, host) or {}).get("issuer") == issuer:
        return pid
    down(state_dir)
    return None


def _check_port_free(port: int, host: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as node does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise IdpError(f"{host}:{port} is in use by another program: {exc}") from None


def _launch(server: Path, repo: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    node = shutil.which("node") or "/usr/bin/node"
    with log.open("ab") as out:
        out.write(
            f"\n=== factoryhub idp: starting {node} {server} ({env['IDP_ISSUER']})\n".encode()
        )
        out.flush()
        return subprocess.Popen(
            [node, str(server)],
            cwd=repo,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_started(
    proc: subprocess.Popen, state_dir: Path, port: int, issuer: str, timeout: float, host: str
) -> int:
    """Wait until the provider answers discovery for ``issuer``; its pid."""
    log = state_dir / "idp.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (state_dir / "idp.pid").unlink(missing_ok=True)
            raise IdpError(
                f"the provider exited with status {proc.returncode}; {log}:\n{_log_tail(log)}"
            )
        found = _discovery(port, host)
        if found is not None:
            if found.get("issuer") != issuer:
                down(state_dir)
                raise IdpError(f"port {port} answers for issuer {found.get('issuer')!r}")
            return proc.pid
        time.sleep(0.1)
    down(state_dir)
    raise IdpError(f"the provider did not answer within {timeout:.0f} s; {log}:\n{_log_tail(log)}")


def up(
    port: int = DEFAULT_PORT,
    state_dir: Path = DEFAULT_STATE_DIR,
    users_file: Path | None = None,
    clients: list[dict[str, Any]] | None = None,
    issuer: str | None = None,
    repo: Path | None = None,
    timeout: float = START_TIMEOUT,
    host: str = LOOPBACK,
) -> int:
    """Start the provider unless it already runs with these settings; its pid.

    It listens on ``host`` (an IP address of this machine) only: loopback unless a caller
    needs it reached from a network of its own (the chart's pods in test_kube_pods.py).

    ``clients`` is written to ``state_dir/clients.json``; None keeps the file there.
    A provider running with other settings is restarted.
    """
    state_dir = _state(state_dir)
    repo = Path(repo).resolve() if repo else find_repo()
    server = _server(repo)
    clients_file = _clients_file(state_dir, clients)
    users = Path(users_file).resolve() if users_file else repo / "local/idp/demo-users.json"
    issuer = (issuer or f"http://{host}:{port}").rstrip("/")
    env = {
        "IDP_HOST": host,
        "IDP_PORT": str(port),
        "IDP_ISSUER": issuer,
        "IDP_USERS_FILE": str(users),
        "IDP_CLIENTS_FILE": str(clients_file),
        "IDP_KEYS_FILE": str(state_dir / "jwks.json"),
        "IDP_COOKIE_SECRET_FILE": str(state_dir / "cookie-secret"),
    }
    settings = {**env, "server": str(server), "clients": clients_file.read_text()}
    running = _already_up(state_dir, settings, port, issuer, host)
    if running is not None:
        return running
    _check_port_free(port, host)
    proc = _launch(server, repo, env, state_dir / "idp.log")
    (state_dir / "idp.pid").write_text(f"{proc.pid}\n")
    _write_private(state_dir / "idp.json", json.dumps(settings, indent=2) + "\n")
    return _wait_started(proc, state_dir, port, issuer, timeout, host)
