"""A real JupyterHub (with its configurable-http-proxy) for the integration tests.

The hub runs factoryhub's own ``jupyterhub_config.py`` with a test site file on its
own loopback ports, as root, spawning into the real local Slurm.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from .waiting import SpawnWatch, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# (public, hub API, proxy API) ports: the OIDC hub's public port matches the test IdP
# client's redirect URI (idp_fixtures.HUB_CALLBACK).
LOCAL_HUB_PORTS = (18200, 18281, 18201)
OIDC_HUB_PORTS = (18000, 18081, 18001)


def proxy_command() -> str:
    local = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if not local.exists():
        raise RuntimeError(f"{local} is missing: run `make install` (npm ci) first")
    return str(local)


def hub_config_path() -> str:
    spec = importlib.util.find_spec("factoryhub.hub.jupyterhub_config")
    assert spec and spec.origin, "factoryhub is not installed in this environment"
    return spec.origin


def example_site() -> dict[str, Any]:
    from factoryhub.hub.site.loader import example_site_path

    return yaml.safe_load(example_site_path().read_text())


def write_site(
    path: Path, state_dir: Path, ports: tuple[int, int, int] = LOCAL_HUB_PORTS, **overrides: Any
) -> Path:
    """The example site file for a test hub with local (PAM) sign-in and no projects;
    ``overrides`` replace top-level sections."""
    site = example_site()
    public, api, proxy_api = ports
    site["hub"].update(
        public_url=f"http://127.0.0.1:{public}",
        api_url=f"http://127.0.0.1:{api}",
        proxy_api_url=f"http://127.0.0.1:{proxy_api}",
        state_dir=str(state_dir),
    )
    site["spawner"]["python_env"] = str(VENV_BIN.parent)
    # Local sign-in (PAM) and no projects: the tests of the spawner itself. The OIDC hub
    # with projects is `oidc_hub`.
    site["auth"]["type"] = "local"
    site["auth"]["local"]["admin_users"] = []
    site["projects"] = []
    site["slurm"]["manage_associations"] = False
    site["slurm"]["orphan_grace"] = 15  # the orphan tests wait for it
    # the crash tests SIGKILL this hub; a culler service would outlive it
    site["idle_culler"] = {"enabled": False}
    site["reports"] = {"enabled": False}  # the OIDC hub runs it (it needs projects)
    site["courses"] = {"enabled": False, "list": []}  # likewise
    for key, value in overrides.items():
        site[key] = value
    path.write_text(yaml.safe_dump(site))
    return path


@dataclass
class RunningHub:
    state_dir: Path
    site_file: Path
    token: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    url: str = f"http://127.0.0.1:{LOCAL_HUB_PORTS[0]}"
    # Run the hub as this (unprivileged) Unix user instead of root: the "rest" access mode.
    run_as: str = ""

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

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

    def start(self, timeout: float = 60, bound: float = 300) -> None:
        """Start the hub; wait until its API answers: ``timeout`` seconds at most without a
        new line in its log, ``bound`` seconds in all."""
        token_file = self.state_dir / "admin-api-token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        identity: dict[str, Any] = {}
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(token_file, entry.pw_uid, entry.pw_gid)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = dict(os.environ)
        env.update(
            FACTORYHUB_SITE_FILE=str(self.site_file),
            FACTORYHUB_ADMIN_TOKEN_FILE=str(token_file),
            FACTORYHUB_PROXY_CMD=proxy_command(),
            PATH=f"{VENV_BIN}:{Path(proxy_command()).parent}:{env.get('PATH', '')}",
        )
        env.update(self.extra_env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", hub_config_path()],
            cwd=self.state_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **identity,
        )
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"hub exited with {proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api_url}/", timeout=2).status_code == 200
            return False

        wait_until(
            answers,
            bound,
            lambda: f"the hub did not answer at {self.api_url}/:\n{self.log_tail()}",
            progress=self.log_size,  # the hub writes its log as it starts
            stall=timeout,
        )

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return -1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> None:
        """Stop the hub process group (hub and the proxy it started). The hub stops its
        services one by one (up to 20 s each) before its proxy: ``timeout`` bounds it all,
        and a hub killed at the bound takes its children (the proxy and the services, in
        sessions of their own) with it."""
        if self.proc is None:
            return
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
            return "(no hub log)"

    # ------------------------------------------------------------- user servers

    def ensure_user(self, name: str) -> None:
        with self.client() as c:
            r = c.get(f"/hub/api/users/{name}")
            if r.status_code == 404:
                r = c.post(f"/hub/api/users/{name}")
                assert r.status_code == 201, r.text

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

    def stop_server(self, name: str, timeout: float = 60, bound: float = 300) -> None:
        """Stop the default server of ``name``; wait until the hub has none: ``timeout``
        seconds at most without a change (the hub's pending state, the job's state in
        Slurm), ``bound`` seconds in all."""
        with self.client() as c, self.watch([], users=(name,)) as watch:
            r = c.delete(f"/hub/api/users/{name}/server")
            assert r.status_code in (202, 204), r.text
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


@pytest.fixture(scope="session")
def hub(slurm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("hub-state")
    state.chmod(0o700)
    site = write_site(state / "factory.yaml", state)
    running = RunningHub(
        state_dir=state,
        site_file=site,
        token=secrets.token_hex(32),
        log_path=REPO / "test-artifacts" / "hub.log",
    )
    running.log_path.parent.mkdir(exist_ok=True)
    running.start()
    yield running
    running.stop()
