"""Which identity at the provider owns which account: bound on first sign-in, then kept.

The provider's user name claim (``preferred_username``) can change: a person renames
themselves, an account is deleted and the name registered again by someone else. The
``sub`` claim (with the issuer) is the provider's stable identifier of one identity. On the
first sign-in to an account the hub records (issuer, sub) for it; later sign-ins to that
account must come from the same identity, and one identity holds one account only.

The store is a small SQLite file in the hub's state folder, 0600 like every state file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    username TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    bound_at REAL NOT NULL,
    UNIQUE (issuer, subject)
)
"""


class IdentityConflict(PermissionError):
    """The sign-in's identity and the account's bound identity differ (message for people)."""


class IdentityStore:
    """The (issuer, sub) bound to each account."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            # created private: it says who is who at the provider
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path, timeout=10)
        db.execute(SCHEMA)
        return db

    def bound(self, username: str) -> tuple[str, str] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT issuer, subject FROM identities WHERE username = ?", (username,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def bind(self, username: str, issuer: str, subject: str) -> bool:
        """Accept the sign-in of (issuer, subject) as ``username``; True on the first one.
        Raises :class:`IdentityConflict` when the account belongs to another identity or
        the identity already has another account."""
        if not subject:
            raise IdentityConflict(
                "The identity provider sent no subject (sub) for you, so the hub cannot tell "
                "whose account this is. Ask the factory's support."
            )
        db = self._connect()
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                owner = db.execute(
                    "SELECT issuer, subject FROM identities WHERE username = ?", (username,)
                ).fetchone()
                if owner is not None:
                    if tuple(owner) != (issuer, subject):
                        raise IdentityConflict(
                            f"The account {username!r} belongs to another identity at the "
                            "sign-in service than the one you signed in with (accounts are "
                            "bound to the identity that first used them). If the account is "
                            "yours and your identity changed, ask the factory's support."
                        )
                    return False
                other = db.execute(
                    "SELECT username FROM identities WHERE issuer = ? AND subject = ?",
                    (issuer, subject),
                ).fetchone()
                if other is not None:
                    raise IdentityConflict(
                        f"Your identity at the sign-in service is bound to the account "
                        f"{other[0]!r}, but it now calls you {username!r}. One identity has one "
                        "account here: ask the factory's support to move it."
                    )
                db.execute(
                    "INSERT INTO identities (username, issuer, subject, bound_at) "
                    "VALUES (?, ?, ?, ?)",
                    (username, issuer, subject, time.time()),
                )
                return True
        finally:
            db.close()
