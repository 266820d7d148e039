"""Which accounts a person from the identity provider may never become.

The IdP says who someone is; the cluster decides which Unix account that is. An identity
whose user name claim reads ``root``, ``daemon`` or the Reports service's account must not
sign in as it: sign-in would add that account to a project's Slurm account and run servers
(and, in the "rest" mode, mint Slurm tokens) as it. Two rules, both from the site file's
``auth.unix_users``: the names in ``reserved_names`` are refused outright, and an existing
account whose uid is below ``min_uid`` is a system account and refused too. Where the uid
comes from depends on the Slurm access mode: "local", this host's user database (the hub is
a submit host); "rest", Slurm's user record, never the hub's host (:func:`no_uid` at the
name check). slurmrestd 22.05's user records carry no uid, so there the reserved names are
the rule that holds: a site lists its system and service accounts in them.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Collection


class SystemAccountError(ValueError):
    """The name is reserved or belongs to a system account (the message says which)."""


def lookup_uid(username: str) -> int | None:
    """The uid of ``username`` on this host, or None where it has no such account."""
    try:
        return pwd.getpwnam(username).pw_uid
    except KeyError:
        return None


def no_uid(username: str) -> None:
    """No uid: the "rest" access mode, where this host's user database is not the cluster's
    (the uid rule then applies to Slurm's record of the user, where it has a uid)."""
    return None


def check_not_system_account(
    username: str,
    min_uid: int,
    reserved: Collection[str],
    uid_of: Callable[[str], int | None] = lookup_uid,
) -> None:
    """Raise :class:`SystemAccountError` when ``username`` is reserved or a system account."""
    if username in reserved:
        raise SystemAccountError(
            f"The user name {username!r} is reserved on this cluster (a system or service "
            "account), so nobody can sign in as it. If the identity provider really calls "
            "you that, ask the factory's support to change your user name there."
        )
    uid = uid_of(username)
    if uid is not None and uid < min_uid:
        raise SystemAccountError(
            f"The account {username!r} is a system account on this cluster (uid {uid}, below "
            f"{min_uid}), so nobody can sign in as it. Ask the factory's support to give you "
            "a personal user name at the identity provider."
        )
