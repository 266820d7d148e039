"""The environment of a process the hub starts for a user (``runuser -u USER -- ...``).

The hub runs as root with secrets in its environment (service API tokens, the proxy's auth
token, database URLs). A process started as a user can be read by that user
(``/proc/<pid>/environ``), so it never inherits the hub's environment: it gets this explicit,
minimal one, plus only what the call itself needs (``extra``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The search path of every process started for a user: system folders only, none a user
#: can write to.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

#: Variables of the hub's own environment that Slurm's commands need to find the cluster
#: (paths, never secrets); passed on when set.
SLURM_VARS = ("SLURM_CONF",)


def minimal_env(username: str, home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH, HOME, USER, LOGNAME, LANG and SHELL of ``username``, plus ``extra``."""
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": home,
        "USER": username,
        "LOGNAME": username,
        "LANG": "C.UTF-8",
        "SHELL": "/bin/sh",
    }
    env.update(extra or {})
    return env


def slurm_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The :data:`SLURM_VARS` set in ``environ`` (default: this process's environment)."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in SLURM_VARS if source.get(name)}
