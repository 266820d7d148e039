"""What the site file asks of the local factory besides Slurm and the hub: its own identity
provider (when the issuer is on this machine), the projects' Slurm accounts, the reports'
service user and the courses' materials folder."""

from __future__ import annotations

import pwd
from pathlib import Path
from urllib.parse import urlparse

from factoryhub.hub.site.loader import Site, load_site
from factoryhub.local import accounting, idp

DEMO_IDP_USERS = (
    ("sofia", "startup engineer", "acme-ai"),
    ("ravi", "researcher", "climate-lab, acme-ai"),
    ("tara", "trainer", "trainers"),
    ("stan", "staff member", "factory-staff"),
    ("ada", "admin", "factory-admins, climate-lab"),
    ("nora", "no project yet", "-"),
)


def local_issuer_port(site: Site) -> int | None:
    """The port of the site's OIDC issuer when it is the local factory's own (loopback)."""
    if site.auth.type != "oidc" or site.auth.oidc is None:
        return None
    issuer = urlparse(site.auth.oidc.issuer)
    if issuer.hostname not in ("127.0.0.1", "localhost"):
        return None
    return issuer.port or 80


def idp_up(site: Site) -> tuple[int, bool] | None:
    """Start the local identity provider with the hub as its client; (its pid, whether this
    call started it), or None when the site signs in elsewhere."""
    port = local_issuer_port(site)
    if port is None:
        return None
    oidc = site.auth.oidc
    assert oidc is not None
    state_dir = (
        Path(oidc.client_secret_file).parent if oidc.client_secret_file else idp.DEFAULT_STATE_DIR
    )
    running = idp.status(state_dir)
    secret = idp.client_secret(state_dir)
    client = idp.hub_client(site.hub.public_url, secret, client_id=oidc.client_id)
    pid = idp.up(port=port, state_dir=state_dir, clients=[client], issuer=oidc.issuer)
    return pid, pid != running


def project_accounts(site: Site) -> list[str]:
    """Create the Slurm accounts of the site's projects; the names created."""
    if not site.slurm.manage_associations:
        return []
    return [
        p.account for p in site.projects if accounting.ensure_account(p.account, p.display_name)
    ]


def reports_service_user(site: Site) -> tuple[str, bool]:
    """The Unix user that runs scheduled site reports, with an association to its project's
    account ("" when the site has none), and whether this call created any of it."""
    name = site.reports.service_user
    if not (site.reports.enabled and name):
        return "", False
    from factoryhub.local import slurm

    created = not unix_user_exists(name)
    slurm.create_unix_user(name)
    account = site.project(site.reports.service_project).account
    created |= accounting.ensure_account(account, site.reports.service_project)
    created |= accounting.ensure_user_in_account(name, account)
    return name, created


def unix_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def course_materials_cache(site: Site) -> tuple[str, bool]:
    """The folder of git course materials (readable by every participant), when a course
    has git materials ("" otherwise), and whether this call created it."""
    if not any(c.materials_git for c in site.courses.courses):
        return "", False
    folder = Path(site.courses.materials_cache)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return str(folder), created


def load(path: Path) -> Site:
    return load_site(path)
