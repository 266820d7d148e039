"""Secret key files of the local Slurm (munge's key, the JWT key of slurmrestd's callers)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def create_key(path: Path, size: int, mode: int, owner: str) -> bool:
    """Write ``size`` random bytes to ``path`` (``owner``, ``mode`` from the start) unless it
    exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(size))
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return True
