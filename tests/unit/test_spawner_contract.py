"""The spawner's contract with batchspawner: the req_* traits it honours, and every other
batchspawner setting refused at construction with a message naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from batchspawner import SlurmSpawner
from jupyterhub.objects import Hub
from jupyterhub.spawner import Spawner
from traitlets.config import Config

from factoryhub.hub.site import loader as site
from factoryhub.spawners import contract
from factoryhub.spawners.contract import RefusedSetting
from factoryhub.spawners.model.profiles import load_profiles
from factoryhub.spawners.options import validate_options
from factoryhub.spawners.spawner import FactorySlurmSpawner

PROFILES = [p.to_config() for p in site.load_site(site.example_site_path()).profiles]


def configured(section: str, name: str, value: object) -> Config:
    config = Config()
    config[section][name] = value
    return config


@pytest.mark.parametrize("section", ["FactorySlurmSpawner", "SlurmSpawner", "BatchSpawnerBase"])
@pytest.mark.parametrize("name", sorted(contract.REFUSED))
def test_a_refused_setting_stops_the_spawner_naming_it(section: str, name: str) -> None:
    value = {"cmd": ["jupyterhub-singleuser"]}.get(
        name, SlurmSpawner.class_traits()[name].default_value
    )
    with pytest.raises(RefusedSetting) as refused:
        FactorySlurmSpawner(config=configured(section, name, value))
    assert str(refused.value) == (
        f"c.{section}.{name} cannot be configured with factoryhub's spawner: "
        f"{contract.REFUSED[name]}"
    )


def test_what_factoryhub_uses_instead_is_said() -> None:
    config = configured("SlurmSpawner", "batch_script", "#!/bin/sh\n{cmd}\n")
    config.Spawner.cmd = ["jupyterhub-singleuser"]
    with pytest.raises(RefusedSetting) as refused:
        FactorySlurmSpawner(config=config)
    text = str(refused.value)
    assert "c.SlurmSpawner.batch_script" in text and "extra_sbatch_options" in text
    assert "c.Spawner.cmd" in text and "factoryhub-singleuser" in text
    with pytest.raises(RefusedSetting, match=r"^exec_prefix .*user_command_prefix"):
        FactorySlurmSpawner(exec_prefix="sudo -E -u {username}")
    with pytest.raises(RefusedSetting, match=r"req_partition .*profiles\[\]\.partition"):
        FactorySlurmSpawner(config=configured("FactorySlurmSpawner", "req_partition", "gpu"))


def test_the_honoured_settings_reach_the_job_script() -> None:
    config = Config()
    config.FactorySlurmSpawner.req_qos = "interactive"
    config.SlurmSpawner.req_keepvars_extra = "SLURM_CONF"
    config.Spawner.start_timeout = 900
    spawner = FactorySlurmSpawner(config=config, profiles=PROFILES, hub=Hub())
    spawner.user = SimpleNamespace(name="root", groups=[], spawners={}, url="/user/root/")
    spawner._apply_user_options(spawner, {"profile": "cpu-small"})
    script = spawner.job_script()
    assert "#SBATCH --qos=interactive\n" in script
    assert ",SLURM_CONF\n" in script.split("#SBATCH --export=")[1].split("#SBATCH")[0]
    assert "#SBATCH --partition=interactive\n#SBATCH --time=02:00:00\n" in script
    assert spawner.start_timeout == 900


def test_every_batchspawner_setting_is_honoured_or_refused() -> None:
    """A batchspawner release that adds a setting fails here until it is placed."""
    jupyterhubs = Spawner.class_traits(config=True)
    batchspawners = {
        name
        for name, trait in SlurmSpawner.class_traits(config=True).items()
        if trait is not jupyterhubs.get(name)
    }
    honoured = set(contract.FROM_CONFIG) | {"start_timeout"}  # JupyterHub's, a new default
    assert batchspawners - honoured == batchspawners & set(contract.REFUSED)
    assert set(contract.FROM_REQUEST) <= set(contract.REFUSED)
    computed = set(SlurmSpawner.class_traits()) - set(SlurmSpawner.class_traits(config=True))
    assert set(contract.COMPUTED) <= computed


def test_a_checked_request_sets_exactly_the_request_traits() -> None:
    request = validate_options({"profile": "gpu-1"}, load_profiles(PROFILES))
    values = contract.req_values(request, None)
    assert set(values) == set(contract.FROM_REQUEST)
    assert values == {
        "req_partition": "batch",
        "req_nprocs": "8",
        "req_memory": "16G",
        "req_runtime": "04:00:00",
        "req_gres": "gpu:1",
        "req_account": "",
        "req_reservation": "",
    }
