"""The chart's rendered objects run by ``podman kube play`` (podman 4.3, Debian 12's).

podman is not a kubelet. What it lacks, and what this module does instead, each on the
rendered objects and nothing else:

- **Services and cluster DNS.** podman has neither. Each pod gets a fixed address on a
  podman network made for the purpose, and every Service's name is written into the
  ``hostAliases`` of every pod, pointing at the address of the pod its selector picks. A
  Service whose port differs from its target port cannot be reached that way; it is named in
  :attr:`Adapted.unreachable` (the chart's proxy-public, port 80, is for the Ingress only).
- **Secrets.** podman 4.3's ``kube play`` keeps a Secret in its own secret store and reads
  it back in two different shapes (containers/podman#16269): for ``secretKeyRef`` variables
  a JSON map of key to base64 value; for Secret volumes a YAML ``data:`` map, read without
  base64 decoding unless a value is tagged ``!!binary``. Every Secret is put in the store in
  the shape its users read (a Secret used both ways cannot be: :class:`KubePlayError`).
  podman 4.3 ignores a Secret volume's ``items``, ``defaultMode`` and the pod's ``fsGroup``:
  each key becomes a file of that name, mode 0644, owned by root.
- **Container ports.** podman 4.3 publishes every ``containerPort`` on all of the host's
  interfaces (a kubelet publishes none). They are taken out; probes that name a port get
  its number. The pods are reached at their own addresses instead.
- **Init containers.** podman 4.3 removes a finished init container at once and, when it
  ends within moments, fails with "cannot remove container ... as it is running". They are
  kept instead (podman's ``io.podman.annotations.init.container.type: always``, which it
  reads from the Deployment's own annotations; they run once per pod start either way).
- **Kinds.** ``kube play`` takes Deployments, ConfigMaps and PersistentVolumeClaims here;
  the other kinds (ServiceAccount, Service, NetworkPolicy, Ingress) have nothing to run and
  are left out, by name in :attr:`Adapted.left_out`.

Only the objects change; the chart is rendered by ``helm template`` as for a cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PLAYED_KINDS = ("ConfigMap", "PersistentVolumeClaim", "Deployment")
INIT_TYPE = "io.podman.annotations.init.container.type"


class KubePlayError(RuntimeError):
    """The objects cannot be played, or podman refused them (its own words included)."""


@dataclass
class Adapted:
    """What podman runs: one file's objects per Deployment, the secret store's entries."""

    deployments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> the stored text
    left_out: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    def pod_name(self, deployment: str) -> str:
        """The pod ``kube play`` makes of the Deployment (one replica)."""
        return f"{deployment}-pod-0"


def pod_spec(deployment: Mapping[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def secret_uses(deployments: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """The Secrets read through ``secretKeyRef`` and those mounted as volumes."""
    by_env: set[str] = set()
    by_volume: set[str] = set()
    for deployment in deployments:
        spec = pod_spec(deployment)
        for container in containers(spec):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    by_env.add(ref["name"])
        by_volume |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    return by_env, by_volume


def stored_secret(name: str, data: Mapping[str, str], by_env: bool) -> str:
    """The text podman 4.3 reads back for Secret ``name`` (``data``: key -> base64)."""
    if by_env:
        return json.dumps(dict(data), sort_keys=True)
    empty = '""'
    lines = [f"  {key}: !!binary {value or empty}" for key, value in sorted(data.items())]
    head = f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {json.dumps(name)}\n"
    return head + ("data:\n" + "\n".join(lines) + "\n" if lines else "data: {}\n")


def _without_ports(spec: dict[str, Any]) -> None:
    for container in containers(spec):
        numbers = {p["name"]: p["containerPort"] for p in container.pop("ports", []) if "name" in p}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get(
                "tcpSocket"
            )
            if action and isinstance(action.get("port"), str):
                action["port"] = numbers[action["port"]]


def _service_aliases(
    services: list[dict[str, Any]], deployments: list[dict[str, Any]], ips: Mapping[str, str]
) -> tuple[dict[str, list[str]], list[str]]:
    """IP -> the Service names that reach it; the Services that cannot be reached so."""
    aliases: dict[str, list[str]] = {}
    unreachable: list[str] = []
    for service in services:
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector", {})
        target = next(
            (
                d
                for d in deployments
                if selector
                and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ),
            None,
        )
        if target is None:
            unreachable.append(f"{name} (selects no Deployment)")
            continue
        ports = [p for c in pod_spec(target)["containers"] for p in c.get("ports", [])]
        numbers = {p.get("name"): p["containerPort"] for p in ports}
        differ = [
            p["port"]
            for p in service["spec"].get("ports", [])
            if numbers.get(p.get("targetPort"), p.get("targetPort", p["port"])) != p["port"]
        ]
        if differ:
            unreachable.append(f"{name} (port {differ[0]} is not the pod's)")
            continue
        aliases.setdefault(ips[target["metadata"]["name"]], []).append(name)
    return aliases, unreachable


def adapt(
    objects: Iterable[Mapping[str, Any]],
    ips: Mapping[str, str],
    extra_secrets: Mapping[str, Mapping[str, bytes]] | None = None,
) -> Adapted:
    """The rendered ``objects`` as podman 4.3 plays them; ``ips``: Deployment -> address.
    ``extra_secrets`` are Secrets the chart names but does not make (``existingSecret``)."""
    docs = [copy.deepcopy(dict(o)) for o in objects if o]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    missing = sorted({d["metadata"]["name"] for d in deployments} - set(ips))
    if missing:
        raise KubePlayError(f"no address given for the Deployment(s) {', '.join(missing)}")
    services = [d for d in docs if d["kind"] == "Service"]
    aliases, unreachable = _service_aliases(services, deployments, ips)
    by_env, by_volume = secret_uses(deployments)
    adapted = Adapted(unreachable=unreachable)
    secrets = {
        d["metadata"]["name"]: dict(d.get("data") or {}) for d in docs if d["kind"] == "Secret"
    }
    for name, values in (extra_secrets or {}).items():
        secrets[name] = {k: base64.b64encode(v).decode() for k, v in values.items()}
    for name, data in secrets.items():
        if name in by_env and name in by_volume:
            raise KubePlayError(
                f"Secret {name} is read both as variables and as a volume: podman 4.3 keeps "
                "only one shape of a Secret"
            )
        adapted.secrets[name] = stored_secret(name, data, by_env=name in by_env)
    absent = sorted((by_env | by_volume) - set(secrets))
    if absent:
        raise KubePlayError(f"the pods use Secret(s) nobody gave: {', '.join(absent)}")
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    adapted.claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    adapted.left_out = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if d["kind"] not in PLAYED_KINDS and d["kind"] != "Secret"
    ]
    host_aliases = [{"ip": ip, "hostnames": names} for ip, names in sorted(aliases.items())]
    for deployment in deployments:
        spec = pod_spec(deployment)
        _without_ports(spec)
        if spec.get("initContainers"):
            annotations = deployment["metadata"].setdefault("annotations", {})
            annotations[INIT_TYPE] = "always"
        spec["hostAliases"] = [*spec.get("hostAliases", []), *host_aliases]
        adapted.deployments[deployment["metadata"]["name"]] = [*config_maps, deployment]
    return adapted


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise KubePlayError(f"podman {' '.join(args[:3])} failed: {' '.join(said)}")
    return done


def ensure_network(name: str, subnet: str, gateway: str) -> None:
    """The podman network ``name`` with ``subnet``; one of that name with another subnet is
    made again."""
    found = podman("network", "inspect", name, check=False)
    if found.returncode == 0:
        subnets = {
            s.get("subnet") for n in json.loads(found.stdout) for s in n.get("subnets") or []
        }
        if subnets == {subnet}:
            return
        podman("network", "rm", "-f", name)
    podman("network", "create", "--subnet", subnet, "--gateway", gateway, name)


def store_secrets(secrets: Mapping[str, str], folder: Path) -> None:
    """Put the secrets in podman's store (replacing those of the same names). The texts
    pass through ``folder`` (0700) and are removed from it at once."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name, text in secrets.items():
        podman("secret", "rm", name, check=False)
        path = folder / f"{name}.secret"
        path.touch(mode=0o600)
        try:
            path.write_text(text)
            podman("secret", "create", name, str(path))
        finally:
            path.unlink(missing_ok=True)


def play(adapted: Adapted, folder: Path, network: str, ips: Mapping[str, str]) -> list[str]:
    """Play each Deployment (its ConfigMaps with it) at its address; the pods' names."""
    pods = []
    for claim in adapted.claims:
        path = folder / f"claim-{claim['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(claim))
        podman("kube", "play", str(path))
    for name, objects in adapted.deployments.items():
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        podman("kube", "play", "--replace", "--network", network, "--ip", ips[name], str(path))
        pods.append(adapted.pod_name(name))
    return pods


def down(folder: Path, secrets: Iterable[str]) -> list[str]:
    """Remove the played pods (with their emptyDir volumes) and the secrets; what went."""
    gone = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name.startswith("claim-"):
            continue
        if podman("kube", "down", str(path), check=False).returncode == 0:
            gone.append(path.stem)
    for name in secrets:
        if podman("secret", "rm", name, check=False).returncode == 0:
            gone.append(f"secret {name}")
    return gone


def built_image(name: str) -> str:
    """The image ``images/NAME`` of this checkout (with the base it starts from), built or
    reused by images/build.py; its hash-tagged reference."""
    import sys

    from factoryhub.local.idp import find_repo

    done = subprocess.run(
        [sys.executable, str(find_repo() / "images" / "build.py"), "base", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise KubePlayError(f"images/build.py {name} failed:\n{done.stderr[-2000:]}")
    return done.stdout.split()[-1]


def container_of(pod: str, container: str) -> str:
    """The podman name of ``container`` in ``pod``."""
    return f"{pod}-{container}"
