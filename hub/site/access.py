"""Cross-key checks of the site file's Slurm access mode (``slurm.access``).

With ``rest`` the hub is no Slurm submit host (the hub on Kubernetes): nothing that must run
commands on the cluster's hosts as root can be switched on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_HOST_ONLY = (
    (
        ("slurm", "manage_associations"),
        'needs sacctmgr on the hub host, which the "rest" access mode does not have; '
        "manage the associations on the cluster and set it to false",
    ),
    (
        ("auth", "unix_users", "create"),
        'creates users on the hub host, which the "rest" access mode does not use; the '
        "cluster's users come from its own directory: set it to false",
    ),
)


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def access_problems(data: Any) -> list[tuple[str, str]]:
    """(key path, message) for settings the chosen access mode cannot carry out."""
    if _get(data, ("slurm", "access")) != "rest":
        return []
    return [(".".join(path), why) for path, why in _HOST_ONLY if _get(data, path) is True]
