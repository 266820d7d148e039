"""Spawn latency: bare ``jupyter lab`` vs stock batchspawner vs factoryhub, on one Slurm.

Run as root on a machine with the local Slurm up::

    /opt/factoryhub/venv/bin/python benchmarks/spawn_latency.py [--runs N] [--json-out PATH]

Variants, measured round-robin (bare, stock, factoryhub, bare, ...) after one unmeasured
warm-up of each, so that drift of the machine affects all of them alike:

- ``bare``: ``jupyter lab`` started directly as a benchmark user (no Slurm, no hub); from
  process start to the first 200 from ``/api/status``.
- ``stock``: stock batchspawner ``SlurmSpawner`` in a hub of its own
  (``benchmarks/stock_batchspawner_config.py``); from the spawn POST to the first 200
  from ``/user/U/api/status`` through the proxy.
- ``factoryhub``: factoryhub's hub and spawner, measured like ``stock``.

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
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


# ------------------------------------------------------------------------ statistics


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """n, median (p50), p95 (inclusive quantiles, n=20), min, max and the samples, in s."""
    if not samples:
        raise ValueError("no samples")
    data = [float(s) for s in samples]
    if len(data) == 1:
        p95 = data[0]
    else:
        p95 = statistics.quantiles(data, n=20, method="inclusive")[18]
    return {
        "n": len(data),
        "p50_s": round(statistics.median(data), 3),
        "p95_s": round(p95, 3),
        "min_s": round(min(data), 3),
        "max_s": round(max(data), 3),
        "samples_s": [round(s, 3) for s in data],
    }


def compare(results: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios of the medians and whether the targets are met (None where a variant is missing)."""
    p50 = {name: r["p50_s"] for name, r in results.items()}
    fh, bare, stock = p50.get("factoryhub"), p50.get("bare"), p50.get("stock")
    fh_over_bare = round(fh / bare, 3) if fh is not None and bare else None
    stock_over_fh = round(stock / fh, 3) if stock is not None and fh else None
    ratios = {
        "factoryhub_p50_over_bare_p50": fh_over_bare,
        "stock_p50_over_factoryhub_p50": stock_over_fh,
    }
    targets = {
        "factoryhub_p50_le_1.2x_bare": None if fh_over_bare is None else fh_over_bare <= 1.2,
        "factoryhub_1.8x_faster_than_stock_p50": (
            None if stock_over_fh is None else stock_over_fh >= 1.8
        ),
    }
    return ratios, targets


# ------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[spawn_latency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_unix_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        log(f"created Unix user {name}")


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


def factoryhub_hub(state_dir: Path, token_file: Path, token: str) -> Hub:
    import yaml

    from factoryhub.hub.site import example_site_path

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


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="measured spawns per variant")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the temp dir (hub logs, databases)"
    )
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        parser.error(f"--variants: unknown or empty: {unknown or names}")
    args.variants = [v for v in VARIANTS if v in names]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[str] = args.variants
    users = [USERS[v] for v in variants]
    for user in users:
        ensure_unix_user(user)
        cancel_jobs(user)
    for user in users:
        wait_no_jobs(user)

    state = Path(tempfile.mkdtemp(prefix="fhbench-"))
    state.chmod(0o700)
    log(f"state and logs in {state}")
    token = secrets.token_hex(32)
    token_file = state / "admin-api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)

    hubs: dict[str, Hub] = {}
    failed = True
    try:
        if "stock" in variants:
            (state / "stock").mkdir(mode=0o700)
            hubs["stock"] = stock_hub(state / "stock", token_file, token)
        if "factoryhub" in variants:
            (state / "factoryhub").mkdir(mode=0o700)
            hubs["factoryhub"] = factoryhub_hub(state / "factoryhub", token_file, token)
        for hub in hubs.values():
            hub.start()
            hub.ensure_user(USERS[hub.name])

        bare_token = secrets.token_hex(16)
        measures: dict[str, Callable[[], float]] = {}
        if "bare" in variants:
            measures["bare"] = lambda: measure_bare(
                USERS["bare"], bare_token, state / "bare-jupyter-lab.log"
            )
        for name, hub in hubs.items():
            opts = {"profile": PROFILE} if name == "factoryhub" else {}
            measures[name] = lambda hub=hub, opts=opts: hub.measure_spawn(USERS[hub.name], opts)

        def stop(name: str) -> None:
            if name in hubs:
                hubs[name].stop_server(USERS[name])

        samples: dict[str, list[float]] = {v: [] for v in variants}
        for i in range(args.runs + 1):
            for name in variants:
                elapsed = measures[name]()
                stop(name)
                label = "warm-up" if i == 0 else f"{i}/{args.runs}"
                log(f"{name:<10} {label:>7}: {elapsed:.3f} s")
                if i > 0:
                    samples[name].append(elapsed)
        failed = False
    finally:
        for name, hub in hubs.items():
            if failed:
                with contextlib.suppress(Exception):
                    hub.stop_server(USERS[name], timeout=20)
            hub.stop()
        for user in users:
            cancel_jobs(user)
        if failed or args.keep_state:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    results = {name: summarize(samples[name]) for name in variants}
    ratios, targets = compare(results)
    return {
        **results,
        "ratios": ratios,
        "targets": targets,
        "metadata": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "nproc": os.cpu_count(),
            "runs": args.runs,
            "warmup_runs": 1,
            "order": "round-robin: " + ", ".join(variants),
            "poll_interval_s": POLL_S,
            "users": {v: USERS[v] for v in variants},
            "factoryhub_profile": PROFILE,
            "versions": versions(),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("spawn_latency: run as root (jobs start as benchmark users)", file=sys.stderr)
        return 2
    if not PROXY_CMD.exists() and any(v != "bare" for v in args.variants):
        print(f"spawn_latency: {PROXY_CMD} is missing (npm ci)", file=sys.stderr)
        return 2
    with sigterm_as_interrupt():
        result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
