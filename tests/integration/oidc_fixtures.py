"""The OIDC hub: factoryhub's hub signing people in with the real local provider, with
projects mapped to real Slurm accounts (slurmdbd), and a browser-like sign-in helper."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import yaml

from factoryhub.spawners import slurm_accounts

from .hub_fixtures import OIDC_HUB_PORTS, RunningHub, example_site
from .idp_fixtures import RunningIdp

# The test users of idp_fixtures: fhtest-oidc is in project fhtest-lab; fhtest-oidc-two in
# fhtest-lab and acme-ai; fhtest-oidc-nogroups in none.
TEST_PROJECT = {
    "name": "fhtest-lab",
    "display_name": "FH Test Lab",
    "account": "fhtest-lab",
    "groups": ["fhtest-project"],
    "profiles": ["cpu-small"],
}


def cancel_jobs_of(usernames: list[str]) -> None:
    from factoryhub.local import slurm as local_slurm

    for name in usernames:
        local_slurm.cancel_user_jobs(name)


@pytest.fixture(scope="session")
def oidc_hub(
    slurm: Any, idp: RunningIdp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("oidc-hub-state")
    state.chmod(0o700)
    secret_file = state / "client-secret"
    secret_file.write_text(idp.client_secret)
    secret_file.chmod(0o600)
    site = example_site()
    public, api, proxy_api = OIDC_HUB_PORTS
    site["hub"].update(
        public_url=f"http://127.0.0.1:{public}",
        api_url=f"http://127.0.0.1:{api}",
        proxy_api_url=f"http://127.0.0.1:{proxy_api}",
        state_dir=str(state),
    )
    site["auth"]["oidc"].update(
        issuer=idp.issuer, client_id=idp.client_id, client_secret_file=str(secret_file)
    )
    site["projects"] = [TEST_PROJECT, *site["projects"]]
    site["spawner"]["python_env"] = str(RunningHub.venv())
    for project in site["projects"]:
        slurm_accounts.ensure_account(project["account"], project["display_name"])
    site_file = state / "factory.yaml"
    site_file.write_text(yaml.safe_dump(site))
    hub = RunningHub(
        state_dir=state,
        site_file=site_file,
        token=secrets.token_hex(32),
        log_path=RunningHub.artifacts() / "oidc-hub.log",
        url=f"http://127.0.0.1:{public}",
    )
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        cancel_jobs_of(["fhtest-oidc", "fhtest-oidc-two", "fhtest-oidc-nogroups"])


def hub_sign_in(
    hub: RunningHub, username: str, password: str
) -> tuple[httpx.Client, httpx.Response]:
    """Sign in as a browser would: the hub sends us to the provider's login page, we fill it
    in, the provider sends us back. Returns the client (with the hub's cookies) and the last
    page."""
    client = httpx.Client(timeout=30, follow_redirects=True)
    page = client.get(f"{hub.url}/hub/oauth_login", params={"next": "/hub/spawn"})
    assert 'name="password"' in page.text, (page.status_code, page.text[:300])
    action = re.search(r'<form[^>]*\baction="([^"]+)"', page.text)
    assert action
    landed = client.post(
        urljoin(str(page.url), action.group(1).replace("&amp;", "&")),
        data={"username": username, "password": password},
    )
    return client, landed


@contextlib.contextmanager
def signed_in(
    hub: RunningHub, username: str, password: str
) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """``hub_sign_in`` whose client is closed at the end of the ``with``."""
    client, page = hub_sign_in(hub, username, password)
    try:
        yield client, page
    finally:
        client.close()
