"""The idle culler: its section of the site file and the hub service it becomes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from factoryhub.hub.hub_config import OPERATOR_SERVICE, hub_settings
from factoryhub.hub.services import (
    IDLE_CULLER_SCOPES,
    activity_interval,
    idle_culler_settings,
    merge_settings,
)
from factoryhub.hub.site import loader as site
from factoryhub.hub.site.culler import IdleCuller, build_idle_culler
from factoryhub.hub.site.loader import SiteError, parse_site

PYTHON = "/opt/hub-env/bin/python"


def local_site(**culler: Any) -> dict[str, Any]:
    """The example with local sign-in (no client secret needed) and ``idle_culler`` keys."""
    data = yaml.safe_load(site.example_site_path().read_text())
    data["auth"]["type"] = "local"
    del data["auth"]["oidc"]
    del data["idle_culler"]
    data["reports"] = {"enabled": False}  # its own tests below
    data["courses"]["enabled"] = False  # tests/unit/test_courses.py
    if culler:
        data["idle_culler"] = culler
    return data


# --------------------------------------------------------------------------- the site file


def test_defaults_when_the_section_is_absent() -> None:
    s = parse_site(local_site())
    assert s.idle_culler == IdleCuller(enabled=True, timeout=3600, every=300)
    assert s.raw["idle_culler"] == {"enabled": True, "timeout": 3600, "every": 300}


def test_defaults_of_omitted_keys() -> None:
    s = parse_site(local_site(timeout=600))
    assert s.idle_culler == IdleCuller(enabled=True, timeout=600, every=300)


def test_the_example_documents_the_section() -> None:
    s = site.load_site(site.example_site_path())
    assert s.idle_culler == IdleCuller(enabled=True, timeout=3600, every=300)
    assert "idle_culler:" in site.example_site_path().read_text()


def test_the_defaults_live_in_the_schema_only() -> None:
    # the settings have no defaults of their own: a section left out gets the schema's
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(IdleCuller))
    props = site.schema()["properties"]["idle_culler"]["properties"]
    defaults = {key: prop["default"] for key, prop in props.items()}
    assert build_idle_culler(defaults) == IdleCuller(enabled=True, timeout=3600, every=300)


def test_schema_of_the_section() -> None:
    section = site.schema()["properties"]["idle_culler"]
    assert section["additionalProperties"] is False
    props = section["properties"]
    assert (props["timeout"]["minimum"], props["timeout"]["maximum"]) == (60, 604800)
    assert (props["every"]["minimum"], props["every"]["maximum"]) == (10, 3600)
    assert props["enabled"]["default"] is True
    assert "idle_culler" not in site.schema()["required"]


@pytest.mark.parametrize(
    ("culler", "path", "expected"),
    [
        ({"timeout": 59}, "idle_culler.timeout", "an integer from 60 to 604800"),
        ({"timeout": 604801}, "idle_culler.timeout", "an integer from 60 to 604800"),
        ({"timeout": "1h"}, "idle_culler.timeout", "an integer from 60 to 604800"),
        ({"every": 9}, "idle_culler.every", "an integer from 10 to 3600"),
        ({"every": 3601}, "idle_culler.every", "an integer from 10 to 3600"),
        ({"enabled": "yes"}, "idle_culler.enabled", "true or false"),
    ],
)
def test_bad_values_name_the_key(culler: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(SiteError) as info:
        parse_site(local_site(**culler))
    assert info.value.paths == [path]
    assert f"expected {expected}" in str(info.value)


def test_unknown_key_in_the_section() -> None:
    with pytest.raises(SiteError) as info:
        parse_site(local_site(cull_users=True))
    assert str(info.value) == (
        'factory.yaml: idle_culler: unknown key "cull_users" (allowed: enabled, timeout, every)'
    )


# --------------------------------------------------------------------------- the fragment


def test_fragment_runs_the_culler_with_the_hubs_python() -> None:
    s = parse_site(local_site(timeout=900, every=60))
    fragment = idle_culler_settings(s, PYTHON)
    (service,) = fragment["JupyterHub"]["services"]
    assert service["name"] == "idle-culler"
    assert service["command"][:3] == [PYTHON, "-m", "jupyterhub_idle_culler"]
    assert "--timeout=900" in service["command"]
    assert "--cull-every=60" in service["command"]
    assert not any(a.startswith("--cull-users") for a in service["command"])
    assert not any(a.startswith(("--max-age", "--remove-named")) for a in service["command"])
    assert "api_token" not in service and "url" not in service  # managed: the hub starts it
    assert service["cwd"] == s.hub.state_dir


def test_fragment_role_has_exactly_the_culler_scopes() -> None:
    fragment = idle_culler_settings(parse_site(local_site()), PYTHON)
    (role,) = fragment["JupyterHub"]["load_roles"]
    assert role["services"] == ["idle-culler"]
    assert sorted(role["scopes"]) == sorted(
        ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    )
    assert tuple(role["scopes"]) == IDLE_CULLER_SCOPES
    assert "admin:users" not in role["scopes"]  # only --cull-users needs it


@pytest.mark.parametrize(
    ("timeout", "interval"), [(60, 15), (100, 25), (1200, 300), (3600, 300), (604800, 300)]
)
def test_servers_report_activity_well_within_the_timeout(timeout: int, interval: int) -> None:
    assert activity_interval(timeout) == interval
    fragment = idle_culler_settings(parse_site(local_site(timeout=timeout)), PYTHON)
    env = fragment["Spawner"]["environment"]
    assert env == {"JUPYTERHUB_ACTIVITY_INTERVAL": str(interval)}
    assert interval <= timeout / 4


# --------------------------------------------------------------------------- hub_settings


def operator_token(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return {"FACTORYHUB_ADMIN_TOKEN_FILE": str(token)}


def test_hub_settings_add_the_culler_next_to_the_operator(tmp_path: Path) -> None:
    s = parse_site(local_site(timeout=120, every=20))
    hub = hub_settings(s, operator_token(tmp_path), python=PYTHON)["JupyterHub"]
    assert [svc["name"] for svc in hub["services"]] == [OPERATOR_SERVICE, "idle-culler"]
    assert hub["services"][0] == {"name": OPERATOR_SERVICE, "api_token": "t0ken"}
    assert hub["services"][1]["command"][0] == PYTHON
    roles = {r["name"]: r for r in hub["load_roles"]}
    assert roles["factoryhub-operator"]["services"] == [OPERATOR_SERVICE]
    assert "admin:users" in roles["factoryhub-operator"]["scopes"]
    assert roles["idle-culler"]["services"] == ["idle-culler"]
    assert tuple(roles["idle-culler"]["scopes"]) == IDLE_CULLER_SCOPES


def test_hub_settings_without_the_operator_token() -> None:
    settings = hub_settings(parse_site(local_site()), {}, python=PYTHON)
    assert [svc["name"] for svc in settings["JupyterHub"]["services"]] == ["idle-culler"]
    assert [r["name"] for r in settings["JupyterHub"]["load_roles"]] == ["idle-culler"]
    # the spawner's other settings stay
    assert settings["Spawner"]["default_url"] == "/lab"
    assert settings["Spawner"]["environment"] == {"JUPYTERHUB_ACTIVITY_INTERVAL": "300"}


def test_hub_settings_use_the_hubs_own_python_by_default() -> None:
    import sys

    settings = hub_settings(parse_site(local_site()), {})
    assert settings["JupyterHub"]["services"][0]["command"][0] == sys.executable


def test_disabled_culler_adds_nothing(tmp_path: Path) -> None:
    settings = hub_settings(
        parse_site(local_site(enabled=False)), operator_token(tmp_path), python=PYTHON
    )
    assert [svc["name"] for svc in settings["JupyterHub"]["services"]] == [OPERATOR_SERVICE]
    assert [r["name"] for r in settings["JupyterHub"]["load_roles"]] == ["factoryhub-operator"]
    assert "environment" not in settings["Spawner"]
    bare = hub_settings(parse_site(local_site(enabled=False)), {}, python=PYTHON)
    assert "services" not in bare["JupyterHub"] and "load_roles" not in bare["JupyterHub"]


def test_merge_extends_lists_and_dicts_and_copies() -> None:
    fragment = {"A": {"l": [3], "d": {"y": 2}, "v": 5, "new": [1]}, "B": {"x": {"k": 1}}}
    settings: dict[str, dict[str, Any]] = {"A": {"l": [1, 2], "d": {"x": 1}, "v": 4}}
    merged = merge_settings(settings, fragment)
    assert merged is settings
    assert settings == {
        "A": {"l": [1, 2, 3], "d": {"x": 1, "y": 2}, "v": 5, "new": [1]},
        "B": {"x": {"k": 1}},
    }
    settings["A"]["new"].append(2)
    settings["B"]["x"]["k"] = 9
    assert fragment == {"A": {"l": [3], "d": {"y": 2}, "v": 5, "new": [1]}, "B": {"x": {"k": 1}}}


# --------------------------------------------------------------------------- the Reports service


def test_hub_settings_run_the_reports_service_for_every_user() -> None:
    data = local_site()
    data["reports"] = yaml.safe_load(site.example_site_path().read_text())["reports"]
    data["reports"]["port"] = 10555
    settings = hub_settings(parse_site(data), {}, python=PYTHON, site_file="/etc/f.yaml")
    hub = settings["JupyterHub"]
    (service,) = [svc for svc in hub["services"] if svc["name"] == "reports"]
    assert service["url"] == "http://127.0.0.1:10555"
    assert service["command"] == [PYTHON, "-m", "factoryhub.hub.reports.service"]
    assert service["environment"] == {"FACTORYHUB_SITE_FILE": "/etc/f.yaml"}
    assert service["oauth_no_confirm"] is True
    # the service's own token reads users (groups, admin), nothing more
    roles = {r["name"]: r for r in hub["load_roles"]}
    assert roles["reports-service"] == {
        "name": "reports-service",
        "description": roles["reports-service"]["description"],
        "scopes": ["read:users"],
        "services": ["reports"],
    }
    # everyone may reach the service; it decides who may run what
    assert hub["extra_user_scopes"] == ["access:services!service=reports"]
    assert hub["template_vars"]["factoryhub_reports_url"] == "/services/reports/"


def test_a_site_without_reports_has_no_reports_service() -> None:
    hub = hub_settings(parse_site(local_site()), {}, python=PYTHON)["JupyterHub"]
    assert "reports" not in [svc["name"] for svc in hub["services"]]
    assert "extra_user_scopes" not in hub
    assert "factoryhub_reports_url" not in hub["template_vars"]
