"""What the chart renders: images, ports, probes, the hub's single replica, security contexts,
no RBAC, secrets only in Secrets, the site file the hub accepts, restarts on config changes,
NetworkPolicies and the state volume."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from factoryhub.hub.site.loader import load_site

from .helm_tools import (
    ALL_OPTIONS,
    CHART,
    REPO,
    Rendered,
    container,
    env_of,
    mount,
    render,
    volume,
)

pytestmark = pytest.mark.helm

FULL = "fh-factoryhub"  # the full name with the defaults (release "fh")
ALL = "fh"  # fullnameOverride of the all-options values
SITE_SCHEMA = json.loads((REPO / "hub" / "site" / "schema.json").read_text())


def schema_default(section: str, key: str) -> Any:
    return SITE_SCHEMA["properties"][section]["properties"][key]["default"]


def defaults(helm: str, **sets: str) -> Rendered:
    return render(helm, sets=sets or None)


def all_options(helm: str) -> Rendered:
    return render(helm, (ALL_OPTIONS,))


def hub_pod(r: Rendered, full: str = FULL) -> dict[str, Any]:
    return r.get("Deployment", f"{full}-hub")["spec"]["template"]["spec"]


def proxy_pod(r: Rendered, full: str = FULL) -> dict[str, Any]:
    return r.get("Deployment", f"{full}-proxy")["spec"]["template"]["spec"]


def ports(obj: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p.get("containerPort", p.get("port")) for p in obj["ports"]}


def site_of(r: Rendered, full: str, tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The site file as rendered (raw dict) and as factoryhub's own loader reads it."""
    path = tmp_path / "factory.yaml"
    path.write_text(r.site_text(full))
    site = load_site(path)  # raises SiteError, naming every bad key, when the hub would refuse it
    return site.raw, site


# --------------------------------------------------------------------------- images


def test_images_come_from_values(helm: str) -> None:
    r = defaults(helm, **{"image.repository": "registry.example.net/fh/hub", "image.tag": "9.9.9"})
    pods = r.pods()
    assert {name for name, _ in pods} == {f"{FULL}-hub", f"{FULL}-proxy"}
    images = [
        c["image"] for _, pod in pods for c in pod["containers"] + pod.get("initContainers", [])
    ]
    assert len(images) == 3
    assert set(images) == {"registry.example.net/fh/hub:9.9.9"}


def test_image_tag_defaults_to_app_version(helm: str) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(hub_pod(defaults(helm)), "hub")["image"].endswith(f":{app_version}")


def test_pull_secrets_and_policy(helm: str) -> None:
    for _, pod in all_options(helm).pods():
        assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert {c["imagePullPolicy"] for c in pod["containers"]} == {"Always"}


# --------------------------------------------------------------------------- ports


def test_proxy_ports_and_services(helm: str) -> None:
    r = defaults(helm)
    proxy = container(proxy_pod(r), "proxy")
    assert ports(proxy) == {"http": 8000, "api": 8001}
    public = r.get("Service", f"{FULL}-proxy-public")["spec"]
    assert public["type"] == "ClusterIP"
    assert public["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    api = r.get("Service", f"{FULL}-proxy-api")["spec"]
    assert api["ports"] == [{"name": "api", "port": 8001, "targetPort": "api", "protocol": "TCP"}]
    for svc in (public, api):
        assert svc["selector"]["app.kubernetes.io/component"] == "proxy"


def test_proxy_command(helm: str) -> None:
    r = defaults(helm)
    proxy = container(proxy_pod(r), "proxy")
    assert proxy["command"] == ["configurable-http-proxy"]
    args = proxy["args"]
    assert "--ip=0.0.0.0" in args and "--port=8000" in args
    assert "--api-ip=0.0.0.0" in args and "--api-port=8001" in args
    assert f"--default-target=http://{FULL}-hub:8081" in args
    assert f"--error-target=http://{FULL}-hub:8081/hub/error" in args


def test_hub_ports_default_to_the_site_schema(helm: str) -> None:
    r = defaults(helm)
    want = {
        "hub": 8081,
        "reports": schema_default("reports", "port"),
        "courses": schema_default("courses", "port"),
    }
    assert want["reports"] == 10101 and want["courses"] == 10102
    assert ports(container(hub_pod(r), "hub")) == want
    svc = r.get("Service", f"{FULL}-hub")["spec"]
    assert svc["type"] == "ClusterIP"
    assert ports(svc) == want
    assert {p["targetPort"] for p in svc["ports"]} == set(want)


def test_hub_ports_follow_the_site(helm: str) -> None:
    r = all_options(helm)
    want = {"hub": 8081, "reports": 10201, "courses": 10202}
    assert ports(container(hub_pod(r, ALL), "hub")) == want
    assert ports(r.get("Service", f"{ALL}-hub")["spec"]) == want
    r = defaults(helm, **{"site.reports.enabled": "false", "site.courses.enabled": "false"})
    assert ports(r.get("Service", f"{FULL}-hub")["spec"]) == {"hub": 8081}


def test_hub_api_service_for_compute_nodes(helm: str) -> None:
    assert not [
        s for s in defaults(helm).of_kind("Service") if s["metadata"]["name"].endswith("-hub-api")
    ]
    spec = all_options(helm).get("Service", f"{ALL}-hub-api")["spec"]
    assert spec["type"] == "NodePort"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["ports"] == [
        {"name": "hub", "port": 8081, "targetPort": "hub", "protocol": "TCP", "nodePort": 30081}
    ]
    assert spec["selector"]["app.kubernetes.io/component"] == "hub"


def test_ingress_points_at_the_proxy(helm: str) -> None:
    assert defaults(helm).of_kind("Ingress") == []
    r = all_options(helm)
    spec = r.get("Ingress", ALL)["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [
        {"hosts": ["notebooks.factory.example.org"], "secretName": "notebooks-tls"}
    ]
    (rule,) = spec["rules"]
    assert rule["host"] == "notebooks.factory.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{ALL}-proxy-public", "port": {"name": "http"}}


# --------------------------------------------------------------------------- probes, replicas


def test_probes(helm: str) -> None:
    r = defaults(helm)
    hub = container(hub_pod(r), "hub")
    proxy = container(proxy_pod(r), "proxy")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert hub[probe]["httpGet"] == {"path": "/hub/health", "port": "hub"}
        assert proxy[probe]["httpGet"] == {"path": "/_chp_healthz", "port": "http"}


def test_one_hub_recreated(helm: str) -> None:
    for r, full in ((defaults(helm), FULL), (all_options(helm), ALL)):
        hub = r.get("Deployment", f"{full}-hub")["spec"]
        assert hub["replicas"] == 1
        assert hub["strategy"] == {"type": "Recreate"}
        proxy = r.get("Deployment", f"{full}-proxy")["spec"]
        assert proxy["replicas"] == 1
        # not PID 1: the Python proxy has no SIGTERM handler and would ignore SIGTERM as PID 1
        assert proxy["template"]["spec"]["shareProcessNamespace"] is True


def test_scheduling_and_resources_from_values(helm: str) -> None:
    r = all_options(helm)
    hub = hub_pod(r, ALL)
    assert hub["nodeSelector"] == {"node-role.example.org/services": "true"}
    assert hub["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in hub["affinity"]
    assert container(hub, "hub")["resources"]["limits"] == {"cpu": 2, "memory": "4Gi"}
    assert "podAntiAffinity" in proxy_pod(r, ALL)["affinity"]


# --------------------------------------------------------------------------- security


@pytest.mark.parametrize("which", ["defaults", "all-options"])
def test_non_root_everywhere(helm: str, which: str) -> None:
    r = defaults(helm) if which == "defaults" else all_options(helm)
    pods = r.pods()
    assert len(pods) == 2
    for name, pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == 999 and psc["runAsGroup"] == 999 and psc["fsGroup"] == 999
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] != 0, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc.get("privileged", False) is False, where
            # a read-only root file system needs a writable /tmp
            if c["name"] in ("hub", "proxy"):
                assert mount(c, "tmp")["mountPath"] == "/tmp"
                assert "emptyDir" in volume(pod, "tmp")


def test_no_rbac_and_no_api_token(helm: str) -> None:
    for r in (defaults(helm), all_options(helm)):
        kinds = {d["kind"] for d in r.docs}
        assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
        (sa,) = r.of_kind("ServiceAccount")
        assert sa["automountServiceAccountToken"] is False
        for _, pod in r.pods():
            assert pod["serviceAccountName"] == sa["metadata"]["name"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["enableServiceLinks"] is False


SECRET_VALUES = {
    "oidc.clientSecret.value": "oidc-client-S3CRET-4f9a",
    "database.type": "postgresql",
    "database.postgresql.url": "postgresql://hub:pg-S3CRET-77c1@db.example.org:5432/hub",
    "slurm.jwtKey.valueBase64": base64.b64encode(
        b"jwt-key-material-S3CRET-0b5e-0123456789"
    ).decode(),
}


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


# --------------------------------------------------------------------------- network policies


def _rule_ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def _cidrs(rule: dict[str, Any], side: str) -> set[str]:
    return {peer["ipBlock"]["cidr"] for peer in rule.get(side, []) if "ipBlock" in peer}


def test_network_policies(helm: str) -> None:
    r = all_options(helm)
    hub = r.get("NetworkPolicy", f"{ALL}-hub")["spec"]
    proxy = r.get("NetworkPolicy", f"{ALL}-proxy")["spec"]
    assert hub["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "hub"
    assert proxy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    for spec in (hub, proxy):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    # compute nodes (and the extra sources) reach the hub API only
    (api_in,) = [i for i in hub["ingress"] if _cidrs(i, "from")]
    assert _cidrs(api_in, "from") == {"10.20.0.0/16", "10.21.0.0/16", "10.0.0.0/24"}
    assert _rule_ports(api_in) == {8081}
    # the proxy reaches the hub and its services
    proxy_in = [i for i in hub["ingress"] if any("podSelector" in p for p in i.get("from", []))]
    assert any(_rule_ports(i) == {8081, 10201, 10202} for i in proxy_in)
    # the hub reaches slurmrestd, the IdP, PostgreSQL, the compute nodes, DNS, the proxy API
    egress = {frozenset(_cidrs(e, "to")): _rule_ports(e) for e in hub["egress"] if _cidrs(e, "to")}
    assert egress[frozenset({"10.10.0.5/32"})] == {6820, 6821}
    assert egress[frozenset({"203.0.113.10/32"})] == {443, 8443}
    assert egress[frozenset({"10.30.0.7/32"})] == {5432}
    assert egress[frozenset({"10.20.0.0/16", "10.21.0.0/16"})] == set()  # any port
    assert any(_rule_ports(e) == {53} and "to" not in e for e in hub["egress"])
    assert any(_rule_ports(e) == {8001} for e in hub["egress"])
    # the proxy: public port from the ingress controller's namespace, API from the hub only
    public, api = proxy["ingress"][0], proxy["ingress"][1]
    assert _rule_ports(public) == {8000}
    assert public["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert _rule_ports(api) == {8001}
    assert api["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "hub"
    proxy_egress = {frozenset(_cidrs(e, "to")) for e in proxy["egress"]}
    assert frozenset({"10.20.0.0/16", "10.21.0.0/16"}) in proxy_egress


def test_network_policies_by_default_and_off(helm: str) -> None:
    names = {d["metadata"]["name"] for d in defaults(helm).of_kind("NetworkPolicy")}
    assert names == {f"{FULL}-hub", f"{FULL}-proxy"}
    assert defaults(helm, **{"networkPolicy.enabled": "false"}).of_kind("NetworkPolicy") == []


# --------------------------------------------------------------------------- state volume


def test_state_volume(helm: str) -> None:
    (pvc,) = defaults(helm).of_kind("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == f"{FULL}-hub"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "storageClassName" not in pvc["spec"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (pvc,) = defaults(helm, **{"persistence.storageClass": "-"}).of_kind("PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""
    # an existing claim: none made, that one mounted
    r = all_options(helm)
    assert r.of_kind("PersistentVolumeClaim") == []
    assert volume(hub_pod(r, ALL), "state")["persistentVolumeClaim"] == {
        "claimName": "factoryhub-state"
    }
    # off: an emptyDir
    r = defaults(helm, **{"persistence.enabled": "false"})
    assert r.of_kind("PersistentVolumeClaim") == []
    assert volume(hub_pod(r), "state") == {"name": "state", "emptyDir": {}}


def test_postgresql_keeps_the_state_volume_for_the_services(helm: str) -> None:
    """With PostgreSQL the hub database leaves the volume, but the Reports service's run
    history and the Courses service's edits (SQLite files in state_dir) stay on it."""
    r = defaults(helm, **SECRET_VALUES)
    assert len(r.of_kind("PersistentVolumeClaim")) == 1
    assert "FACTORYHUB_DB_URL" in env_of(container(hub_pod(r), "hub"))
    assert "FACTORYHUB_DB_URL" not in env_of(container(hub_pod(defaults(helm)), "hub"))
