"""The integration tests' hub: factoryhub's own ``jupyterhub_config.py`` with a test site
file on its own loopback ports, as root, spawning into the real local Slurm (run by
``tests.support.hub.RunningHub``, the runner the benchmarks use too)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.hub import RunningHub, local_signin, site_for

# (public, hub API, proxy API) ports: the OIDC hub's public port matches the test IdP
# client's redirect URI (idp_fixtures.HUB_CALLBACK).
LOCAL_HUB_PORTS = (18200, 18281, 18201)
OIDC_HUB_PORTS = (18000, 18081, 18001)


def write_site(
    path: Path, state_dir: Path, ports: tuple[int, int, int] = LOCAL_HUB_PORTS, **overrides: Any
) -> Path:
    """The example site file for a test hub with local (PAM) sign-in and no projects (the
    tests of the spawner itself; the OIDC hub with projects is ``oidc_hub``); ``overrides``
    replace top-level sections."""
    site = local_signin(site_for(state_dir, ports))
    site["slurm"]["orphan_grace"] = 15  # the orphan tests wait for it
    for key, value in overrides.items():
        site[key] = value
    path.write_text(yaml.safe_dump(site))
    return path


@pytest.fixture(scope="session")
def hub(slurm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("hub-state")
    state.chmod(0o700)
    site = write_site(state / "factory.yaml", state)
    running = RunningHub(
        state_dir=state,
        site_file=site,
        token=secrets.token_hex(32),
        log_path=RunningHub.artifacts() / "hub.log",
        url=f"http://127.0.0.1:{LOCAL_HUB_PORTS[0]}",
    )
    running.start()
    yield running
    running.stop()
