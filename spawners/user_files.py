"""The one way factoryhub touches a path in a user's home, log folder or course folder.

Users control those paths: any name in them may be a symbolic link to a file only root may
read, a FIFO that blocks whoever opens it, or a link to ``/dev/zero``. So:

- **As root, reading** (the Reports service reading a run's outputs): ``read_user_file``
  walks the path from ``/`` one component at a time, each directory opened relative to the
  previous one with ``O_NOFOLLOW | O_DIRECTORY``. A symbolic link on the way is followed only
  where it lies in a directory nobody but root (or the caller) may write, such as an
  operator's ``/home -> /data/home``; never one a user made. The file itself is opened with
  ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the open), its type and owner are checked
  with ``fstat`` *after* opening, and at most ``max_bytes`` are read, in a thread
  (``read_user_file_async``), never on an event loop.
- **As the user** (the spawner showing a failed job's log): ``read_tail_as_user`` runs
  ``tail -c`` through the site's user prefix (``runuser -u USER --``) with a minimal
  environment, a size cap and a timeout. What comes back is what the user could read anyway.
- **Writing** happens only in processes that already run as the user (the server job copying
  templates, writing Dask's configuration, delivering course materials; the trainer's side of
  a collect): ``open_dir``/``open_subdir`` create and open directories relative to directory
  descriptors, ``write_new`` and ``write_replace`` never write through a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from factoryhub.spawners.model.users import fill_user_template
from factoryhub.spawners.user_env import minimal_env

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 40
DEFAULT_MAX_BYTES = 1024 * 1024
USER_PREFIX = ("runuser", "-u", "{username}", "--")
AS_USER_TIMEOUT = 5.0
CHUNK = 1 << 16

SKIPPED = {"__init__.py", "__pycache__"}
# courses/ arrive through their course (spawners.materials), not with the templates
SKIPPED_TOP = {"courses"}
TEMPLATES_FOLDER = "factoryhub-templates"


class UnsafePath(OSError):
    """Refused: the path leads through a user's link, is not a regular file of the expected
    owner, or is larger than allowed."""


class UserFileError(OSError):
    """A read as the user failed or did not answer in time."""


# ---------------------------------------------------------------------- walking paths


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _trusted(dir_fd: int) -> bool:
    """Only root (or this process's own user) may change the directory's entries."""
    info = os.fstat(dir_fd)
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & 0o022


def _link_target(dir_fd: int, name: str, shown: str, follow: bool = True) -> str:
    """The target of the link ``name`` in ``dir_fd``, when it may be followed."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        raise UnsafePath(errno.ENOTDIR, "not a directory", shown)
    if not follow:
        raise UnsafePath(errno.ELOOP, "a symbolic link", shown)
    if not _trusted(dir_fd):
        raise UnsafePath(errno.ELOOP, "a symbolic link in a folder a user controls", shown)
    return os.readlink(name, dir_fd=dir_fd)


def _open_child(dir_fd: int, name: str, create: int | None) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if create is None:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, create, dir_fd=dir_fd)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_subdir(
    dir_fd: int,
    parts: Iterable[str],
    create: int | None = None,
    shown: str = "",
    follow: bool = True,
) -> int:
    """A new descriptor of the directory ``parts`` below ``dir_fd``, each step opened with
    ``O_NOFOLLOW``; missing ones are made with mode ``create`` (None: not made). Links are
    followed only in directories only root or this process's user may write, and with
    ``follow=False`` never."""
    pending = list(reversed([p for p in parts if p not in ("", ".")]))
    fd, hops = os.dup(dir_fd), 0
    try:
        while pending:
            part = pending.pop()
            try:
                child = _open_child(fd, part, create)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                target = _link_target(fd, part, shown or part, follow)
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise UnsafePath(errno.ELOOP, "too many symbolic links", shown) from None
                if target.startswith("/"):
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", DIR_FLAGS)
                pending.extend(reversed(_parts(target)))
                continue
            os.close(fd)
            fd = child
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def open_dir(path: str | Path, create: int | None = None) -> int:
    """A descriptor of the directory ``path`` (absolute), walked from ``/``."""
    text = os.fspath(path)
    if not text.startswith("/"):
        raise UnsafePath(errno.EINVAL, "not an absolute path", text)
    root = os.open("/", DIR_FLAGS)
    try:
        return open_subdir(root, _parts(text), create, shown=text)
    finally:
        os.close(root)


def _split(path: str | Path) -> tuple[str, str]:
    text = os.fspath(path)
    parent, _, name = text.rstrip("/").rpartition("/")
    if not text.startswith("/") or name in ("", ".", ".."):
        raise UnsafePath(errno.EINVAL, "not an absolute path to a file", text)
    return parent or "/", name


def open_user_file(path: str | Path, owner: int | None) -> int:
    """A read-only descriptor of the regular file ``path``, owned by ``owner`` (None: anyone),
    reached without following a link a user made; the file itself is never a link."""
    parent, name = _split(path)
    dir_fd = open_dir(parent)
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "a symbolic link", os.fspath(path)) from None
        raise
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif owner is not None and info.st_uid != owner:
        problem = "not a file of its user"
    if problem:
        os.close(fd)
        raise UnsafePath(errno.EPERM, problem, os.fspath(path))
    return fd


# ---------------------------------------------------------------------- reading as root


def _read_at_most(fd: int, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    left = max_bytes
    while left > 0:
        chunk = os.read(fd, min(left, CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_user_file(
    path: str | Path, owner: int | None, max_bytes: int = DEFAULT_MAX_BYTES, tail: bool = False
) -> bytes:
    """The bytes of the regular file ``path`` of ``owner`` (see ``open_user_file``). A file
    larger than ``max_bytes`` is refused, or with ``tail`` its last ``max_bytes`` are read."""
    fd = open_user_file(path, owner)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            if not tail:
                raise UnsafePath(errno.EFBIG, f"larger than {max_bytes} bytes", os.fspath(path))
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
        return _read_at_most(fd, max_bytes)
    finally:
        os.close(fd)


async def read_user_file_async(
    path: str | Path,
    owner: int | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    tail: bool = False,
    time_limit: float = 30.0,
) -> bytes:
    """``read_user_file`` in a thread, so an event loop never waits on a user's file."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(read_user_file, path, owner, max_bytes, tail), time_limit
        )
    except TimeoutError:
        raise UserFileError(
            errno.ETIMEDOUT, f"no answer within {time_limit:g} s", str(path)
        ) from None


# ---------------------------------------------------------------------- reading as the user


async def _read_capped(stream: asyncio.StreamReader, max_bytes: int) -> bytes:
    data = bytearray()
    while len(data) < max_bytes:
        chunk = await stream.read(min(CHUNK, max_bytes - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Stop ``proc``: SIGTERM first (runuser passes it on to the command, which runs in a
    session of its own), SIGKILL after a second."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
            return


async def read_tail_as_user(
    username: str,
    home: str,
    path: str,
    max_bytes: int = 16 * 1024,
    time_limit: float = AS_USER_TIMEOUT,
    prefix: Sequence[str] = USER_PREFIX,
) -> bytes:
    """The last ``max_bytes`` of the regular file ``path`` as ``username`` reads it (``tail -c``
    run through ``prefix``, with a minimal environment); :class:`UserFileError` when that
    fails (not a regular file, not readable) or takes longer than ``time_limit`` seconds."""
    argv = [fill_user_template(p, username=username) for p in prefix]
    # only a regular file (a FIFO or a device is refused at once; one swapped in after the
    # test runs into the timeout)
    argv += ["sh", "-c", 'test -f "$1" && exec tail -c "$2" -- "$1"', "sh", path, str(max_bytes)]
    proc = await asyncio.create_subprocess_exec(
        shutil.which(argv[0]) or argv[0],
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=minimal_env(username, home),
    )
    assert proc.stdout is not None
    stdout = proc.stdout

    async def collect() -> tuple[bytes, int]:
        data = await _read_capped(stdout, max_bytes)
        if len(data) >= max_bytes:  # all that was asked for (and /dev/zero never ends)
            await _end(proc)
            return data, 0
        return data, await proc.wait()

    try:
        data, code = await asyncio.wait_for(collect(), time_limit)
    except TimeoutError:
        await _end(proc)
        raise UserFileError(errno.ETIMEDOUT, f"no answer within {time_limit:g} s", path) from None
    except BaseException:
        await _end(proc)
        raise
    if code != 0:
        raise UserFileError(errno.EACCES, f"{username} cannot read it", path)
    return data


def printable(data: bytes) -> str:
    """``data`` as text with control characters (terminal escapes) replaced, newlines and
    tabs kept."""
    text = data.decode(errors="replace")
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def last_lines(data: bytes, lines: int) -> str:
    return "\n".join(printable(data).rstrip().splitlines()[-lines:])


# ---------------------------------------------------------------------- writing (as the user)


def write_new(dir_fd: int, name: str, data: IO[bytes], mode: int = 0o644) -> bool:
    """Create ``name`` in ``dir_fd`` with ``data``; False when something is there already (a
    file, a link: never written through)."""
    try:
        fd = os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        return False
    with open(fd, "wb") as out:
        shutil.copyfileobj(data, out, CHUNK)
    return True


def write_replace(dir_fd: int, name: str, data: IO[bytes], mode: int, durable: bool = False) -> str:
    """``data`` into ``name`` in ``dir_fd`` through a temporary file beside it and
    ``os.replace`` (a link at ``name`` is replaced, never followed); returns the sha256."""
    import hashlib

    tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
    digest = hashlib.sha256()
    try:
        with open(os.open(tmp, NEW_FILE_FLAGS, mode, dir_fd=dir_fd), "wb") as out:
            while chunk := data.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return digest.hexdigest()


def copy_new_files(source: Path, target: Path) -> list[Path]:
    """Copy every file under ``source`` that ``target`` does not have yet; never overwrite
    (the user's edits stay), never write through a link. Returns the files copied."""
    copied: list[Path] = []
    root = open_dir(target.absolute(), create=0o755)
    try:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if SKIPPED.intersection(relative.parts) or relative.parts[0] in SKIPPED_TOP:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            dir_fd = open_subdir(root, relative.parts[:-1], create=0o755, shown=str(relative))
            try:
                with path.open("rb") as data:
                    if write_new(dir_fd, relative.name, data, 0o644):
                        copied.append(target / relative)
            finally:
                os.close(dir_fd)
    finally:
        os.close(root)
    return copied


def copy_templates(home: Path) -> list[Path]:
    """The template notebooks into ``~/factoryhub-templates`` (new files only)."""
    try:
        from factoryhub.notebooks import templates_dir
    except ImportError:  # an environment without the templates
        return []
    return copy_new_files(templates_dir(), home / TEMPLATES_FOLDER)
