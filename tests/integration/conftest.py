"""Fixtures of the integration tests: the real local Slurm, Unix users, a real hub, a real
OpenID Connect provider and the hub that signs in with it."""

from .hub_fixtures import hub  # noqa: F401
from .idp_fixtures import idp  # noqa: F401
from .oidc_fixtures import oidc_hub  # noqa: F401
from .slurm_fixtures import slurm, slurm_outage, unix_users  # noqa: F401
