"""The one way the tests and the benchmarks run a real JupyterHub.

``RunningHub`` starts ``jupyterhub`` (factoryhub's own ``jupyterhub_config.py`` with a site
file, or another config such as the benchmarks' stock batchspawner one) on loopback ports,
as root or as a given Unix user, and waits until its API answers, following its log rather
than the clock. It stops it by pid: the hub's process group, the children it started (the
proxy and the services run in sessions of their own) when the hub does not end in time, and
the proxy its pid file names, so nothing of it outlives ``stop()``. It also spawns, waits for
and stops user servers through the hub's API, with ``SpawnWatch`` saying what it last saw
when a wait fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from tests.support.waiting import SpawnWatch, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROXY_NAME = "configurable-http-proxy"
PROXY_PATH = REPO / "node_modules" / ".bin" / PROXY_NAME  # installed project-locally


def proxy_command() -> str:
    if not PROXY_PATH.exists():
        raise RuntimeError(f"{PROXY_PATH} is missing: run `make install` (npm ci) first")
    return str(PROXY_PATH)


def hub_config_path() -> str:
    spec = importlib.util.find_spec("factoryhub.hub.jupyterhub_config")
    if spec is None or spec.origin is None:
        raise RuntimeError("factoryhub is not installed in this environment")
    return spec.origin


def example_site() -> dict[str, Any]:
    from factoryhub.hub.site.loader import example_site_path

    return yaml.safe_load(example_site_path().read_text())


def site_for(state_dir: Path, ports: tuple[int, int, int], venv: Path | None = None) -> dict:
    """The example site file for a hub on loopback ``ports`` (public, hub API, proxy API)
    with its state in ``state_dir`` and its users' servers in ``venv`` (this Python's)."""
    site = example_site()
    public, api, proxy_api = ports
    site["hub"].update(
        public_url=f"http://127.0.0.1:{public}",
        api_url=f"http://127.0.0.1:{api}",
        proxy_api_url=f"http://127.0.0.1:{proxy_api}",
        state_dir=str(state_dir),
    )
    site["spawner"]["python_env"] = str(venv or VENV_BIN.parent)
    return site


def local_signin(site: dict[str, Any]) -> dict[str, Any]:
    """``site`` with local sign-in and no projects (any user may spawn any profile, under
    their default Slurm account), no associations managed, and no services: the reports and
    courses services need projects, and a culler would outlive a hub killed by a test."""
    site["auth"]["type"] = "local"
    site["auth"]["local"]["admin_users"] = []
    site["projects"] = []
    site["slurm"]["manage_associations"] = False
    site["idle_culler"] = {"enabled": False}
    site["reports"] = {"enabled": False}
    site["courses"] = {"enabled": False, "list": []}  # courses name projects
    return site


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class RunningHub:
    """A hub on its own loopback ports; ``site_file`` None for a config that reads none."""

    state_dir: Path
    site_file: Path | None
    token: str
    log_path: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # Run the hub as this (unprivileged) Unix user instead of root: the "rest" access mode.
    run_as: str = ""
    config_file: Path | None = None  # None: factoryhub's jupyterhub_config.py
    name: str = "factoryhub"  # in messages
    free_ports: tuple[int, ...] = ()  # start() refuses when one of these is taken

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def token_file(self) -> Path:
        """The admin API token the hub registers (written by ``start()``)."""
        return self.state_dir / "admin-api-token"

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"token {token or self.token}"},
            timeout=kw.pop("timeout", 30),
            **kw,
        )

    @staticmethod
    def venv() -> Path:
        return VENV_BIN.parent

    @staticmethod
    def artifacts() -> Path:
        path = REPO / "test-artifacts"
        path.mkdir(exist_ok=True)
        return path

    def environment(self) -> dict[str, str]:
        """The hub's environment: this process's, the hub's files, then ``extra_env``."""
        env = dict(os.environ)
        env.update(
            FACTORYHUB_ADMIN_TOKEN_FILE=str(self.token_file),
            FACTORYHUB_PROXY_CMD=proxy_command(),
            PATH=f"{VENV_BIN}:{Path(proxy_command()).parent}:{env.get('PATH', '')}",
        )
        if self.site_file is not None:
            env["FACTORYHUB_SITE_FILE"] = str(self.site_file)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60, bound: float = 300) -> None:
        """Start the hub; wait until its API answers: ``timeout`` seconds at most without a
        new line in its log, ``bound`` seconds in all."""
        taken = [port for port in self.free_ports if not port_free(port)]
        if taken:
            raise RuntimeError(f"{self.name} hub: port(s) {taken} taken")
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        identity: dict[str, Any] = {}
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.token_file, entry.pw_uid, entry.pw_gid)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        config = self.config_file or hub_config_path()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
                cwd=self.state_dir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **identity,
            )
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} hub exited with {proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api_url}/", timeout=2).status_code == 200
            return False

        wait_until(
            answers,
            bound,
            lambda: f"the {self.name} hub did not answer at {self.api_url}/:\n{self.log_tail()}",
            progress=self.log_size,  # the hub writes its log as it starts
            stall=timeout,
        )

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return -1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> None:
        """Stop the hub process group, then its proxy if it is still there. The hub stops
        its services one by one (up to 20 s each) and then its proxy: ``timeout`` bounds it
        all, and a hub killed at the bound takes its children (the proxy and the services,
        in sessions of their own) with it."""
        if self.proc is not None:
            self._stop_hub(sig, timeout)
        self._stop_proxy()

    def _stop_hub(self, sig: int, timeout: float) -> None:
        assert self.proc is not None
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.proc.pid).children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            for child in children:  # by pid, each one this hub started
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        self.proc = None

    def _stop_proxy(self) -> None:
        """The proxy named by the hub's pid file (a hub killed before it could stop it)."""
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            proxy = psutil.Process(int((self.state_dir / "proxy.pid").read_text().strip()))
            if not any(PROXY_NAME in part for part in proxy.cmdline()):
                return  # the pid was reused
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proxy.pid, signal.SIGTERM)  # it leads a session of its own
            try:
                proxy.wait(5)
            except psutil.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.pid, signal.SIGKILL)

    def kill_hub_only(self) -> None:
        """SIGKILL the hub process alone (its proxy stays, as after a crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no hub log at {self.log_path})"

    # ------------------------------------------------------------- user servers

    def ensure_user(self, name: str) -> None:
        with self.client() as c:
            r = c.get(f"/hub/api/users/{name}")
            if r.status_code == 404:
                r = c.post(f"/hub/api/users/{name}")
                assert r.status_code == 201, f"{self.name} hub: cannot create {name}: {r.text}"

    def spawn(self, name: str, options: dict[str, Any] | None = None) -> httpx.Response:
        self.ensure_user(name)
        with self.client() as c:
            return c.post(f"/hub/api/users/{name}/server", json=options or {})

    def wait_ready(self, name: str, timeout: float = 120, bound: float = 600) -> dict[str, Any]:
        """Wait for the default server of ``name`` to be ready, following the spawn's
        progress events and its job in Slurm: give up after ``timeout`` seconds without any
        progress (a job waiting in the queue counts) or after ``bound`` seconds in all, or at
        once when the hub says the spawn failed or the server is gone."""
        with self.client() as c, self.watch([name]) as watch:

            def ready() -> dict[str, Any] | None:
                if watch.failed():
                    raise AssertionError(f"{watch.failed()}\n{watch.describe()}")
                model = c.get(f"/hub/api/users/{name}").json()
                server = model.get("servers", {}).get("")
                if server and server.get("ready"):
                    return server
                if not server and not model.get("pending"):
                    raise AssertionError(f"server of {name} is gone:\n{watch.describe()}")
                return None

            return wait_until(
                ready,
                bound,
                lambda: f"server of {name} not ready:\n{watch.describe()}",
                progress=watch.progress,
                stall=timeout,
                wake=watch.news,
            )

    def watch(
        self, servers: list[str | tuple[str, str]], users: tuple[str, ...] = ()
    ) -> SpawnWatch:
        """A ``SpawnWatch`` of these servers (user, or (user, server name)) on this hub."""
        return SpawnWatch(self.url, self.token, servers, self.log_tail, users)

    def stop_server(
        self, name: str, timeout: float = 60, bound: float = 300, missing_ok: bool = False
    ) -> None:
        """Stop the default server of ``name``; wait until the hub has none: ``timeout``
        seconds at most without a change (the hub's pending state, the job's state in
        Slurm), ``bound`` seconds in all. ``missing_ok``: no server running is fine."""
        with self.client() as c, self.watch([], users=(name,)) as watch:
            r = c.delete(f"/hub/api/users/{name}/server")
            allowed = (202, 204, 400) if missing_ok else (202, 204)  # 400: no server
            assert r.status_code in allowed, f"{self.name} hub: stop of {name}: {r.text}"
            model: dict[str, Any] = {}

            def stopped() -> bool:
                nonlocal model
                model = c.get(f"/hub/api/users/{name}").json()
                return not model.get("servers") and not model.get("pending")

            wait_until(
                stopped,
                bound,
                lambda: (
                    f"server of {name} did not stop: pending={model.get('pending')!r}, "
                    f"servers={model.get('servers')!r}\n{watch.describe()}"
                ),
                progress=lambda: (model.get("pending"), watch.progress()),
                stall=timeout,
            )
