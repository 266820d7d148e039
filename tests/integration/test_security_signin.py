"""Sign-in as an attacker would try it: an identity at the provider whose user name claim is
``root``, another system account, or somebody else's account must not become that account.

Before the fix an IdP account called ``root`` signed in as Unix root, was added to a Slurm
account and its server's job ran as root; a re-registered name took over its owner's account.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator

import pytest

from factoryhub.spawners.slurm import accounts as slurm_accounts
from tests.support.hub import RunningHub

from .idp_fixtures import TEST_PASSWORD
from .oidc_fixtures import signed_in

pytestmark = [pytest.mark.slurm, pytest.mark.security]

SYSTEM_ACCOUNT = "fhtest-sysacct"  # made here with a uid below 1000


@pytest.fixture(scope="module")
def system_account() -> Iterator[str]:
    subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_ACCOUNT], check=False)
    assert pwd.getpwnam(SYSTEM_ACCOUNT).pw_uid < 1000
    try:
        yield SYSTEM_ACCOUNT
    finally:
        subprocess.run(["userdel", SYSTEM_ACCOUNT], check=False)


def hub_users(hub: RunningHub) -> list[str]:
    with hub.client() as c:
        return [u["name"] for u in c.get("/hub/api/users").json()]


@pytest.mark.parametrize(
    ("identity", "account"),
    [("fhtest-evil-root", "root"), ("fhtest-evil-daemon", "daemon")],
)
def test_an_identity_named_like_a_system_account_is_refused(
    oidc_hub: RunningHub, identity: str, account: str
) -> None:
    slurm_accounts.remove_user_from_account(account, "acme-ai")  # what an old run left
    with signed_in(oidc_hub, identity, TEST_PASSWORD) as (_client, page):
        assert page.status_code == 403, page.text[:500]
        assert "nobody can sign in as it" in page.text
        assert "support" in page.text
    assert account not in hub_users(oidc_hub)
    assert "acme-ai" not in slurm_accounts.user_accounts(account)
    assert oidc_hub.spawn(account).status_code in (400, 403, 404)
    assert "refused a sign-in as" in oidc_hub.log_tail(400).lower()


def test_an_identity_named_like_an_account_below_min_uid_is_refused(
    oidc_hub: RunningHub, system_account: str
) -> None:
    with signed_in(oidc_hub, "fhtest-evil-sysacct", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 403, page.text[:500]
        assert "system account" in page.text and "below 1000" in page.text
    assert system_account not in hub_users(oidc_hub)


def test_a_second_identity_with_the_same_name_cannot_take_the_account(
    oidc_hub: RunningHub,
) -> None:
    # the owner signs in first: the account is bound to their identity
    with signed_in(oidc_hub, "fhtest-oidc", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 200, page.text[:300]
    # another identity whose preferred_username reads "fhtest-oidc"
    with signed_in(oidc_hub, "fhtest-evil-twin", TEST_PASSWORD) as (client, page):
        assert page.status_code == 403, page.text[:500]
        assert "belongs to another identity" in page.text
        assert client.get(f"{oidc_hub.url}/hub/api/user").status_code in (401, 403)
    # the owner still signs in
    with signed_in(oidc_hub, "fhtest-oidc", TEST_PASSWORD) as (_client, page):
        assert page.status_code == 200, page.text[:300]
