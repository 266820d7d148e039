"""Slurm accounting for the local factory: its cluster, its own accounts, and a default
association for every Unix user it creates.

With ``AccountingStorageEnforce=associations`` a user needs an association (user ↔ account)
before Slurm accepts any job of theirs: ``ensure_default_association`` gives every user the
local factory creates one, in account ``factoryhub-default``. The generic operations live in
:mod:`factoryhub.spawners.slurm.accounts` (the hub uses them too) and are re-exported here.
"""

from __future__ import annotations

from factoryhub.spawners.slurm.accounts import (
    AccountingError,
    account_exists,
    accounts,
    default_account,
    delete_account,
    ensure_account,
    ensure_user_in_account,
    remove_user_from_account,
    sacctmgr,
    user_accounts,
    valid_account,
    valid_user,
)

__all__ = [
    "CLUSTER",
    "DEFAULT_ACCOUNT",
    "OPS_ACCOUNT",
    "AccountingError",
    "account_exists",
    "accounts",
    "clusters",
    "default_account",
    "delete_account",
    "ensure_account",
    "ensure_cluster",
    "ensure_default_association",
    "ensure_user_in_account",
    "remove_user_from_account",
    "sacctmgr",
    "user_accounts",
    "valid_account",
    "valid_user",
]

CLUSTER = "factoryhub"
OPS_ACCOUNT = "factoryhub-ops"  # root's account: the local factory's own check jobs
DEFAULT_ACCOUNT = "factoryhub-default"  # every local user without another association


def _rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines() if line.strip()]


# --- clusters ----------------------------------------------------------------------------------


def clusters() -> set[str]:
    return {row[0] for row in _rows(sacctmgr(["-n", "-P", "show", "cluster", "format=cluster"]))}


def ensure_cluster(name: str = CLUSTER) -> bool:
    """Register cluster ``name`` in slurmdbd; True when it was added."""
    valid_account(name)  # same alphabet as account names
    if name in clusters():
        return False
    sacctmgr(["-i", "add", "cluster", name])
    return True


def ensure_default_association(username: str, account: str = DEFAULT_ACCOUNT) -> bool:
    """Let ``username`` submit jobs: put them in ``account`` (created if missing) unless they
    already have an association; True when an association was added."""
    valid_user(username)
    valid_account(account)
    if user_accounts(username):
        return False
    ensure_account(account, "Default account of local factory users")
    return ensure_user_in_account(username, account, default=True)
