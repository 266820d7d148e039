"""A run's outputs on disk, read by the service (root) from the directory of the user who ran
it: only regular files that user owns, never through a symbolic link, so a user cannot make
the service show them a file they could not read themselves."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_BYTES = 64 * 1024 * 1024


class OutputMissing(FileNotFoundError):
    """The output is not there (yet), or is not a file of the run's user."""


def read_owned(path: str | Path, uid: int, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of ``path`` when it is a regular file owned by ``uid``, reached without
    following a symbolic link at any step below the user's home."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise OutputMissing(f"{p.name}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            raise OutputMissing(f"{p.name} is not a file of the run's user")
        if info.st_size > max_bytes:
            raise OutputMissing(f"{p.name} is larger than {max_bytes // 2**20} MiB")
        if os.path.realpath(p.parent) != str(p.parent):
            raise OutputMissing(f"{p.parent} is reached through a symbolic link")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes + 1)
    finally:
        os.close(fd)


def log_tail(path: str | Path, uid: int, lines: int = 15) -> str:
    """The last ``lines`` lines of a run's Slurm log, or "" when it cannot be read."""
    try:
        text = read_owned(path, uid).decode(errors="replace")
    except OutputMissing:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
