"""Slurm accounting associations (``sacctmgr``): which accounts a user may charge.

Used by the hub when a user signs in (added to their projects' accounts) and by the local
factory to create the projects' accounts. Each call reads first and writes only when
something must change. Names are checked before they reach a command.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TIMEOUT_S = 30


class AccountingError(RuntimeError):
    """sacctmgr failed; the message holds its stderr."""


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"not a valid {what}: {value!r}")
    return value


def _sacctmgr(args: Sequence[str]) -> str:
    try:
        result = subprocess.run(
            ["sacctmgr", *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AccountingError(f"sacctmgr {' '.join(args)}: {e}") from e
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise AccountingError(f"sacctmgr {' '.join(args)}: {message}")
    return result.stdout


def account_exists(account: str) -> bool:
    _check(account, ACCOUNT_NAME, "Slurm account name")
    out = _sacctmgr(["-n", "-P", "show", "account", account, "format=account"])
    return account in out.split()


def ensure_account(account: str, description: str = "", organization: str = "factoryhub") -> bool:
    """Create ``account`` unless it exists; True when it was created."""
    _check(account, ACCOUNT_NAME, "Slurm account name")
    if account_exists(account):
        return False
    text = re.sub(r"[^A-Za-z0-9 _.,()-]", "", description or account)[:100] or account
    _sacctmgr(
        ["-i", "add", "account", account, f"description={text}", f"organization={organization}"]
    )
    return True


def user_accounts(username: str) -> set[str]:
    """The accounts ``username`` has an association with."""
    _check(username, USER_NAME, "user name")
    out = _sacctmgr(["-n", "-P", "show", "association", f"where user={username}", "format=account"])
    return {line.strip() for line in out.splitlines() if line.strip()}


def ensure_user_in_account(username: str, account: str) -> bool:
    """Give ``username`` an association with ``account``; True when one was added. The first
    account a user gets becomes their default account."""
    _check(username, USER_NAME, "user name")
    _check(account, ACCOUNT_NAME, "Slurm account name")
    current = user_accounts(username)
    if account in current:
        return False
    args = ["-i", "add", "user", username, f"account={account}"]
    if not current:
        args.append(f"defaultaccount={account}")
    _sacctmgr(args)
    return True


def remove_user_from_account(username: str, account: str) -> bool:
    _check(username, USER_NAME, "user name")
    _check(account, ACCOUNT_NAME, "Slurm account name")
    if account not in user_accounts(username):
        return False
    _sacctmgr(["-i", "delete", "user", username, f"account={account}"])
    return True
