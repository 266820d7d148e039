"""From the site file to JupyterHub's traitlets configuration.

``hub_settings`` is a pure function: it reads a validated :class:`Site` and returns a
nested dict of trait values (``{"JupyterHub": {...}, "FactorySlurmSpawner": {...}}``)
that ``jupyterhub_config.py`` merges into ``c``. Config only sets, never mutates.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from factoryhub.hub.courses.home import courses_for_home
from factoryhub.hub.home import factoryhub_job
from factoryhub.hub.service_web import LOOPBACK
from factoryhub.hub.services import (
    courses_db,
    courses_settings,
    idle_culler_settings,
    merge_settings,
    reports_settings,
)
from factoryhub.hub.site.auth import OidcAuth
from factoryhub.hub.site.model import Site

OPERATOR_SERVICE = "factoryhub-operator"


def hub_settings(
    site: Site, environ: Mapping[str, str], python: str = sys.executable, site_file: str = ""
) -> dict[str, dict[str, Any]]:
    settings = _hub_and_proxy(site, environ)
    settings["FactorySlurmSpawner"] = spawner_settings(site)
    _connect_urls(settings, site)
    merge_settings(settings, auth_settings(site, environ))
    token_file = environ.get("FACTORYHUB_ADMIN_TOKEN_FILE")
    if token_file:
        merge_settings(settings, operator_settings(Path(token_file).read_text().strip()))
    if site.idle_culler.enabled:
        # appended to the operator's service and role above, never replacing them
        merge_settings(settings, idle_culler_settings(site, python))
    if site.reports.enabled:
        merge_settings(settings, reports_settings(site, python, site_file))
        settings["JupyterHub"]["template_vars"]["factoryhub_reports_url"] = "/services/reports/"
    if site.courses.courses:
        merge_settings(settings, course_server_settings(site))
    if site.courses.active:
        merge_settings(settings, courses_settings(site, python, site_file))
        settings["JupyterHub"]["template_vars"]["factoryhub_courses_url"] = "/services/courses/"
    return settings


def _hub_and_proxy(site: Site, environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    state = Path(site.hub.state_dir)
    settings: dict[str, dict[str, Any]] = {
        "JupyterHub": {
            "bind_url": site.hub.public_url,
            "hub_bind_url": site.hub.api_url,
            # An external database (PostgreSQL in the Helm chart) comes from the
            # environment (a secret), never from the site file.
            "db_url": environ.get("FACTORYHUB_DB_URL")
            or f"sqlite:///{state / 'jupyterhub.sqlite'}",
            "cookie_secret_file": str(state / "jupyterhub_cookie_secret"),
            "cleanup_servers": not site.hub.keep_servers_on_restart,
            "spawner_class": "factoryhub.spawners.spawner.FactorySlurmSpawner",
            "authenticator_class": "pam",
            # The home page shows each server's Slurm job (hub/templates/home.html).
            "template_paths": [str(Path(__file__).parent / "templates")],
            "template_vars": {"factoryhub_job": factoryhub_job},
        },
        "ConfigurableHTTPProxy": {
            "api_url": site.hub.proxy_api_url,
            "pid_file": str(state / "proxy.pid"),
        },
        "Spawner": {"default_url": "/lab"},
    }
    if site.hub.external_proxy:
        # The proxy runs on its own (Helm chart); its token is CONFIGPROXY_AUTH_TOKEN.
        settings["ConfigurableHTTPProxy"]["should_start"] = False
    proxy_cmd = environ.get("FACTORYHUB_PROXY_CMD")
    if proxy_cmd:
        settings["ConfigurableHTTPProxy"]["command"] = [proxy_cmd]
    return settings


def spawner_settings(site: Site) -> dict[str, Any]:
    """The spawner's traits: the profiles and projects as plain dicts (the model's
    ``to_config``), the rest as the site file has them."""
    return {
        "profiles": [p.to_config() for p in site.profiles],
        "python_env": site.spawner.python_env,
        "log_dir": site.spawner.log_dir,
        "job_name_prefix": site.slurm.job_name_prefix,
        "start_timeout": site.spawner.start_timeout,
        "hub_tag": hub_tag(site),
        "slurm_access": site.slurm.access,
        "slurm_rest": dict(site.slurm.rest),
        "slurm_poll_interval": site.slurm.poll_interval,
        "orphan_grace": float(site.slurm.orphan_grace),
        "dask_settings": site.dask.to_config({p.name: p.partition for p in site.profiles}),
        "apptainer": dict(site.spawner.apptainer),
        "node_addresses": dict(site.spawner.node_addresses),
        "projects": [p.to_config() for p in site.projects],
    }


def _connect_urls(settings: dict[str, dict[str, Any]], site: Site) -> None:
    """Where the proxy and the compute nodes reach the hub, when not at api_url."""
    if site.hub.external_proxy or site.hub.services_host not in LOOPBACK:
        # The proxy (its own pod) reaches the hub at the hub's Service name; the compute
        # nodes reach it at connect_url (the spawner hands them that as JUPYTERHUB_API_URL).
        api_port = urlparse(site.hub.api_url).port or 8081
        settings["JupyterHub"]["hub_connect_url"] = f"http://{site.hub.services_host}:{api_port}"
        if site.hub.connect_url:
            settings["Spawner"]["hub_connect_url"] = site.hub.connect_url
    elif site.hub.connect_url:
        settings["JupyterHub"]["hub_connect_url"] = site.hub.connect_url


def auth_settings(site: Site, environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The authenticator: the factory's OIDC provider, or PAM in one group (local only)."""
    if site.auth.type == "oidc" and site.auth.oidc is not None:
        return {
            "JupyterHub": {"authenticator_class": "factoryhub.hub.auth.FactoryOIDCAuthenticator"},
            "FactoryOIDCAuthenticator": oidc_settings(site, environ),
        }
    if site.auth.type == "local" and site.auth.local is not None:
        # PAM against local Unix users in one group: for the local factory only.
        return {
            "PAMAuthenticator": {"allowed_groups": {site.auth.local.group}},
            "Authenticator": {"admin_users": set(site.auth.local.admin_users)},
        }
    return {}


def operator_settings(token: str) -> dict[str, dict[str, Any]]:
    """The operators' API token: a service holding it, and its role."""
    return {
        "JupyterHub": {
            "services": [{"name": OPERATOR_SERVICE, "api_token": token}],
            "load_roles": [
                {
                    "name": "factoryhub-operator",
                    "description": "Operators' API token: manage users and servers",
                    "scopes": [
                        "admin:users",
                        "admin:servers",
                        "admin:groups",
                        "tokens",
                        "access:servers",
                        "read:hub",
                        "read:metrics",
                        "proxy",
                    ],
                    "services": [OPERATOR_SERVICE],
                }
            ],
        }
    }


def course_server_settings(site: Site) -> dict[str, dict[str, Any]]:
    """A course's server is the participant's named server called like the course."""
    configs = [c.to_config() for c in site.courses.courses]
    db = courses_db(site)
    settings: dict[str, dict[str, Any]] = {
        "JupyterHub": {
            "allow_named_servers": True,
            "template_vars": {
                "factoryhub_courses": functools.partial(courses_for_home, site.courses.courses, db)
            },
        },
        "FactorySlurmSpawner": {
            "courses": configs,
            "courses_db": db,
            "course_folder": site.courses.folder,
            "manage_course_associations": site.slurm.manage_associations,
        },
    }
    if site.auth.type == "oidc":
        settings["FactoryOIDCAuthenticator"] = {"courses": configs, "courses_db": db}
    return settings


def hub_tag(site: Site) -> str:
    """Marks this hub's Slurm jobs: the job name prefix and a digest of where the hub lives,
    so two hubs on one cluster never take each other's jobs for orphans."""
    digest = hashlib.sha256(f"{site.hub.public_url}|{site.hub.state_dir}".encode()).hexdigest()
    return f"{site.slurm.job_name_prefix}:{digest[:12]}"


class SecretMissing(ValueError):
    """The OIDC client secret is in neither the file nor the environment variable named."""


def client_secret(oidc: OidcAuth, environ: Mapping[str, str]) -> str:
    if oidc.client_secret_file:
        try:
            secret = Path(oidc.client_secret_file).read_text().strip()
        except OSError as e:
            raise SecretMissing(
                f"auth.oidc.client_secret_file: cannot read {oidc.client_secret_file}: {e.strerror}"
            ) from None
        if not secret:
            raise SecretMissing(f"auth.oidc.client_secret_file: {oidc.client_secret_file} is empty")
        return secret
    secret = environ.get(oidc.client_secret_env, "").strip()
    if not secret:
        raise SecretMissing(
            f"auth.oidc: no client secret: set auth.oidc.client_secret_file or the "
            f"environment variable {oidc.client_secret_env}"
        )
    return secret


def oidc_settings(site: Site, environ: Mapping[str, str]) -> dict[str, Any]:
    oidc = site.auth.oidc
    assert oidc is not None
    settings: dict[str, Any] = {
        "issuer": oidc.issuer,
        "client_id": oidc.client_id,
        "client_secret": client_secret(oidc, environ),
        "oauth_callback_url": site.hub.public_url.rstrip("/") + "/hub/oauth_callback",
        "scope": list(oidc.scopes),
        "username_claim": oidc.username_claim,
        "groups_claim": oidc.groups_claim,
        "admin_groups": set(oidc.admin_groups),
        "projects": [p.to_config() for p in site.projects],
        "create_unix_users": site.auth.unix_users.create,
        "unix_shell": site.auth.unix_users.shell,
        "min_uid": site.auth.unix_users.min_uid,
        "reserved_usernames": sorted(
            {*site.auth.unix_users.reserved_names, *filter(None, [site.reports.service_user])}
        ),
        "identities_db": str(Path(site.hub.state_dir) / "identities.sqlite"),
        "manage_slurm_associations": site.slurm.manage_associations,
        # rest: who exists is Slurm's word (the authenticator asks the Slurm client)
        "slurm_access": site.slurm.access,
        "slurm_rest": dict(site.slurm.rest),
    }
    explicit = {
        "authorize_url": oidc.authorize_url,
        "token_url": oidc.token_url,
        "userdata_url": oidc.userinfo_url,
        "jwks_url": oidc.jwks_url,
    }
    settings.update({k: v for k, v in explicit.items() if v})
    return settings
