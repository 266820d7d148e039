"""What the test_rendered* modules share: the release's names, the two standard renders, the
hub's and the proxy's pods, ports, the site file as factoryhub reads it, secret values."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from factoryhub.hub.site.loader import load_site

from .helm_tools import ALL_OPTIONS, REPO, Rendered, render

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


SECRET_VALUES = {
    "oidc.clientSecret.value": "oidc-client-S3CRET-4f9a",
    "database.type": "postgresql",
    "database.postgresql.url": "postgresql://hub:pg-S3CRET-77c1@db.example.org:5432/hub",
    "slurm.jwtKey.valueBase64": base64.b64encode(
        b"jwt-key-material-S3CRET-0b5e-0123456789"
    ).decode(),
}
