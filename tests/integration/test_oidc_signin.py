"""Sign-in with the real OpenID Connect provider, projects and their Slurm accounts."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import pytest

from factoryhub.hub.oidc import IdTokenError, verify_id_token
from factoryhub.spawners.slurm import accounts as slurm_accounts
from tests.support.hub import RunningHub

from .idp_fixtures import TEST_PASSWORD, RunningIdp, login_code_flow
from .oidc_fixtures import hub_sign_in, signed_in

pytestmark = pytest.mark.slurm


def squeue(user: str) -> list[list[str]]:
    """(id, state, account) of the user's active jobs (``squeue --json``)."""
    from .slurm_fixtures import queue_jobs

    return [[str(j["job_id"]), j["job_state"], j["account"]] for j in queue_jobs(user)]


def user_token(hub: RunningHub, user: str) -> str:
    with hub.client() as c:
        r = c.post(f"/hub/api/users/{user}/tokens", json={"note": "test"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def test_sign_in_creates_the_unix_user_and_slurm_associations(oidc_hub: RunningHub) -> None:
    with signed_in(oidc_hub, "fhtest-oidc-two", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 200, page.text[:500]
        assert str(page.url).endswith("/hub/spawn") or "/hub/spawn" in str(page.url)
        # a member of two projects chooses one; both are offered, nothing else
        assert 'name="project"' in page.text
        assert 'value="fhtest-lab"' in page.text and 'value="acme-ai"' in page.text
        assert 'value="climate-lab"' not in page.text
    subprocess.run(["id", "fhtest-oidc-two"], check=True, capture_output=True)
    assert slurm_accounts.user_accounts("fhtest-oidc-two") >= {"fhtest-lab", "acme-ai"}
    with oidc_hub.client() as c:
        groups = c.get("/hub/api/users/fhtest-oidc-two").json()["groups"]
    assert set(groups) == {"fhtest-project", "acme-ai"}


def test_the_job_carries_the_chosen_projects_account(oidc_hub: RunningHub) -> None:
    hub_sign_in(oidc_hub, "fhtest-oidc-two", TEST_PASSWORD)[0].close()
    token = user_token(oidc_hub, "fhtest-oidc-two")
    with httpx.Client(
        base_url=oidc_hub.url, headers={"Authorization": f"token {token}"}, timeout=60
    ) as c:
        r = c.post(
            "/hub/api/users/fhtest-oidc-two/server",
            json={"project": "fhtest-lab", "profile": "cpu-small", "memory_gb": 2},
        )
        assert r.status_code in (201, 202), r.text
    oidc_hub.wait_ready("fhtest-oidc-two")
    jobs = squeue("fhtest-oidc-two")
    assert [j[1:] for j in jobs] == [["RUNNING", "fhtest-lab"]]
    job_id = jobs[0][0]
    oidc_hub.stop_server("fhtest-oidc-two")
    # Slurm's accounting has the job under the project's account
    from .slurm_fixtures import accounted

    deadline = time.monotonic() + 30
    while (job := accounted(job_id)) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert job is not None and (job.account, job.user) == ("fhtest-lab", "fhtest-oidc-two")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"project": "climate-lab"}, "is not a project of yours"),
        ({"project": "fhtest-lab", "profile": "gpu-1"}, "is not a profile you may use"),
        # gpu-1 is in acme-ai's profiles but only for the group gpu-users
        ({"project": "acme-ai", "profile": "gpu-1"}, "is not a profile you may use"),
        ({"project": "acme-ai", "profile": "cpu-large", "memory_gb": 99}, "Memory"),
    ],
)
def test_what_the_projects_do_not_allow_is_refused_before_slurm(
    oidc_hub: RunningHub, options: dict[str, Any], words: str
) -> None:
    hub_sign_in(oidc_hub, "fhtest-oidc-two", TEST_PASSWORD)[0].close()
    token = user_token(oidc_hub, "fhtest-oidc-two")
    with httpx.Client(
        base_url=oidc_hub.url, headers={"Authorization": f"token {token}"}, timeout=60
    ) as c:
        r = c.post("/hub/api/users/fhtest-oidc-two/server", json=options)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert squeue("fhtest-oidc-two") == []


def test_a_person_in_no_project_is_told_how_to_get_access(oidc_hub: RunningHub) -> None:
    with signed_in(oidc_hub, "fhtest-oidc-nogroups", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 200
        assert "not in a project yet" in page.text
        assert "project's lead" in page.text
    token = user_token(oidc_hub, "fhtest-oidc-nogroups")
    with httpx.Client(
        base_url=oidc_hub.url, headers={"Authorization": f"token {token}"}, timeout=60
    ) as c:
        r = c.post("/hub/api/users/fhtest-oidc-nogroups/server", json={})
    assert r.status_code == 400 and "not a member of any project" in r.json()["message"]
    assert squeue("fhtest-oidc-nogroups") == []


def test_an_invalid_user_name_claim_is_refused(oidc_hub: RunningHub) -> None:
    with signed_in(oidc_hub, "fhtest-oidc-badname", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 403
        assert "cannot be used on the cluster" in page.text
    with oidc_hub.client() as c:
        names = [u["name"] for u in c.get("/hub/api/users").json()]
    assert not any("bad" in n.lower() for n in names)


def test_a_tampered_state_is_refused(oidc_hub: RunningHub) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        r = client.get(f"{oidc_hub.url}/hub/oauth_login")
        assert r.status_code == 302
        location = r.headers["location"]
        tampered = location.replace("state=", "state=x", 1)
        # the provider signs in and sends the (tampered) state back to the hub
        page = client.get(tampered, follow_redirects=True)
        action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        r = client.post(
            httpx.URL(str(page.url)).join(action),
            data={"username": "fhtest-oidc", "password": TEST_PASSWORD},
            follow_redirects=True,
        )
        assert r.status_code == 400, r.status_code
        assert "state" in r.text.lower()
        assert (
            client.cookies.get("jupyterhub-session-id") is None
            or "jupyterhub-hub-login" not in client.cookies
        )


def test_tokens_for_another_client_or_from_another_issuer_are_refused(idp: RunningIdp) -> None:
    jwks = httpx.get(idp.discovery()["jwks_uri"], timeout=10).json()
    tokens = login_code_flow(idp, "fhtest-oidc", TEST_PASSWORD)
    claims = verify_id_token(tokens["id_token"], jwks, idp.issuer, idp.client_id)
    assert claims["preferred_username"] == "fhtest-oidc"
    with pytest.raises(IdTokenError, match="another client"):
        verify_id_token(tokens["id_token"], jwks, idp.issuer, "some-other-client")
    with pytest.raises(IdTokenError, match="another provider"):
        verify_id_token(tokens["id_token"], jwks, "http://127.0.0.1:19999", idp.client_id)
    with pytest.raises(IdTokenError):
        verify_id_token(tokens["access_token"], jwks, idp.issuer, idp.client_id)


def test_users_cannot_reach_each_others_servers_by_cookie(oidc_hub: RunningHub) -> None:
    owner, other = "fhtest-oidc", "fhtest-oidc-two"
    hub_sign_in(oidc_hub, owner, TEST_PASSWORD)[0].close()
    token = user_token(oidc_hub, owner)
    with httpx.Client(
        base_url=oidc_hub.url, headers={"Authorization": f"token {token}"}, timeout=60
    ) as c:
        assert c.post(f"/hub/api/users/{owner}/server", json={}).status_code in (201, 202)
    oidc_hub.wait_ready(owner)
    try:
        with signed_in(oidc_hub, other, TEST_PASSWORD) as (client, _):
            r = client.get(f"{oidc_hub.url}/user/{owner}/lab", follow_redirects=True)
            assert r.status_code in (403, 404) or "/hub/login" in str(r.url), (r.status_code, r.url)
            r = client.post(f"{oidc_hub.url}/user/{owner}/api/kernels", follow_redirects=False)
            assert r.status_code in (302, 403), r.status_code
    finally:
        oidc_hub.stop_server(owner)


def test_provider_down_gives_a_clear_page(oidc_hub: RunningHub, idp: RunningIdp) -> None:
    import os
    import signal

    os.kill(idp.pid, signal.SIGSTOP)  # the provider stops answering
    try:
        r = httpx.get(f"{oidc_hub.url}/hub/oauth_login", timeout=30)
        assert r.status_code == 503
        assert "not reachable right now" in r.text
    finally:
        os.kill(idp.pid, signal.SIGCONT)
