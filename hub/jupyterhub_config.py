"""JupyterHub configuration of factoryhub: load the site file, set traits.

The site file is ``$FACTORYHUB_SITE_FILE`` (default: the packaged example). A bad
file stops the hub here with every bad key named.
"""

import os
import sys
from pathlib import Path

from jupyterhub.app import JupyterHub
from traitlets.config import Config

from factoryhub.hub.hub_config import SecretMissing, hub_settings
from factoryhub.hub.site.loader import SiteError, example_site_path, load_site
from factoryhub.spawners.private_state import private_file
from factoryhub.spawners.slurm.poller import PollerSettings, start_with_hub
from factoryhub.spawners.spawner import FactorySlurmSpawner

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - JupyterHub's loader injects it

_site_path = os.environ.get("FACTORYHUB_SITE_FILE") or str(example_site_path())
try:
    _site = load_site(_site_path)
except SiteError as _error:
    print(
        f"factoryhub: the site file is not valid, the hub will not start.\n{_error}",
        file=sys.stderr,
    )
    sys.exit(2)

try:
    _settings = hub_settings(_site, os.environ, site_file=str(Path(_site_path).resolve()))
    c.merge(Config(_settings))
except SecretMissing as _error:
    print(f"factoryhub: the hub will not start.\n{_site_path}: {_error}", file=sys.stderr)
    sys.exit(2)

# JupyterHub creates its SQLite database with the umask's mode (not set here: Slurm hands
# the submitter's umask on to users' jobs): make it private first.
_db_url = _settings["JupyterHub"]["db_url"]
if _db_url.startswith("sqlite:///"):
    private_file(_db_url.removeprefix("sqlite:///"))

# The one thing this file starts rather than sets: the shared Slurm poller must run from
# the hub's start (orphans of a crashed hub have no server to wake it). It is built from the
# spawner's settings as the hub ends up configured (a config file may load this one and set
# more, the command prefix and time-out too), the same ones every spawner's poller_for gets.


def _poller_settings() -> PollerSettings:
    config = JupyterHub.instance().config if JupyterHub.initialized() else c
    return PollerSettings.of(FactorySlurmSpawner(config=config))


start_with_hub(_poller_settings)
