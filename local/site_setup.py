"""What the site file asks of the local factory besides Slurm and the hub: its own identity
provider (when the issuer is on this machine), the projects' Slurm accounts, the reports'
service user and the courses' materials folder."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from factoryhub.hub.site import Site, load_site

from . import accounting, idp

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


def idp_up(site: Site) -> int | None:
    """Start the local identity provider with the hub as its client; its pid, or None when
    the site signs in elsewhere."""
    port = local_issuer_port(site)
    if port is None:
        return None
    oidc = site.auth.oidc
    assert oidc is not None
    state_dir = (
        Path(oidc.client_secret_file).parent if oidc.client_secret_file else idp.DEFAULT_STATE_DIR
    )
    secret = idp.client_secret(state_dir)
    client = idp.hub_client(site.hub.public_url, secret, client_id=oidc.client_id)
    return idp.up(port=port, state_dir=state_dir, clients=[client], issuer=oidc.issuer)


def project_accounts(site: Site) -> list[str]:
    """Create the Slurm accounts of the site's projects; the names created."""
    if not site.slurm.manage_associations:
        return []
    return [
        p.account for p in site.projects if accounting.ensure_account(p.account, p.display_name)
    ]


def reports_service_user(site: Site) -> str:
    """The Unix user that runs scheduled site reports, with an association to its project's
    account ("" when the site has none)."""
    name = site.reports.service_user
    if not (site.reports.enabled and name):
        return ""
    from . import slurm

    slurm.create_unix_user(name)
    account = site.project(site.reports.service_project).account
    accounting.ensure_account(account, site.reports.service_project)
    accounting.ensure_user_in_account(name, account)
    return name


def course_materials_cache(site: Site) -> str:
    """The folder of git course materials (readable by every participant), when a course
    has git materials; "" otherwise."""
    if not any(c.materials_git for c in site.courses.courses):
        return ""
    folder = Path(site.courses.materials_cache)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return str(folder)


def load(path: Path) -> Site:
    return load_site(path)
