"""A run's outputs on disk, read by the service (root) from the directory of the user who ran
it, through :mod:`factoryhub.spawners.user_files` (the one module that opens paths in a
user's home): only regular files that user owns, reached without following a link the user
made, never a FIFO or a device, at most ``MAX_BYTES``, in a thread. So a user cannot make the
service show them a file they could not read themselves, nor stall or exhaust it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from factoryhub.spawners.user_files import (
    UserFileError,
    last_lines,
    open_user_file,
    read_user_file_async,
)

MAX_BYTES = 64 * 1024 * 1024
# what the service reads back to learn how a run ended: a larger notebook fails its run
NOTEBOOK_MAX_BYTES = 16 * 1024 * 1024
LOG_TAIL_BYTES = 64 * 1024
READ_TIME_LIMIT = 30.0


class OutputMissing(FileNotFoundError):
    """The output is not there (yet), or is not a file of the run's user."""


async def read_owned(
    path: str | Path, uid: int, max_bytes: int = MAX_BYTES, tail: bool = False
) -> bytes:
    """The bytes of ``path`` when it is a regular file owned by ``uid`` (``tail``: its last
    ``max_bytes``; otherwise a larger file is refused)."""
    p = Path(path)
    if uid < 0:
        raise OutputMissing(f"{p.name}: the run's user is not known on this host")
    try:
        return await read_user_file_async(p, uid, max_bytes, tail=tail, time_limit=READ_TIME_LIMIT)
    except UserFileError as e:
        raise OutputMissing(f"{p.name}: {e.strerror}") from None
    except OSError as e:
        raise OutputMissing(f"{p.name}: {e.strerror or e}") from None


async def log_tail(path: str | Path, uid: int, lines: int = 15) -> str:
    """The last ``lines`` lines of a run's Slurm log, or "" when it cannot be read."""
    try:
        data = await read_owned(path, uid, LOG_TAIL_BYTES, tail=True)
    except OutputMissing:
        return ""
    return last_lines(data, lines)


async def is_owned_file(path: str | Path, uid: int) -> bool:
    """Whether ``path`` is a regular file of ``uid`` (reached as ``read_owned`` would); not
    a byte of it is read."""
    if uid < 0:
        return False

    def check() -> bool:
        try:
            fd = open_user_file(path, uid)
        except OSError:
            return False
        os.close(fd)
        return True

    try:
        return await asyncio.wait_for(asyncio.to_thread(check), READ_TIME_LIMIT)
    except TimeoutError:
        return False
