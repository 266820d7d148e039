"""The Helm chart's hub and proxy pods on this machine, with ``podman kube play``, against the
local factory: its Slurm through a slurmrestd, its identity provider, this host as the
compute node. ``factoryhub-local kube-up`` / ``kube-down``, and tests/integration/test_kube_pods.py.

Everything the pods reach is on a podman network made for the purpose (:class:`Tryout`):
the host is its gateway (``.1``) and runs there a second slurmrestd and a second identity
provider, for this network alone; the hub pod is ``.10``, the proxy pod ``.11``. People open
``http://<.11>:8000``. The local factory's own hub, slurmrestd and provider on 127.0.0.1 are
left as they are. The chart is rendered with ``helm template`` from values made here (site
file: the example's projects and profiles in the "rest" access mode) and run by
:mod:`factoryhub.local.kube_podman`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from factoryhub.local import idp, kube_podman, pids, slurmrestd
from factoryhub.local.slurm_layout import nodename

FULLNAME = "fh-factoryhub"
RELEASE = "fh"
OPERATOR_SECRET = f"{FULLNAME}-operator"
DEMO_PASSWORD = "factory-demo"  # noqa: S105 - the demo provider's documented local password


@dataclass(frozen=True)
class Tryout:
    """Where the try-out runs. Tests give their own network, ports and state folder."""

    network: str = "factoryhub-kube"
    subnet: str = "10.89.77.0/24"
    state_dir: Path = pids.STATE_ROOT / "kube"
    idp_port: int = 9100
    restd_port: int = 6821
    users_file: Path | None = None  # the provider's users; None: the demo users
    site: Mapping[str, Any] = field(default_factory=dict)  # merged over the try-out's site
    values: Mapping[str, Any] = field(default_factory=dict)  # merged over its chart values

    def address(self, host: int) -> str:
        return str(ipaddress.ip_network(self.subnet)[host])

    @property
    def gateway(self) -> str:
        return self.address(1)

    @property
    def ips(self) -> dict[str, str]:
        return {f"{FULLNAME}-hub": self.address(10), f"{FULLNAME}-proxy": self.address(11)}

    @property
    def public_url(self) -> str:
        return f"http://{self.address(11)}:8000"

    @property
    def issuer(self) -> str:
        return f"http://{self.gateway}:{self.idp_port}"

    @property
    def restd_url(self) -> str:
        return f"http://{self.gateway}:{self.restd_port}"

    @property
    def files(self) -> Path:
        return self.state_dir / "objects"


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top: maps merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = (
            merged(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
        )
    return out


def tryout_site(tryout: Tryout) -> dict[str, Any]:
    """The site file: the example's projects, profiles and reports, in the "rest" mode."""
    from factoryhub.hub.site.loader import example_site_path

    site = yaml.safe_load(example_site_path().read_text())
    for key in ("public_url", "state_dir"):
        site["hub"].pop(key, None)
    site["hub"].update(
        public_url=tryout.public_url, connect_url=f"http://{tryout.address(10)}:8081"
    )
    oidc = site["auth"]["oidc"]
    oidc.pop("client_secret_file", None)
    oidc.update(issuer=tryout.issuer, client_id="factoryhub-kube")
    site["auth"] = {"type": "oidc", "oidc": oidc, "unix_users": {"create": False}}
    site["slurm"].update(access="rest", manage_associations=False, rest={"url": tryout.restd_url})
    # The compute node is this host; its servers listen on its address on the network.
    site["spawner"]["node_addresses"] = [{"node": nodename(), "address": tryout.gateway}]
    # Not tried in pods yet: the example's course (collecting notebooks is refused in the
    # rest mode, the Courses service says why).
    site["courses"] = {"enabled": False}
    return merged(site, tryout.site)


def chart_values(tryout: Tryout, image: str, client_secret: str, key: bytes) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        # a try-out: the hub's state in an emptyDir; podman enforces no NetworkPolicy
        "persistence": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "hub": {"operatorToken": {"existingSecret": OPERATOR_SECRET}},
        "oidc": {"clientSecret": {"value": client_secret}},
        "slurm": {"jwtKey": {"valueBase64": base64.b64encode(key).decode()}},
        "site": tryout_site(tryout),
    }
    return merged(values, tryout.values)


def _kept_secret(path: Path, make: Any) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = make()
        pids.write_private(path, value + "\n")
        return value


def render(values: Mapping[str, Any], folder: Path, helm: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` (written 0600: they hold secrets)."""
    from factoryhub.local.idp import find_repo

    values_file = folder / "values.yaml"
    pids.write_private(values_file, yaml.safe_dump(dict(values)))
    chart = find_repo() / "helm" / "factoryhub"
    done = subprocess.run(
        [helm, "template", RELEASE, str(chart), "-f", str(values_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise kube_podman.KubePlayError(f"helm template failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _restd_up(tryout: Tryout) -> int:
    pidfile = tryout.state_dir / "slurmrestd.pid"
    pid = pids.read_pidfile(pidfile)
    if pids.alive(pid, comm="slurmrestd") and slurmrestd.answers(tryout.restd_url):
        assert pid is not None
        return pid
    pid = slurmrestd.start(
        tryout.state_dir / "slurmrestd.log", pidfile, f"{tryout.gateway}:{tryout.restd_port}"
    )
    deadline = time.monotonic() + 30
    while not slurmrestd.answers(tryout.restd_url):
        if time.monotonic() > deadline or not pids.alive(pid):
            log = pids.tail(tryout.state_dir / "slurmrestd.log")
            raise kube_podman.KubePlayError(
                f"slurmrestd on {tryout.restd_url} did not answer:\n{log}"
            )
        time.sleep(0.2)
    return pid


def _idp_up(tryout: Tryout, client_secret: str) -> int:
    client = {
        "client_id": "factoryhub-kube",
        "client_secret": client_secret,
        "redirect_uris": [f"{tryout.public_url}/hub/oauth_callback"],
    }
    return idp.up(
        port=tryout.idp_port,
        state_dir=tryout.state_dir / "idp",
        users_file=tryout.users_file,
        clients=[client],
        issuer=tryout.issuer,
        host=tryout.gateway,
    )


@dataclass
class Running:
    tryout: Tryout
    pods: list[str]
    operator_token: str
    left_out: list[str]
    unreachable: list[str]

    def hub_log(self, lines: int = 60) -> str:
        done = kube_podman.podman(
            "logs", "--tail", str(lines), kube_podman.container_of(self.pods[0], "hub"), check=False
        )
        return done.stdout + done.stderr


def wait_hub(tryout: Tryout, timeout: float = 180) -> None:
    """Until the hub answers through the proxy pod."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{tryout.public_url}/hub/health", timeout=3)
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}"
        except httpx.HTTPError as e:
            last = str(e) or type(e).__name__
        time.sleep(0.5)
    raise kube_podman.KubePlayError(f"the hub did not answer at {tryout.public_url} ({last})")


def up(tryout: Tryout, image: str, helm: str) -> Running:
    """The network and the chart's pods, then slurmrestd and the provider on its gateway."""
    pids.private_dir(tryout.state_dir)
    pids.private_dir(tryout.files)
    kube_podman.ensure_network(tryout.network, tryout.subnet, tryout.gateway)
    client_secret = _kept_secret(
        tryout.state_dir / "client-secret", lambda: secrets.token_urlsafe(32)
    )
    operator = _kept_secret(tryout.state_dir / "operator-token", lambda: secrets.token_hex(32))
    objects = render(
        chart_values(tryout, image, client_secret, slurmrestd.KEY.read_bytes()),
        tryout.state_dir,
        helm,
    )
    adapted = kube_podman.adapt(
        objects, tryout.ips, {OPERATOR_SECRET: {"token": operator.encode()}}
    )
    kube_podman.store_secrets(adapted.secrets, tryout.state_dir / "secrets")
    pids.write_private(tryout.state_dir / "secrets.json", json.dumps(sorted(adapted.secrets)))
    pods = kube_podman.play(adapted, tryout.files, tryout.network, tryout.ips)
    # The gateway's address exists once a pod is on the network (CNI makes the bridge then).
    _restd_up(tryout)
    _idp_up(tryout, client_secret)
    wait_hub(tryout)
    return Running(tryout, pods, operator, adapted.left_out, adapted.unreachable)


def down(tryout: Tryout) -> list[str]:
    """Stop what :func:`up` started; what was stopped."""
    try:
        names = json.loads((tryout.state_dir / "secrets.json").read_text())
    except (OSError, ValueError):
        names = []
    gone = kube_podman.down(tryout.files, names) if tryout.files.is_dir() else []
    if idp.down(tryout.state_dir / "idp"):
        gone.append("idp")
    pid = pids.read_pidfile(tryout.state_dir / "slurmrestd.pid")
    if pids.alive(pid, comm="slurmrestd"):
        assert pid is not None
        pids.terminate(pid)
        gone.append("slurmrestd")
    if kube_podman.podman("network", "rm", "-f", tryout.network, check=False).returncode == 0:
        gone.append(f"network {tryout.network}")
    return gone


def hub_image() -> str:
    """The hub image of this checkout, built or reused by images/build.py."""
    return kube_podman.built_image("hub")


def demo_people(site_projects: Mapping[str, str]) -> list[str]:
    """The demo provider's people as a site's own tooling would make them for the rest mode:
    a Unix account with a home on this host (the compute node) and a Slurm association in
    the account of each project of theirs (``site_projects``: IdP group -> Slurm account).
    Someone in no project gets neither, and sign-in tells them what to ask for."""
    from factoryhub.local import slurm
    from factoryhub.local.site_setup import DEMO_IDP_USERS
    from factoryhub.spawners.slurm.accounts import ensure_user_in_account

    made = []
    for name, _role, groups in DEMO_IDP_USERS:
        accounts = sorted(
            {site_projects[g.strip()] for g in groups.split(",") if g.strip() in site_projects}
        )
        if not accounts:
            continue
        slurm.create_unix_user(name)
        for account in accounts:
            ensure_user_in_account(name, account)
        made.append(f"{name} ({', '.join(accounts)})")
    return made


def summary(running: Running) -> str:
    tryout = running.tryout
    return f"""
  The chart's pods are up:  {tryout.public_url}   (the proxy pod; the hub's: {tryout.address(10)})
  Sign in (IdP):            sofia, ravi, tara, stan or ada, password {DEMO_PASSWORD}
                            (the provider on {tryout.issuer}, for this network only)
  Slurm:                    through slurmrestd on {tryout.restd_url}; servers run on this host
  Operator API token:       {tryout.state_dir / "operator-token"}
  Hub log:                  podman logs -f {kube_podman.container_of(running.pods[0], "hub")}
  Objects played:           {tryout.files} (podman 4.3's changes: factoryhub.local.kube_podman)
  Left out (nothing to run): {", ".join(running.left_out)}
  Stop:                     make kube-down
"""
