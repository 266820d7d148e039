"""Which Slurm client the hub uses: the site's ``slurm.access`` mode made concrete.

- ``local``: :class:`~.local.LocalSlurmClient`, Slurm's commands on the hub host,
  run as the user through ``user_prefix`` (the hub is a submit host and runs as root).
- ``rest``: :class:`~.rest.RestSlurmClient`, slurmrestd with a JWT per user (the hub
  on Kubernetes); ``rest`` holds the site file's ``slurm.rest`` settings.

The spawner, the shared poller, the Reports and the Courses services all get their client
here, so one site setting switches all of them; what they may ask of it is the
:class:`~.client.SlurmClient` Protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from factoryhub.spawners.slurm.client import SlurmClient
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.slurm.rest import RestSlurmClient

ACCESS_MODES = ("local", "rest")
DEFAULT_USER_PREFIX = ("runuser", "-u", "{username}", "--")


def make_client(
    access: str = "local",
    rest: Mapping[str, Any] | None = None,
    user_prefix: Sequence[str] = DEFAULT_USER_PREFIX,
    timeout: float = 30.0,
) -> SlurmClient:
    """The client of access mode ``access``."""
    if access == "local":
        return LocalSlurmClient(user_prefix, timeout)
    if access == "rest":
        rest = dict(rest or {})
        if not rest.get("url") or not rest.get("key_file"):
            raise ValueError('the "rest" access mode needs slurm.rest.url and key_file')
        # The site's slurm.rest with the schema's defaults filled in (with_defaults): no
        # default is restated here.
        return RestSlurmClient(
            url=rest["url"],
            key_file=rest["key_file"],
            api_version=rest["api_version"],
            token_lifetime=int(rest["token_lifetime"]),
            home=rest["home"],
            query_user=rest["query_user"],
            timeout=float(rest["timeout"]),
        )
    raise ValueError(f"unknown Slurm access mode {access!r}: one of {', '.join(ACCESS_MODES)}")
