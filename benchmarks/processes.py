"""Processes the spawn-latency benchmark starts and stops: users, Slurm jobs, hubs, bare servers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("FHBENCH_VENV", "/opt/factoryhub/venv"))
VENV_BIN = VENV / "bin"
PROXY_CMD = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
STOCK_CONFIG = Path(__file__).resolve().parent / "stock_batchspawner_config.py"

VARIANTS = ("bare", "stock", "factoryhub")
USERS = {"bare": "fhbench1", "stock": "fhbench2", "factoryhub": "fhbench3"}
# Loopback ports, away from the integration tests' 18000/18001/18081.
BARE_PORT = 28200
STOCK_PORTS = {"public": 28100, "api": 28181, "proxy_api": 28101}
FACTORYHUB_PORTS = {"public": 28000, "api": 28081, "proxy_api": 28001}
PROFILE = "cpu-small"
POLL_S = 0.05
SPAWN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 90.0


# ------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[spawn_latency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_unix_user(name: str) -> None:
    """A benchmark user who may submit jobs (Slurm enforces associations here)."""
    from factoryhub.local.accounting import ensure_default_association

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        log(f"created Unix user {name}")
    ensure_default_association(name)


def slurm_jobs(user: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--user={user}", "--format=%i %T %j"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def wait_no_jobs(user: str, timeout: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm_jobs(user):
            return
        time.sleep(0.2)
    raise RuntimeError(f"Slurm jobs of {user} still there after {timeout} s: {slurm_jobs(user)}")


def cancel_jobs(user: str) -> None:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(["scancel", f"--user={user}"], capture_output=True, timeout=30)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (a session leader), SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children that outlived the leader keep the group id: take them down too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def is_server_status(response: Any) -> bool:
    """A 200 from jupyter_server's ``/api/status`` (not some page of the hub)."""
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "started" in body


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("jupyterhub", "batchspawner", "jupyterlab", "jupyter_server", "factoryhub"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    try:
        found["slurm"] = subprocess.run(
            ["sbatch", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        found["slurm"] = None
    found["python"] = sys.version.split()[0]
    return found


# ------------------------------------------------------------------------- bare


def measure_bare(user: str, token: str, log_path: Path, timeout: float = SPAWN_TIMEOUT_S) -> float:
    """Start ``jupyter lab`` as ``user``; seconds until ``/api/status`` answers 200."""
    import httpx

    if not port_free(BARE_PORT):
        raise RuntimeError(f"port {BARE_PORT} is taken: is a jupyter lab of an earlier run left?")
    home = pwd.getpwnam(user).pw_dir
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }
    argv = [
        shutil.which("runuser") or "/usr/sbin/runuser",
        "-u",
        user,
        "--",
        str(VENV_BIN / "jupyter"),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={BARE_PORT}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
    ]
    url = f"http://127.0.0.1:{BARE_PORT}/api/status"
    with (
        log_path.open("ab") as out,
        httpx.Client(headers={"Authorization": f"token {token}"}, timeout=5) as client,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if is_server_status(client.get(url)):
                        return time.perf_counter() - start
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited with {proc.returncode}: see {log_path}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"jupyter lab did not answer in {timeout} s: see {log_path}")
                time.sleep(POLL_S)
        finally:
            kill_group(proc)


# ------------------------------------------------------------------------- hubs


@dataclass
class Hub:
    """A JupyterHub (and the proxy it starts) on its own loopback ports, as root."""

    name: str
    config_file: Path
    state_dir: Path
    ports: dict[str, int]
    token: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['public']}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "hub.log"

    def client(self, timeout: float = 30) -> Any:
        import httpx

        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"token {self.token}"},
            timeout=timeout,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no hub log)"

    def start(self, timeout: float = 90) -> None:
        import httpx

        for port in self.ports.values():
            if not port_free(port):
                raise RuntimeError(f"{self.name} hub: port {port} is taken")
        env = dict(os.environ)
        env.update(self.env)
        env["PATH"] = f"{VENV_BIN}:{PROXY_CMD.parent}:{env.get('PATH', '/usr/bin:/bin')}"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(self.config_file)],
                cwd=self.state_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} hub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    log(f"{self.name} hub up at {self.url}")
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} hub did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub's process group, then its proxy (which runs in a session of its own)."""
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None
        pid_file = self.state_dir / "proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"configurable-http-proxy" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)

    def ensure_user(self, user: str) -> None:
        with self.client() as c:
            if c.get(f"/hub/api/users/{user}").status_code == 404:
                r = c.post(f"/hub/api/users/{user}")
                if r.status_code != 201:
                    raise RuntimeError(
                        f"{self.name}: cannot create {user}: {r.status_code} {r.text}"
                    )

    def measure_spawn(
        self, user: str, options: dict[str, Any], timeout: float = SPAWN_TIMEOUT_S
    ) -> float:
        """Seconds from the spawn POST to the first 200 of /user/U/api/status via the proxy."""
        import httpx

        status_path = f"/user/{user}/api/status"
        with self.client(timeout=10) as c:
            start = time.perf_counter()
            r = c.post(f"/hub/api/users/{user}/server", json=options)
            if r.status_code not in (201, 202):
                raise RuntimeError(f"{self.name}: spawn of {user}: {r.status_code} {r.text}")
            next_check = start + 1.0
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if is_server_status(c.get(status_path)):
                        return time.perf_counter() - start
                now = time.perf_counter()
                if now > next_check:  # a failed spawn must not be waited on to the timeout
                    next_check = now + 1.0
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        model = c.get(f"/hub/api/users/{user}").json()
                        if not model.get("servers") and not model.get("pending"):
                            raise RuntimeError(
                                f"{self.name}: server of {user} is gone:\n{self.log_tail()}"
                            )
                if now - start > timeout:
                    raise RuntimeError(
                        f"{self.name}: {user} not reachable in {timeout} s:\n{self.log_tail()}"
                    )
                time.sleep(POLL_S)

    def stop_server(self, user: str, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the user's server; wait until the hub forgets it and its Slurm job is gone."""
        with self.client() as c:
            r = c.delete(f"/hub/api/users/{user}/server")
            if r.status_code not in (202, 204, 400):  # 400: no server running
                raise RuntimeError(f"{self.name}: stop of {user}: {r.status_code} {r.text}")
            deadline = time.monotonic() + timeout
            while True:
                model = c.get(f"/hub/api/users/{user}").json()
                if not model.get("servers") and not model.get("pending"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: {user} did not stop:\n{self.log_tail()}")
                time.sleep(0.2)
        wait_no_jobs(user, timeout)


def factoryhub_hub(
    state_dir: Path,
    token_file: Path,
    token: str,
    change_site: Any = None,
) -> Hub:
    """factoryhub's hub with local sign-in; ``change_site(site_dict)`` may change the site
    file before it is written."""
    import yaml

    from factoryhub.hub.site.loader import example_site_path

    spec = importlib.util.find_spec("factoryhub.hub.jupyterhub_config")
    if spec is None or spec.origin is None:
        raise RuntimeError("factoryhub is not installed in this environment")
    site = yaml.safe_load(example_site_path().read_text())
    site["hub"].update(
        public_url=f"http://127.0.0.1:{FACTORYHUB_PORTS['public']}",
        api_url=f"http://127.0.0.1:{FACTORYHUB_PORTS['api']}",
        proxy_api_url=f"http://127.0.0.1:{FACTORYHUB_PORTS['proxy_api']}",
        state_dir=str(state_dir),
    )
    site["spawner"]["python_env"] = str(VENV)
    site["auth"]["local"]["admin_users"] = []
    # Spawned through the API for benchmark users who are in no project: local sign-in,
    # no projects, so the spawns are measured, not refused.
    site["auth"]["type"] = "local"
    site["projects"] = []
    site["slurm"]["manage_associations"] = False
    site["idle_culler"] = {"enabled": False}
    site["reports"] = {"enabled": False}
    site["courses"] = {"enabled": False, "list": []}  # courses name projects
    if change_site is not None:
        change_site(site)
    site_file = state_dir / "factory.yaml"
    site_file.write_text(yaml.safe_dump(site))
    return Hub(
        name="factoryhub",
        config_file=Path(spec.origin),
        state_dir=state_dir,
        ports=FACTORYHUB_PORTS,
        token=token,
        env={
            "FACTORYHUB_SITE_FILE": str(site_file),
            "FACTORYHUB_ADMIN_TOKEN_FILE": str(token_file),
            "FACTORYHUB_PROXY_CMD": str(PROXY_CMD),
        },
    )


def stock_hub(state_dir: Path, token_file: Path, token: str) -> Hub:
    return Hub(
        name="stock",
        config_file=STOCK_CONFIG,
        state_dir=state_dir,
        ports=STOCK_PORTS,
        token=token,
        env={
            "FHBENCH_STATE_DIR": str(state_dir),
            "FHBENCH_PUBLIC_PORT": str(STOCK_PORTS["public"]),
            "FHBENCH_API_PORT": str(STOCK_PORTS["api"]),
            "FHBENCH_PROXY_API_PORT": str(STOCK_PORTS["proxy_api"]),
            "FHBENCH_ADMIN_TOKEN_FILE": str(token_file),
            "FHBENCH_VENV": str(VENV),
            "FHBENCH_PROXY_CMD": str(PROXY_CMD),
        },
    )


# ------------------------------------------------------------------------- driver
