"""Slurm accounting associations (``sacctmgr``): which accounts a user may charge.

Used by the hub when a user signs in (added to their projects' accounts) and by the local
factory (clusters, accounts, default associations). Thin, idempotent wrappers: each
operation reads first (``sacctmgr -n -P show ...``) and makes at most one ``sacctmgr -i``
write, only when something must change. Names are validated before they reach a command.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from factoryhub.spawners.model.users import POSIX_NAME

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DESCRIPTION_CHARS = re.compile(r"[^A-Za-z0-9 _.,()-]")
TIMEOUT_S = 30.0


class AccountingError(RuntimeError):
    """``sacctmgr`` failed; the message carries its stderr."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def _valid(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"not a valid {what}: {value!r}")
    return value


def valid_account(name: object) -> str:
    """``name`` when it is a valid Slurm account name (``^[a-z0-9][a-z0-9_-]{0,63}$``)."""
    return _valid(name, ACCOUNT_NAME, "Slurm account name")


def valid_user(name: object) -> str:
    """``name`` when it is a valid POSIX user name."""
    return _valid(name, POSIX_NAME, "user name")


def sacctmgr(args: Sequence[str], timeout: float = TIMEOUT_S) -> str:
    """Run ``sacctmgr ARGS``; its stdout, or AccountingError with its stderr."""
    cmd = ["sacctmgr", *args]
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AccountingError(f"{' '.join(cmd)}: {exc}") from exc
    if out.returncode != 0:
        err = (out.stderr or out.stdout).strip()
        raise AccountingError(f"{' '.join(cmd)} failed (exit {out.returncode}): {err}", err)
    return out.stdout


def _rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _write(args: Sequence[str]) -> None:
    """One committing ``sacctmgr -i`` call."""
    sacctmgr(["-i", *args])


# --- accounts ----------------------------------------------------------------------------------


def accounts() -> set[str]:
    return {row[0] for row in _rows(sacctmgr(["-n", "-P", "show", "account", "format=account"]))}


def account_exists(name: str) -> bool:
    valid_account(name)
    out = sacctmgr(["-n", "-P", "show", "account", name, "format=account"])
    return any(row[0] == name for row in _rows(out))


def ensure_account(name: str, description: str = "", organization: str = "factoryhub") -> bool:
    """Create account ``name`` (under root, in every cluster) unless it exists; True if created."""
    valid_account(name)
    valid_account(organization)
    if account_exists(name):
        return False
    text = DESCRIPTION_CHARS.sub("", description or name).strip()[:100] or name
    _write(["add", "account", name, f"description={text}", f"organization={organization}"])
    return True


def delete_account(name: str) -> bool:
    """Remove account ``name`` (for tests); True when it existed."""
    valid_account(name)
    if not account_exists(name):
        return False
    _write(["delete", "account", name])
    return True


# --- users and associations --------------------------------------------------------------------


def associations_argv(username: str) -> tuple[str, ...]:
    """``sacctmgr``'s argv listing ``username``'s associations, one ``user|account`` row each
    (sans-IO: the local Slurm client runs it too; sacctmgr has no JSON in 22.05)."""
    valid_user(username)
    where = ("where", f"user={username}", "format=user,account")
    return ("sacctmgr", "-n", "-P", "show", "association", *where)


def accounts_in(out: str, username: str) -> set[str]:
    """The accounts in ``sacctmgr``'s answer to :func:`associations_argv` (``-P`` rows of
    names only: the operator's, never a user's)."""
    return {row[1] for row in _rows(out) if len(row) > 1 and row[0] == username and row[1]}


def user_accounts(username: str) -> set[str]:
    """The accounts ``username`` has an association with (empty: they cannot submit)."""
    return accounts_in(sacctmgr(associations_argv(username)[1:]), username)


def default_account(username: str) -> str | None:
    """``username``'s default account, or None when Slurm does not know the user."""
    valid_user(username)
    out = sacctmgr(["-n", "-P", "show", "user", username, "format=user,defaultaccount"])
    for row in _rows(out):
        if len(row) > 1 and row[0] == username:
            return row[1] or None
    return None


def ensure_user_in_account(username: str, account: str, default: bool = False) -> bool:
    """Give ``username`` an association with ``account``; True when one was added.

    The user's first account becomes their default account; ``default=True`` makes ``account``
    the default even when the user already has others (one more write only when needed).
    """
    valid_user(username)
    valid_account(account)
    current = user_accounts(username)
    added = False
    if account not in current:
        args = ["add", "user", username, f"account={account}"]
        if default or not current:
            args.append(f"defaultaccount={account}")
        _write(args)
        added = True
    elif default and default_account(username) != account:
        _write(["modify", "user", "where", f"name={username}", "set", f"defaultaccount={account}"])
    return added


def remove_user_from_account(username: str, account: str) -> bool:
    """Drop the ``username`` ↔ ``account`` association (for tests); True when there was one.

    Removing a user's last association removes the user from Slurm too.
    """
    valid_user(username)
    valid_account(account)
    if account not in user_accounts(username):
        return False
    _write(["delete", "user", username, f"account={account}"])
    return True
