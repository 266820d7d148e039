"""What the chart configures the hub with: secrets only in Secrets and how they reach the
hub, the site file the hub accepts (the chart's wiring filled in, the user's values kept), and
restarts when it changes."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from .helm_tools import REPO, Rendered, container, env_of, mount, render, volume
from .rendered_tools import (
    ALL,
    FULL,
    SECRET_VALUES,
    SITE_SCHEMA,
    all_options,
    defaults,
    hub_pod,
    ports,
    proxy_pod,
    site_of,
)

pytestmark = pytest.mark.helm


# --------------------------------------------------------------------------- secrets


def test_secret_values_land_in_secrets_only(helm: str) -> None:
    r = defaults(helm, **SECRET_VALUES)
    plain = {
        "oidc-client-S3CRET-4f9a",
        "postgresql://hub:pg-S3CRET-77c1@db.example.org:5432/hub",
        "jwt-key-material-S3CRET-0b5e-0123456789",
    }
    needles = {"S3CRET"} | plain | {base64.b64encode(p.encode()).decode() for p in plain}
    in_secrets: set[str] = set()
    for doc in r.docs:
        text = yaml.safe_dump(doc)
        if doc["kind"] == "Secret":
            for value in doc.get("data", {}).values():
                in_secrets.add(base64.b64decode(value).decode())
            continue
        leaked = [n for n in needles if n in text]
        assert leaked == [], f"{doc['kind']}/{doc['metadata']['name']} holds {leaked}"
    assert plain <= in_secrets
    assert r.of_kind("ConfigMap")  # there is a ConfigMap, and it was checked above


def test_secrets_reach_the_hub(helm: str) -> None:
    r = defaults(helm, **SECRET_VALUES)
    pod = hub_pod(r)
    hub = container(pod, "hub")
    env = env_of(hub)
    assert env["FACTORYHUB_DB_URL"] == {"secretKeyRef": {"name": f"{FULL}-db", "key": "url"}}
    token = {"secretKeyRef": {"name": f"{FULL}-proxy-token", "key": "token"}}
    assert env["CONFIGPROXY_AUTH_TOKEN"] == token
    assert env_of(container(proxy_pod(r), "proxy"))["CONFIGPROXY_AUTH_TOKEN"] == token
    assert env["JPY_COOKIE_SECRET"] == {
        "secretKeyRef": {"name": f"{FULL}-cookie-secret", "key": "cookie-secret"}
    }
    cookie = base64.b64decode(r.get("Secret", f"{FULL}-cookie-secret")["data"]["cookie-secret"])
    assert len(cookie) == 64 and int(cookie, 16) >= 0  # 32 bytes, hex, as JupyterHub wants
    token_value = base64.b64decode(r.get("Secret", f"{FULL}-proxy-token")["data"]["token"])
    assert len(token_value) == 64


def test_existing_secrets_are_used_and_not_made(helm: str) -> None:
    r = all_options(helm)
    assert r.of_kind("Secret") == []
    env = env_of(container(hub_pod(r, ALL), "hub"))
    assert env["CONFIGPROXY_AUTH_TOKEN"]["secretKeyRef"]["name"] == "factoryhub-proxy-token"
    assert env["JPY_COOKIE_SECRET"]["secretKeyRef"]["name"] == "factoryhub-cookie"
    assert env["FACTORYHUB_DB_URL"]["secretKeyRef"] == {"name": "factoryhub-db", "key": "url"}
    # client_secret_env set in the site: the client secret is that environment variable
    assert env["FACTORYHUB_OIDC_CLIENT_SECRET"]["secretKeyRef"] == {
        "name": "factoryhub-oidc",
        "key": "client-secret",
    }
    assert env["FACTORYHUB_ADMIN_TOKEN_FILE"] == "/etc/factoryhub/operator/token"
    jwt = volume(hub_pod(r, ALL), "slurm-jwt-secret")["secret"]
    assert jwt["secretName"] == "slurm-jwt-key"


# --------------------------------------------------------------------------- the site file


def test_site_passes_factoryhubs_validation_with_wiring_filled_in(
    helm: str, tmp_path: Path
) -> None:
    r = defaults(helm)
    _, site = site_of(r, FULL, tmp_path)
    hub = site.hub
    assert hub.external_proxy is True
    # the proxy reaches the hub's services at the hub Service
    assert hub.services_host == f"{FULL}-hub"
    r.get("Service", hub.services_host)
    # the hub binds on all interfaces, on the port of the hub Service
    api = urlparse(hub.api_url)
    assert api.hostname == "0.0.0.0" and api.port == 8081
    # the hub reaches the proxy API at the proxy-api Service
    proxy_api = urlparse(hub.proxy_api_url)
    assert proxy_api.hostname == f"{FULL}-proxy-api" and proxy_api.port == 8001
    assert ports(r.get("Service", proxy_api.hostname)["spec"])["api"] == proxy_api.port
    assert site.slurm.access == "rest"
    # what the site names is mounted there
    pod = hub_pod(r)
    hub_c = container(pod, "hub")
    assert mount(hub_c, "state")["mountPath"] == hub.state_dir
    assert volume(pod, "state")["persistentVolumeClaim"] == {"claimName": f"{FULL}-hub"}
    secret_file = Path(site.auth.oidc.client_secret_file)
    assert mount(hub_c, "oidc-client")["mountPath"] == str(secret_file.parent)
    assert volume(pod, "oidc-client")["secret"]["items"] == [
        {"key": "client-secret", "path": secret_file.name}
    ]
    assert env_of(hub_c)["FACTORYHUB_SITE_FILE"] == "/etc/factoryhub/site/factory.yaml"
    assert mount(hub_c, "site")["mountPath"] == "/etc/factoryhub/site"
    assert mount(hub_c, "site")["readOnly"] is True
    assert volume(pod, "site")["configMap"]["name"] == f"{FULL}-site"


def test_slurm_jwt_key_is_the_hubs_own_read_only_file(helm: str, tmp_path: Path) -> None:
    """The key lands at slurm.rest.key_file, mode 0400, owned by the hub's user (copied from
    the Secret by an init container: Secret files are group-readable under an fsGroup), in
    memory, mounted read-only into the hub."""
    for r, full in ((defaults(helm), FULL), (all_options(helm), ALL)):
        raw, _ = site_of(r, full, tmp_path)
        key_file = Path(raw["slurm"]["rest"]["key_file"])
        pod = hub_pod(r, full)
        init = container(pod, "slurm-jwt-key", init=True)
        assert init["command"] == [
            "install",
            "-m",
            "0400",
            f"/etc/factoryhub/slurm-jwt-secret/{key_file.name}",
            str(key_file),
        ]
        assert mount(init, "slurm-jwt")["mountPath"] == str(key_file.parent)
        hub_mount = mount(container(pod, "hub"), "slurm-jwt")
        assert hub_mount == {
            "name": "slurm-jwt",
            "mountPath": str(key_file.parent),
            "readOnly": True,
        }
        assert volume(pod, "slurm-jwt")["emptyDir"]["medium"] == "Memory"
        secret = volume(pod, "slurm-jwt-secret")["secret"]
        assert secret["defaultMode"] == 0o400
        assert secret["items"][0]["path"] == key_file.name
    # the default key_file is the site schema's default
    raw, _ = site_of(defaults(helm), FULL, tmp_path)
    rest_props = SITE_SCHEMA["properties"]["slurm"]["properties"]["rest"]["properties"]
    assert raw["slurm"]["rest"]["key_file"] == rest_props["key_file"]["default"]


def test_all_options_site_passes_and_keeps_the_users_values(helm: str, tmp_path: Path) -> None:
    raw, site = site_of(all_options(helm), ALL, tmp_path)
    assert site.hub.public_url == "https://notebooks.factory.example.org"  # from the Ingress
    assert site.hub.connect_url == "http://k8s-nodes.cluster.example.org:30081"
    assert raw["slurm"]["rest"]["key_file"] == "/etc/slurm-jwt/jwt_hs256.key"
    assert raw["courses"]["materials_cache"] == "/shared/course-materials"
    # client_secret_env given: no client_secret_file filled in
    assert "client_secret_file" not in raw["auth"]["oidc"]
    assert [v["name"] for v in hub_pod(all_options(helm), ALL)["volumes"]].count("oidc-client") == 0


def test_users_values_win_over_the_wiring(helm: str, tmp_path: Path) -> None:
    r = defaults(
        helm,
        **{
            "site.hub.proxy_api_url": "http://proxy-api.elsewhere:9001",
            "site.hub.public_url": "https://hub.example.net",
            "site.auth.oidc.client_secret_file": "/etc/oidc/secret.txt",
        },
    )
    _, site = site_of(r, FULL, tmp_path)
    assert site.hub.proxy_api_url == "http://proxy-api.elsewhere:9001"
    assert site.hub.public_url == "https://hub.example.net"
    assert mount(container(hub_pod(r), "hub"), "oidc-client")["mountPath"] == "/etc/oidc"
    # external_proxy is not the user's choice in the chart
    r = defaults(helm, **{"site.hub.external_proxy": "false"})
    assert site_of(r, FULL, tmp_path)[1].hub.external_proxy is True


def test_example_values_site_passes(helm: str, tmp_path: Path) -> None:
    r = render(helm, (REPO / "helm" / "examples" / "factory-values.yaml",))
    _, site = site_of(r, FULL, tmp_path)
    assert site.hub.public_url == "https://notebooks.factory.example.org"
    assert [p.name for p in site.profiles] == ["cpu-small", "gpu-1"]


def test_checksum_restarts_the_hub_when_the_site_changes(helm: str) -> None:
    def checksum(r: Rendered) -> str:
        meta = r.get("Deployment", f"{FULL}-hub")["spec"]["template"]["metadata"]
        return meta["annotations"]["checksum/config"]

    base = checksum(defaults(helm))
    assert checksum(defaults(helm, **{"proxy.logLevel": "info"})) == base  # deterministic
    assert checksum(defaults(helm, **{"site.idle_culler.timeout": "7200"})) != base
    assert checksum(defaults(helm, **{"site.spawner.start_timeout": "900"})) != base
    meta = defaults(helm).get("Deployment", f"{FULL}-hub")["spec"]["template"]["metadata"]
    assert "checksum/secret" in meta["annotations"]
    proxy_meta = defaults(helm).get("Deployment", f"{FULL}-proxy")["spec"]["template"]["metadata"]
    assert "checksum/secret" in proxy_meta["annotations"]
