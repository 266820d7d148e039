"""The hub's and its services' own state files (SQLite stores, logs): 0600 files in 0700
folders, whatever the umask and whatever an earlier version left behind."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: str | Path) -> Path:
    """``path`` made (with its parents) where missing, and mode 0700."""
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def private_file(path: str | Path) -> Path:
    """``path`` created empty where missing (never through a link), mode 0600, in a 0700
    folder; an existing file keeps its content."""
    file = Path(path)
    private_dir(file.parent)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return file
