"""The Debian packages install.sh installs cover every Slurm plugin the local factory's
slurm.conf and slurmdbd.conf name (a missing plugin package kills slurmctld/slurmdbd on a
fresh machine), and the plugin → package table matches what dpkg says where Slurm is installed."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest

from factoryhub.local import debian_packages, slurm, slurm_plugins, slurmrestd
from factoryhub.local.slurm_plugins import PLUGINS, plugins_in_conf

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "local" / "install.sh"


def install_sh_packages(*args: str) -> list[str]:
    """The Debian packages `local/install.sh [args]` would make sure of (it lists them)."""
    out = subprocess.run(
        ["bash", str(INSTALL_SH), *args, "--list-packages"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.split()


def conf_plugins() -> set[str]:
    """Every plugin the generated configuration names: slurm.conf, slurmdbd.conf and
    slurmrestd's command line."""
    found = plugins_in_conf(slurm.render_conf()) | plugins_in_conf(slurm.render_dbd_conf("x"))
    return found | set(slurmrestd.PLUGINS.split(",")) | {slurmrestd.AUTH_PLUGIN}


def test_install_sh_lists_the_module_packages() -> None:
    up = install_sh_packages()
    assert up == debian_packages.packages("up")
    assert install_sh_packages("--test") == debian_packages.packages("up", "test")
    assert {"slurm-wlm", "munge", "slurmdbd", "slurmrestd", "mariadb-server"} <= set(up)


def test_conf_plugins_found_generically() -> None:
    found = conf_plugins()
    # what slurm.conf / slurmdbd.conf say today; the derivation must see each of them
    assert {
        "auth/munge", "auth/jwt", "crypto/munge", "accounting_storage/slurmdbd",
        "accounting_storage/mysql", "jobacct_gather/linux", "jobcomp/none", "select/cons_tres",
        "sched/backfill", "proctrack/linuxproc", "task/none", "mpi/none",
    } <= found  # fmt: skip
    # paths, parameters and non-plugin lists are not plugins
    assert all("/" in p and not p.startswith("/") for p in found)


def test_every_conf_plugin_has_its_package_in_install_sh() -> None:
    up = set(install_sh_packages())
    plugins = conf_plugins()
    unknown = sorted(plugins - PLUGINS.keys())
    assert not unknown, f"add these plugins to factoryhub.local.slurm_plugins.PLUGINS: {unknown}"
    missing = {p: PLUGINS[p].package for p in plugins if PLUGINS[p].package not in up}
    assert not missing, f"install.sh's `up` packages lack what these plugins need: {missing}"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("AuthType", "auth/munge", {"auth/munge"}),
        ("TaskPlugin", "task/affinity,task/cgroup", {"task/affinity", "task/cgroup"}),
        ("MpiDefault", "none", {"mpi/none"}),
        ("MpiDefault", "pmix", {"mpi/pmix"}),
        ("StateSaveLocation", "/var/lib/slurm/state", set()),
        ("AuthAltParameters", "jwt_key=/var/lib/factoryhub/slurm/jwt_hs256.key", set()),
        ("AccountingStorageEnforce", "associations,limits,qos", set()),
        ("SchedulerParameters", "batch_sched_delay=0", set()),
        ("SlurmctldHost", "node(127.0.0.1)", set()),
        ("Include", "conf.d/extra.conf", set()),  # "conf.d" is not a plugin type
    ],
)
def test_plugins_in_value(key: str, value: str, expected: set[str]) -> None:
    assert slurm_plugins.plugins_in_value(key, value) == expected


def test_plugins_in_conf_reads_every_setting_of_a_line() -> None:
    text = "# SelectType=select/linear\nNodeName=n1 CPUs=2\nSelectType=select/cons_tres # x\n"
    assert plugins_in_conf(text) == {"select/cons_tres"}
    assert plugins_in_conf("PartitionName=p Nodes=n1 State=UP\n") == set()


def test_packages_for_names_unknown_plugins() -> None:
    assert slurm_plugins.packages_for({"auth/jwt"}) == {"auth/jwt": "slurm-wlm-jwt-plugin"}
    with pytest.raises(KeyError, match="auth/bogus"):
        slurm_plugins.packages_for({"auth/jwt", "auth/bogus"})


def _dpkg_owner(library: str) -> str:
    """The package dpkg says ships ``library`` in Slurm's plugin directory."""
    path = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/slurm-wlm/{library}"
    assert Path(path).is_file(), f"{path} is not installed"
    out = subprocess.run(
        ["dpkg-query", "-S", path], capture_output=True, text=True, check=True, timeout=30
    )
    owner, _, owned = out.stdout.strip().partition(": ")
    assert owned == path, out.stdout
    return owner


@pytest.mark.slurm
@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_table_matches_dpkg(plugin: str) -> None:
    assert _dpkg_owner(PLUGINS[plugin].library) == PLUGINS[plugin].package


@pytest.mark.slurm
def test_plugin_types_cover_the_installed_plugins() -> None:
    """Every installed plugin library's name starts with a known type (so the generic
    derivation does not miss a kind of plugin)."""
    folder = Path(f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/slurm-wlm")
    names = [p.stem for p in folder.glob("*.so") if not p.stem.startswith("lib")]
    assert names
    others = {"spank_pbs"}  # a SPANK plugin (plugstack.conf), not a slurm.conf setting
    untyped = [
        n
        for n in names
        if n not in others and not any(n.startswith(t + "_") for t in slurm_plugins.PLUGIN_TYPES)
    ]
    assert not untyped
