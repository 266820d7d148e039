"""Start, watch and stop the local JupyterHub (and the configurable-http-proxy it starts)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from factoryhub.local import pids

HUB_URL = "http://127.0.0.1:8000"
HUB_API = f"{HUB_URL}/hub/api/"
HUB_DIR = pids.STATE_ROOT / "hub"  # the hub's working directory (its DB, cookie secret)
HUB_LOG = pids.LOCAL_DIR / "hub.log"
HUB_PIDFILE = pids.LOCAL_DIR / "hub.pid"
# The proxy's pid file: the factory's hub config puts it in the state dir, JupyterHub's default
# is relative to its working directory (HUB_DIR as well).
PROXY_PIDFILES = (HUB_DIR / "proxy.pid", HUB_DIR / "jupyterhub-proxy.pid")
ADMIN_TOKEN_FILE = pids.LOCAL_DIR / "admin-api-token"
PROXY_NAME = "configurable-http-proxy"
START_TIMEOUT = 60.0


class HubError(RuntimeError):
    """The hub could not be started (the message says why, with the log tail if any)."""


def repo_root() -> Path:
    """The source checkout (for node_modules/): $FACTORYHUB_REPO, else the working directory."""
    return Path(os.environ.get("FACTORYHUB_REPO") or os.getcwd()).resolve()


def hub_package_dir() -> Path:
    spec = importlib.util.find_spec("factoryhub.hub")
    if spec is None or not spec.submodule_search_locations:
        raise HubError("the package factoryhub.hub is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def hub_config_path() -> Path:
    """``factoryhub/hub/jupyterhub_config.py`` of the installed package; HubError if missing."""
    try:
        spec = importlib.util.find_spec("factoryhub.hub.jupyterhub_config")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        expected = hub_package_dir() / "jupyterhub_config.py"
        raise HubError(
            f"missing hub configuration {expected} (hub/jupyterhub_config.py in the repo); "
            "write it, then run `make up` again"
        )
    return Path(spec.origin)


def default_site_file() -> Path:
    return Path(str(importlib.resources.files("factoryhub.hub") / "factory.example.yaml"))


def proxy_command() -> Path:
    override = os.environ.get("FACTORYHUB_PROXY_CMD")
    path = Path(override) if override else repo_root() / "node_modules" / ".bin" / PROXY_NAME
    if not os.access(path, os.X_OK):
        raise HubError(f"{path} is missing: run `make install` (npm ci) in {repo_root()}")
    return path.absolute()


def ensure_admin_token() -> Path:
    """Create the operators' admin API token file (0600, in a 0700 folder) if missing."""
    pids.private_dir(pids.LOCAL_DIR)
    if not ADMIN_TOKEN_FILE.exists():
        fd = os.open(ADMIN_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    ADMIN_TOKEN_FILE.chmod(0o600)
    return ADMIN_TOKEN_FILE


def hub_answers(timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(HUB_API, timeout=timeout) as resp:  # noqa: S310 - fixed URL
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def hub_pid() -> int | None:
    pid = pids.read_pidfile(HUB_PIDFILE)
    return pid if pids.alive(pid, cmd_contains="jupyterhub") else None


def proxy_pid() -> int | None:
    """The proxy our hub started: recorded, from the hub's pid file, or a child of the hub."""
    candidates = [pids.load_started().get("proxy")]
    candidates += [pids.read_pidfile(path) for path in PROXY_PIDFILES]
    hub = hub_pid()
    if hub is not None:
        candidates += pids.find_by_cmd(PROXY_NAME, ppid=hub)
    for pid in candidates:
        if pids.alive(pid, cmd_contains=PROXY_NAME):
            return pid
    return None


def hub_env(site_file: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    proxy = proxy_command()
    env["FACTORYHUB_SITE_FILE"] = str(
        site_file or os.environ.get("FACTORYHUB_SITE_FILE") or default_site_file()
    )
    env["FACTORYHUB_PROXY_CMD"] = str(proxy)
    env["FACTORYHUB_ADMIN_TOKEN_FILE"] = str(ensure_admin_token())
    env["FACTORYHUB_REPO"] = str(repo_root())
    env["PATH"] = os.pathsep.join(
        [str(proxy.parent), str(Path(sys.prefix) / "bin"), env.get("PATH", "/usr/bin:/bin")]
    )
    return env


def _fail(message: str) -> HubError:
    return HubError(f"{message}\n--- last lines of {HUB_LOG} ---\n{pids.tail(HUB_LOG, 40)}")


def _wait_answering(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub_answers():
            return
        if not pids.alive(pid):
            raise _fail(f"the hub (pid {pid}) exited before answering {HUB_API}")
        time.sleep(0.3)
    raise _fail(f"the hub (pid {pid}) did not answer {HUB_API} within {timeout:.0f}s")


def up_hub(site_file: Path | None = None) -> tuple[int, bool]:
    """Start the hub in the background unless it runs and answers; (pid, started_now)."""
    config = hub_config_path()
    env = hub_env(site_file)
    if not Path(env["FACTORYHUB_SITE_FILE"]).is_file():
        raise HubError(f"site file {env['FACTORYHUB_SITE_FILE']} does not exist")
    pid = hub_pid()
    if pid is not None:
        _wait_answering(pid, START_TIMEOUT)
        return pid, False
    pids.private_dir(HUB_DIR)
    jupyterhub = Path(sys.prefix) / "bin" / "jupyterhub"
    with os.fdopen(pids.open_private_log(HUB_LOG), "ab") as log:
        log.write(f"\n=== factoryhub-local: starting {jupyterhub} -f {config}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(jupyterhub), "-f", str(config)],
            cwd=HUB_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pids.write_private(HUB_PIDFILE, f"{proc.pid}\n")
    pids.record_started("hub", proc.pid)
    try:
        _wait_answering(proc.pid, START_TIMEOUT)
    except HubError:
        down_hub()
        raise
    proxy = proxy_pid()
    if proxy is not None:
        pids.record_started("proxy", proxy)
    return proc.pid, True


def down_hub() -> list[str]:
    """Stop the hub (its whole process group) and the proxy it started; the names stopped."""
    stopped = []
    proxy = proxy_pid()  # look it up while the hub still runs (it is the hub's child)
    hub = hub_pid()
    if hub is not None:
        pids.terminate(hub, timeout=15, group=True)
        stopped.append("hub")
    if proxy is not None and pids.alive(proxy, cmd_contains=PROXY_NAME):
        pids.terminate(proxy, timeout=5)
        stopped.append("proxy")
    elif proxy is not None:
        stopped.append("proxy")  # the hub's cleanup_proxy stopped it
    HUB_PIDFILE.unlink(missing_ok=True)
    pids.forget_started("hub")
    pids.forget_started("proxy")
    return stopped
