"""The chart tests' helpers: the pinned helm binary, rendering, the rendered objects.

No Slurm, no IdP, no cluster: helm renders the chart offline and kubernetes-validate checks
the objects against Kubernetes' schemas. Nothing here is ever deployed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "factoryhub"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
INSTALL_HELM = REPO / "local" / "install_helm.sh"
RELEASE = "fh"
NAMESPACE = "factory"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest that
# kubernetes-validate 1.37.0 carries schemas for (it has 1.25 to 1.37).
KUBE_VERSIONS = ("1.25.0", "1.37.0")
HELM_MISSING = (
    "helm is not installed: run `bash local/install.sh --test` (it installs the pinned helm "
    "into the virtualenv with local/install_helm.sh)"
)


def pinned_helm_version() -> str:
    m = re.search(r"^HELM_VERSION=(\S+)$", INSTALL_HELM.read_text(), re.MULTILINE)
    assert m, f"no HELM_VERSION= in {INSTALL_HELM}"
    return m.group(1)


def helm_path() -> str | None:
    """$FACTORYHUB_HELM when set; else the helm of the virtualenv the tests run in (where
    install_helm.sh puts it), else the one on PATH; None when there is none."""
    chosen = os.environ.get("FACTORYHUB_HELM")
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    venv = os.environ.get("FACTORYHUB_VENV")
    for candidate in (
        Path(venv) / "bin" / "helm" if venv else None,
        Path(sys.prefix) / "bin" / "helm",
    ):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("helm")


def require_helm() -> str:
    """The helm binary; a missing helm fails the test (never a silent skip)."""
    path = helm_path()
    if path is None:
        pytest.fail(HELM_MISSING, pytrace=False)
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return require_helm()


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _args(
    values: Iterable[Path] = (), sets: Mapping[str, str] | None = None, kube: str | None = None
) -> list[str]:
    args: list[str] = []
    for v in values:
        args += ["-f", str(v)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    if kube:
        args += ["--kube-version", kube]
    return args


@functools.cache
def run_helm(helm: str, args: tuple[str, ...]) -> Result:
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=60, env=_helm_env(), check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _helm_env() -> dict[str, str]:
    # helm writes its caches and config under HOME/XDG dirs: keep them out of the user's.
    env = dict(os.environ)
    base = Path(os.environ.get("TMPDIR", "/tmp")) / "factoryhub-chart-tests-helm"
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config")):
        env[var] = str(base / sub)
    env["HELM_DATA_HOME"] = str(base / "data")
    return env


def lint(
    helm: str,
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    kube: str | None = None,
) -> Result:
    return run_helm(helm, ("lint", "--strict", str(CHART), *_args(values, sets, kube)))


def template(
    helm: str,
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    kube: str | None = None,
) -> Result:
    return run_helm(
        helm,
        (
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *_args(values, sets, kube),
        ),
    )


class Rendered:
    """The objects `helm template` rendered, looked up by kind and name."""

    def __init__(self, text: str) -> None:
        self.text = text
        # libyaml's parser (the same safe constructors): a rendered chart is thousands of lines,
        # and the pure-Python parser took a third of the chart tests' time
        docs = yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.docs: list[dict[str, Any]] = [d for d in docs if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered; have {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [f"{d['kind']}/{d['metadata']['name']}" for d in self.docs]

    def pods(self) -> list[tuple[str, dict[str, Any]]]:
        """(deployment name, pod spec) of every Deployment."""
        return [
            (d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in self.of_kind("Deployment")
        ]

    def site_text(self, fullname: str) -> str:
        return self.get("ConfigMap", f"{fullname}-site")["data"]["factory.yaml"]


def render(
    helm: str,
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    kube: str | None = None,
) -> Rendered:
    result = template(helm, tuple(values), sets, kube)
    assert result.returncode == 0, result.output
    return Rendered(result.stdout)


def container(pod: Mapping[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    group = pod.get("initContainers", []) if init else pod["containers"]
    found = [c for c in group if c["name"] == name]
    assert len(found) == 1, f"container {name}: {[c['name'] for c in group]}"
    return found[0]


def env_of(c: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def volume(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in pod["volumes"] if v["name"] == name]
    assert len(found) == 1, f"volume {name}: {[v['name'] for v in pod['volumes']]}"
    return found[0]


def mount(c: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in c.get("volumeMounts", []) if m["name"] == name]
    assert len(found) == 1, f"mount {name}: {c.get('volumeMounts')}"
    return found[0]
