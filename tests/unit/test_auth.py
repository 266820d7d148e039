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
    auth = FactoryOIDCAuthenticator(create_unix_users=False, manage_slurm_associations=False)
    await auth.provision("root", ["anything"])  # exists, nothing to do, no error


def test_defaults_a_factory_wants() -> None:
    auth = FactoryOIDCAuthenticator()
    assert auth.enable_pkce and auth.manage_groups and auth.allow_all
    assert auth.username_claim == "preferred_username"
    groups_key = auth.auth_state_groups_key
    assert groups_key({"oauth_user": {"groups": ["a", "b"]}}) == ["a", "b"]
