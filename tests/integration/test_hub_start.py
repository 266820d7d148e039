"""A bad site file stops the real hub at start, naming the key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.support.hub import VENV_BIN, hub_config_path

from .hub_fixtures import write_site


def start_hub(site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FACTORYHUB_SITE_FILE=str(site))
    env.pop("FACTORYHUB_ADMIN_TOKEN_FILE", None)
    return subprocess.run(
        [str(VENV_BIN / "jupyterhub"), "-f", hub_config_path()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_site_file_stops_the_hub_and_names_the_keys(tmp_path: Path) -> None:
    site = write_site(tmp_path / "factory.yaml", tmp_path)
    data = yaml.safe_load(site.read_text())
    data["profiles"][0]["cpus"] = "two"
    data["profiles"][1]["gpu"] = 1
    data["slurm"]["partitions"][0]["name"] = "interactive; rm -rf /"
    site.write_text(yaml.safe_dump(data))
    result = start_hub(site, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the hub will not start" in result.stderr
    assert "profiles[0].cpus" in result.stderr
    assert 'profiles[1]: unknown key "gpu"' in result.stderr
    assert "slurm.partitions[0].name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "jupyterhub.sqlite").exists()


def test_missing_site_file_is_named(tmp_path: Path) -> None:
    result = start_hub(tmp_path / "nowhere.yaml", tmp_path)
    assert result.returncode == 2
    assert "nowhere.yaml" in result.stderr
