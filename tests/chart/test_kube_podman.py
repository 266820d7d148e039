"""The chart's rendered objects as podman 4.3 plays them (factoryhub.local.kube_podman): what
changes for podman and what must not. The pods themselves run in
tests/integration/test_kube_pods.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from factoryhub.local import kube_podman, kube_tryout
from factoryhub.local.kube_podman import KubePlayError, adapt, stored_secret

from .helm_tools import ALL_OPTIONS, Rendered, render, template

TRYOUT = kube_tryout.Tryout(subnet="10.89.79.0/24")
IPS = TRYOUT.ips
OPERATOR = {kube_tryout.OPERATOR_SECRET: {"token": b"t0ken"}}


def _tryout(helm: str, tmp_path: Path) -> Rendered:
    """The chart as the try-out (and tests/integration/test_kube_pods.py) renders it."""
    values = kube_tryout.chart_values(TRYOUT, "localhost/factoryhub-hub:abc", "s3cret", b"\x00k")
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(helm, [path])


def test_the_chart_adapts_for_podman(helm: str, tmp_path: Path) -> None:
    rendered = _tryout(helm, tmp_path)
    adapted = adapt(rendered.docs, IPS, OPERATOR)
    assert sorted(adapted.deployments) == sorted(IPS)
    for name, objects in adapted.deployments.items():
        kinds = [o["kind"] for o in objects]
        assert kinds[-1] == "Deployment" and set(kinds[:-1]) == {"ConfigMap"}, kinds
        spec = objects[-1]["spec"]["template"]["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            assert "ports" not in c, f"{name}/{c['name']} would be published on the host"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    assert isinstance(c[probe]["httpGet"]["port"], int), (name, probe)
        # every Service the hub or proxy reach by name points at its pod's address
        aliases = {n: a["ip"] for a in spec["hostAliases"] for n in a["hostnames"]}
        assert aliases["fh-factoryhub-hub"] == IPS["fh-factoryhub-hub"]
        assert aliases["fh-factoryhub-proxy-api"] == IPS["fh-factoryhub-proxy"]
    # the public Service maps port 80 to 8000: no name in /etc/hosts can do that
    assert adapted.unreachable == ["fh-factoryhub-proxy-public (port 80 is not the pod's)"]
    assert "Service/fh-factoryhub-hub" in adapted.left_out
    assert not any(x.startswith(("Deployment/", "ConfigMap/")) for x in adapted.left_out)
    # the hub's init container is kept, not removed by podman the moment it ends
    hub = adapted.deployments["fh-factoryhub-hub"][-1]
    assert hub["metadata"]["annotations"][kube_podman.INIT_TYPE] == "always"
    # the rendered objects themselves are not changed
    assert (
        "ports"
        in rendered.get("Deployment", "fh-factoryhub-hub")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )


def test_secrets_are_stored_in_the_shape_podman_reads(helm: str, tmp_path: Path) -> None:
    rendered = _tryout(helm, tmp_path)
    adapted = adapt(rendered.docs, IPS, OPERATOR)
    made = {d["metadata"]["name"]: d["data"] for d in rendered.of_kind("Secret")}
    # read as variables: a JSON map of key to base64 value
    proxy = json.loads(adapted.secrets["fh-factoryhub-proxy-token"])
    assert proxy == made["fh-factoryhub-proxy-token"]
    # mounted: YAML whose values podman decodes only when tagged !!binary
    jwt = yaml.safe_load(adapted.secrets["fh-factoryhub-slurm-jwt"])
    (key,) = made["fh-factoryhub-slurm-jwt"]
    assert jwt["data"][key] == base64.b64decode(made["fh-factoryhub-slurm-jwt"][key])
    assert jwt["data"][key] == b"\x00k"
    operator = yaml.safe_load(adapted.secrets[kube_tryout.OPERATOR_SECRET])
    assert operator["data"] == {"token": b"t0ken"}
    assert set(adapted.secrets) == {*made, kube_tryout.OPERATOR_SECRET}


def test_secrets_the_chart_does_not_make_must_be_given(helm: str) -> None:
    """With every Secret an existing one (the all-options values), each must be given."""
    rendered = render(helm, [ALL_OPTIONS])
    ips = {"fh-hub": "10.0.0.2", "fh-proxy": "10.0.0.3"}
    with pytest.raises(KubePlayError, match=r"nobody gave: .*slurm-jwt-key"):
        adapt(rendered.docs, ips)
    given = {name: {"k": b"v"} for name in ("factoryhub-operator", "factoryhub-proxy-token",
             "factoryhub-db", "factoryhub-oidc", "slurm-jwt-key", "factoryhub-cookie")}  # fmt: skip
    assert set(adapt(rendered.docs, ips, given).secrets) <= set(given)


def test_stored_secret_keeps_binary_bytes() -> None:
    raw = bytes(range(256))
    data = {"k": base64.b64encode(raw).decode(), "empty": ""}
    text = stored_secret("s", data, by_env=False)
    assert yaml.safe_load(text)["data"] == {"k": raw, "empty": b""}
    assert json.loads(stored_secret("s", data, by_env=True)) == data


def _deployment(env_secret: str = "", volume_secret: str = "") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "i"}
    if env_secret:
        ref = {"secretKeyRef": {"name": env_secret, "key": "k"}}
        container["env"] = [{"name": "X", "valueFrom": ref}]
    volumes = [{"name": "v", "secret": {"secretName": volume_secret}}] if volume_secret else []
    return {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {
            "containers": [container], "volumes": volumes}}},
    }  # fmt: skip


def _secret(name: str) -> dict[str, Any]:
    return {"kind": "Secret", "metadata": {"name": name}, "data": {"k": "dg=="}}


def test_what_podman_cannot_play_is_refused_saying_why() -> None:
    both = [_deployment("s", "s"), _secret("s")]
    with pytest.raises(KubePlayError, match="both as variables and as a volume"):
        adapt(both, {"d": "10.0.0.2"})
    with pytest.raises(KubePlayError, match="Secret\\(s\\) nobody gave: gone"):
        adapt([_deployment("gone")], {"d": "10.0.0.2"})
    with pytest.raises(KubePlayError, match="no address given for the Deployment\\(s\\) d"):
        adapt([_deployment()], {})


def test_host_aliases_render_into_both_pods(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    alias = [{"ip": "192.0.2.7", "hostnames": ["slurmrestd.site", "idp.site"]}]
    values.write_text(yaml.safe_dump({"hub": {"hostAliases": alias}, "proxy": {
        "hostAliases": alias}}))  # fmt: skip
    rendered = render(helm, [ALL_OPTIONS, values])
    for _name, pod in rendered.pods():
        assert pod["hostAliases"] == alias
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"hub": {"hostAliases": [{"ip": "slurm", "hostnames": []}]}}))
    refused = template(helm, (ALL_OPTIONS, bad))
    assert refused.returncode != 0 and "hostAliases" in refused.output, refused.output
