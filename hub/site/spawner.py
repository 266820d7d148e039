"""The site file's ``spawner`` section: the Python environment on the nodes, job logs, the
start timeout, Apptainer for profiles with an image, and the nodes' addresses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from factoryhub.spawners.model.users import fill_user_template


@dataclass(frozen=True)
class SpawnerSettings:
    python_env: str
    log_dir: str
    start_timeout: int
    # command, binds, python_env of profiles' images (spawners.apptainer.ApptainerSettings)
    apptainer: dict[str, Any]
    # node name -> the address the hub reaches it by (spawners.ready_address)
    node_addresses: dict[str, str]

    def log_dir_for(self, home: str, username: str) -> str:
        """``log_dir`` with ``{home}`` and ``{username}`` filled in."""
        return fill_user_template(self.log_dir, username=username, home=home)


def build_spawner(d: Mapping[str, Any]) -> SpawnerSettings:
    return SpawnerSettings(
        python_env=d["python_env"],
        log_dir=d["log_dir"],
        start_timeout=int(d["start_timeout"]),
        apptainer=dict(d["apptainer"]),
        node_addresses={n["node"]: n["address"] for n in d["node_addresses"]},
    )
