"""Fixtures of the integration tests: the real local Slurm, Unix users, a real hub."""

from .hub_fixtures import hub  # noqa: F401
from .slurm_fixtures import slurm, slurm_outage, unix_users  # noqa: F401
