"""Cross-key checks of the site file's Slurm access mode (``slurm.access``).

With ``rest`` the hub is no Slurm submit host (the hub on Kubernetes): nothing that must run
commands on the cluster's hosts as root can be switched on.
"""

from __future__ import annotations

from typing import Any

from factoryhub.hub.site.problems import Problem, at

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


def access_problems(data: Any) -> list[Problem]:
    """Settings the chosen access mode cannot carry out."""
    if at(data, "slurm", "access") != "rest":
        return []
    return [Problem(".".join(path), why) for path, why in _HOST_ONLY if at(data, *path) is True]
