"""The identity store: one account per provider identity, bound on first sign-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from factoryhub.hub.identities import IdentityConflict, IdentityStore
from factoryhub.spawners.system_accounts import SystemAccountError, check_not_system_account


def test_first_sign_in_binds_and_later_ones_match(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "ids.sqlite")
    assert store.bind("sofia", "https://idp", "sub-1") is True
    assert store.bind("sofia", "https://idp", "sub-1") is False
    assert store.bound("sofia") == ("https://idp", "sub-1")
    assert store.bound("ravi") is None


@pytest.mark.parametrize(
    ("username", "issuer", "subject"),
    [
        ("sofia", "https://idp", "sub-2"),  # another identity, same name
        ("sofia", "https://other-idp", "sub-1"),  # same sub at another provider
        ("sofia-new", "https://idp", "sub-1"),  # the identity renamed itself
        ("nobody-else", "https://idp", ""),  # no subject at all
    ],
)
def test_conflicts_are_refused_and_change_nothing(
    tmp_path: Path, username: str, issuer: str, subject: str
) -> None:
    store = IdentityStore(tmp_path / "ids.sqlite")
    store.bind("sofia", "https://idp", "sub-1")
    with pytest.raises(IdentityConflict):
        store.bind(username, issuer, subject)
    assert store.bound("sofia") == ("https://idp", "sub-1")
    assert store.bound("sofia-new") is None


def test_reserved_names_and_low_uids_are_system_accounts() -> None:
    uids = {"root": 0, "daemon": 1, "svc": 999, "sofia": 1000}.get
    for name in ("root", "daemon", "svc"):
        with pytest.raises(SystemAccountError):
            check_not_system_account(name, 1000, (), uids)
    with pytest.raises(SystemAccountError, match="reserved"):
        check_not_system_account("sofia", 1000, ("sofia",), uids)
    check_not_system_account("sofia", 1000, (), uids)
    check_not_system_account("newcomer", 1000, (), uids)  # no account yet: may be created
