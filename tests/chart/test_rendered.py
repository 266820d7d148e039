"""What the chart runs and how it is reached: images, ports, probes, the hub's single replica,
security contexts, no RBAC, NetworkPolicies and the state volume. (The site file and the
secrets: test_rendered_config.py.)"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .helm_tools import CHART, container, env_of, mount, volume
from .rendered_tools import (
    ALL,
    FULL,
    SECRET_VALUES,
    all_options,
    defaults,
    hub_pod,
    ports,
    proxy_pod,
    schema_default,
)

pytestmark = pytest.mark.helm


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
