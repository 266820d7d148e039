"""JupyterHub config for the spawn-latency benchmark's baseline: stock batchspawner.

``SlurmSpawner`` with its default settings (job script with ``--get-user-env=L`` and
``srun``, the hub's own readiness back-off). Only what is needed to run here at all is
changed: no sudo on this machine (``runuser``), absolute commands from the venv (the
job's environment does not carry PATH), the partition, and ``/lab`` as default URL.

``benchmarks/spawn_latency.py`` starts it with these environment variables:

- ``FHBENCH_STATE_DIR``: SQLite database, cookie secret, proxy pid file
- ``FHBENCH_PUBLIC_PORT``, ``FHBENCH_API_PORT``, ``FHBENCH_PROXY_API_PORT``: loopback ports
- ``FHBENCH_ADMIN_TOKEN_FILE``: the admin API token, registered as a service
- ``FHBENCH_VENV``: the Python environment holding batchspawner and JupyterLab
- ``FHBENCH_PROXY_CMD``: configurable-http-proxy
"""

import os
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - JupyterHub's loader injects it

_state = Path(os.environ["FHBENCH_STATE_DIR"])
_venv_bin = Path(os.environ.get("FHBENCH_VENV", "/opt/factoryhub/venv")) / "bin"

c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ['FHBENCH_PUBLIC_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ['FHBENCH_API_PORT']}"
c.JupyterHub.db_url = f"sqlite:///{_state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(_state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['FHBENCH_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.pid_file = str(_state / "proxy.pid")
if os.environ.get("FHBENCH_PROXY_CMD"):
    c.ConfigurableHTTPProxy.command = [os.environ["FHBENCH_PROXY_CMD"]]

# Spawns go through the API with the admin service token: any authenticator will do.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

_token = Path(os.environ["FHBENCH_ADMIN_TOKEN_FILE"]).read_text().strip()
c.JupyterHub.services = [{"name": "fhbench-operator", "api_token": _token}]
c.JupyterHub.load_roles = [
    {
        "name": "fhbench-operator",
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:hub"],
        "services": ["fhbench-operator"],
    }
]

# Stock batchspawner, default settings but for what this machine needs.
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.BatchSpawnerBase.exec_prefix = "runuser -u {username} --"
c.BatchSpawnerBase.batchspawner_singleuser_cmd = str(_venv_bin / "batchspawner-singleuser")
c.Spawner.cmd = [str(_venv_bin / "jupyterhub-singleuser")]
c.BatchSpawnerBase.req_partition = "interactive"
c.Spawner.default_url = "/lab"
