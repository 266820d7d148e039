"""The site file's ``idle_culler`` section: jupyterhub-idle-culler's settings (the service
itself is made by :func:`factoryhub.hub.services.idle_culler_settings`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IdleCuller:
    """Stop servers idle for ``timeout`` seconds, checked every ``every`` seconds."""

    enabled: bool
    timeout: int
    every: int


def build_idle_culler(d: Mapping[str, Any]) -> IdleCuller:
    return IdleCuller(enabled=bool(d["enabled"]), timeout=int(d["timeout"]), every=int(d["every"]))
