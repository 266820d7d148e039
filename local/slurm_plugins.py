"""Which Debian package ships each Slurm plugin the local factory's configuration names.

A plugin Slurm cannot load stops its daemon ("cannot find auth plugin for auth/jwt"), and the
Debian packages split the plugins: most are in ``slurm-wlm-basic-plugins``, ``auth/jwt`` in
``slurm-wlm-jwt-plugin``, ``accounting_storage/mysql`` in ``slurm-wlm-mysql-plugin``.
``plugins_in_conf`` finds every plugin a slurm.conf / slurmdbd.conf names; the unit tests check
that each has an entry here whose package ``local/install.sh`` installs, and (where Slurm is
installed) that ``dpkg -S`` of its library names that package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Slurm 22.05's plugin types (the part before "/" in a plugin name; the library is
# <type>_<name>.so in Slurm's plugin directory).
PLUGIN_TYPES = frozenset(
    {
        "accounting_storage", "acct_gather_energy", "acct_gather_filesystem",
        "acct_gather_interconnect", "acct_gather_profile", "auth", "burst_buffer", "cgroup",
        "cli_filter", "core_spec", "cred", "crypto", "ext_sensors", "gpu", "gres", "hash",
        "job_container", "job_submit", "jobacct_gather", "jobcomp", "launch", "mcs", "mpi",
        "node_features", "openapi", "power", "preempt", "prep", "priority", "proctrack",
        "rest_auth", "route", "sched", "select", "serializer", "site_factor", "slurmctld",
        "switch", "task", "topology",
    }
)  # fmt: skip

# Keys whose value names a plugin without its type ("MpiDefault=none" is mpi/none).
BARE_NAME_KEYS = {"mpidefault": "mpi"}

_PLUGIN = re.compile(r"(?P<type>[a-z_]+)/(?P<name>[A-Za-z0-9_.]+)")


@dataclass(frozen=True)
class Plugin:
    package: str  # the Debian package that ships it
    library: str  # its file in Slurm's plugin directory


def _basic(plugin: str, library: str = "") -> Plugin:
    return Plugin("slurm-wlm-basic-plugins", library or default_library(plugin))


def default_library(plugin: str) -> str:
    """``auth/jwt`` → ``auth_jwt.so``; ``openapi/v0.0.38`` → ``openapi_v0_0_38.so``."""
    return plugin.replace("/", "_").replace(".", "_") + ".so"


PLUGINS: dict[str, Plugin] = {
    "auth/munge": _basic("auth/munge"),
    "auth/jwt": Plugin("slurm-wlm-jwt-plugin", "auth_jwt.so"),
    # Slurm 22.05 loads CryptoType=crypto/munge as the cred/munge plugin.
    "crypto/munge": _basic("crypto/munge", "cred_munge.so"),
    "accounting_storage/slurmdbd": _basic("accounting_storage/slurmdbd"),
    "accounting_storage/mysql": Plugin("slurm-wlm-mysql-plugin", "accounting_storage_mysql.so"),
    "jobacct_gather/linux": _basic("jobacct_gather/linux"),
    "jobcomp/none": _basic("jobcomp/none"),
    "select/cons_tres": _basic("select/cons_tres"),
    "sched/backfill": _basic("sched/backfill"),
    "proctrack/linuxproc": _basic("proctrack/linuxproc"),
    "task/none": _basic("task/none"),
    "mpi/none": _basic("mpi/none"),
    # slurmrestd's (local/slurmrestd.py: -s openapi/..., -a rest_auth/jwt)
    "openapi/v0.0.38": _basic("openapi/v0.0.38"),
    "openapi/dbv0.0.38": _basic("openapi/dbv0.0.38"),
    "rest_auth/jwt": _basic("rest_auth/jwt"),
}


def plugins_in_value(key: str, value: str) -> set[str]:
    """The plugins a ``key=value`` setting names (a value may be a comma-separated list)."""
    found = set()
    for item in value.split(","):
        item = item.strip()
        match = _PLUGIN.fullmatch(item)
        if match and match["type"] in PLUGIN_TYPES:
            found.add(item)
        elif key.lower() in BARE_NAME_KEYS and item and "/" not in item:
            found.add(f"{BARE_NAME_KEYS[key.lower()]}/{item}")
    return found


def plugins_in_conf(text: str) -> set[str]:
    """Every plugin a slurm.conf or slurmdbd.conf text names, in any ``Key=Value`` setting
    (lines hold one or more whitespace-separated settings; ``#`` starts a comment)."""
    found: set[str] = set()
    for line in text.splitlines():
        for setting in line.split("#", 1)[0].split():
            key, sep, value = setting.partition("=")
            if sep:
                found |= plugins_in_value(key, value)
    return found


def packages_for(plugins: set[str]) -> dict[str, str]:
    """Plugin → Debian package; KeyError naming the plugins this table does not know."""
    unknown = sorted(plugins - PLUGINS.keys())
    if unknown:
        raise KeyError(f"no Debian package known for Slurm plugin(s) {', '.join(unknown)}")
    return {plugin: PLUGINS[plugin].package for plugin in sorted(plugins)}
