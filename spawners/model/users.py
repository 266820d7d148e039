"""What a user's name may be, and how settings name a user's paths.

:data:`POSIX_NAME_PATTERN` is the one rule for user and group names on the cluster (the site
file's schema uses the same string for ``$defs/posixName``; a unit test keeps them equal):
the sign-in refuses other names from the identity provider, trainers cannot add others.

:func:`fill_user_template` fills ``{home}`` and ``{username}`` in a site setting such as
``spawner.log_dir``. It replaces exactly those two placeholders in one pass and nothing
else: never ``str.format``, which would read ``{0}``, ``{x.attr}`` or stray braces in a
setting, and a filled-in value is never searched for placeholders again.
"""

from __future__ import annotations

import re

POSIX_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
POSIX_NAME = re.compile(POSIX_NAME_PATTERN)

_PLACEHOLDER = re.compile(r"\{(home|username)\}")


def is_posix_name(name: object) -> bool:
    """Whether ``name`` is a valid POSIX user or group name (at most 32 characters)."""
    return isinstance(name, str) and POSIX_NAME.fullmatch(name) is not None


def fill_user_template(template: str, *, username: str, home: str | None = None) -> str:
    """``template`` with ``{username}`` and, when ``home`` is given, ``{home}`` filled in.

    Without ``home`` a ``{home}`` stays as it is (for templates that may only name the user).
    """
    values = {"username": username} if home is None else {"username": username, "home": home}
    return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), template)
