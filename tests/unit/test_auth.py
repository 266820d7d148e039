"""The authenticator's own decisions that need no provider: unknown Unix users on LDAP sites."""

from __future__ import annotations

import pytest
from tornado import web

from factoryhub.hub.auth import FactoryOIDCAuthenticator


async def test_an_unknown_unix_user_is_told_to_ask_support_when_creation_is_off() -> None:
    auth = FactoryOIDCAuthenticator(create_unix_users=False, issuer="http://127.0.0.1:9")
    with pytest.raises(web.HTTPError) as info:
        await auth.provision("fh-no-such-user", ["acme-ai"])
    assert info.value.status_code == 403
    assert "no Unix account of that name" in info.value.log_message
    assert "ask the factory's support" in info.value.log_message


async def test_an_existing_unix_user_needs_nothing_when_associations_are_off() -> None:
    auth = FactoryOIDCAuthenticator(
        create_unix_users=False, manage_slurm_associations=False, min_uid=0
    )
    await auth.provision("root", ["anything"])  # exists, nothing to do, no error


async def test_a_system_account_is_never_provisioned() -> None:
    auth = FactoryOIDCAuthenticator(create_unix_users=True, manage_slurm_associations=True)
    with pytest.raises(web.HTTPError) as info:
        await auth.provision("daemon", ["acme-ai"])
    assert info.value.status_code == 403


@pytest.mark.parametrize("name", ["root", "daemon", "nobody"])
def test_system_accounts_and_reserved_names_cannot_sign_in(name: str) -> None:
    auth = FactoryOIDCAuthenticator(reserved_usernames=["nobody"])
    with pytest.raises(web.HTTPError) as info:
        auth.user_info_to_username({"preferred_username": name})
    assert info.value.status_code == 403
    assert "system account" in info.value.log_message or "reserved" in info.value.log_message
    assert "support" in info.value.log_message


def test_a_person_signs_in_under_their_name() -> None:
    auth = FactoryOIDCAuthenticator(reserved_usernames=["nobody"])
    assert auth.user_info_to_username({"preferred_username": "fh-no-such-user"}) == (
        "fh-no-such-user"
    )


async def test_an_account_belongs_to_the_identity_that_first_used_it(tmp_path) -> None:
    auth = FactoryOIDCAuthenticator(
        identities_db=str(tmp_path / "identities.sqlite"), issuer="https://idp.example"
    )
    await auth.bind_identity("sofia", {"iss": "https://idp.example", "sub": "s-1"})
    await auth.bind_identity("sofia", {"iss": "https://idp.example", "sub": "s-1"})
    with pytest.raises(web.HTTPError) as info:  # a re-registered "sofia"
        await auth.bind_identity("sofia", {"iss": "https://idp.example", "sub": "s-2"})
    assert info.value.status_code == 403 and "another identity" in info.value.log_message
    with pytest.raises(web.HTTPError) as info:  # sofia renamed herself to ravi
        await auth.bind_identity("ravi", {"iss": "https://idp.example", "sub": "s-1"})
    assert info.value.status_code == 403 and "'sofia'" in info.value.log_message
    assert oct((tmp_path / "identities.sqlite").stat().st_mode & 0o777) == "0o600"


def test_defaults_a_factory_wants() -> None:
    auth = FactoryOIDCAuthenticator()
    assert auth.enable_pkce and auth.manage_groups and auth.allow_all
    assert auth.username_claim == "preferred_username"
    groups_key = auth.auth_state_groups_key
    assert groups_key({"oauth_user": {"groups": ["a", "b"]}}) == ["a", "b"]
