"""The chart tests' fixture: the pinned helm binary (a missing helm fails, never skips)."""

from .helm_tools import helm  # noqa: F401
