"""Collect a copy of every participant's course notebooks into the trainer's directory.

Each copy crosses between two users without root ever opening their files: the
participant's notebooks are packed *as the participant* (``pack``: only ``.ipynb`` files of
their course folder, regular files, no symbolic links, at most ``MAX_BYTES``) and unpacked
*as the trainer* (``unpack``: into ``<collect_dir>/<course>/<time>/<participant>/``, notebooks
only, never through a link). Both run with the user's minimal environment (never the
service's, which holds its API token). Command line (run through ``runuser`` by the
service)::

    python -m factoryhub.hub.courses.collect pack SOURCE      # tar on stdout
    python -m factoryhub.hub.courses.collect unpack TARGET    # tar on stdin
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from factoryhub.spawners import user_files
from factoryhub.spawners.user_env import minimal_env

MAX_BYTES = 256 * 1024 * 1024
NO_FOLDER = 3  # pack's exit status when the participant has no course folder
RUN_TIME_LIMIT = 120.0
SKIPPED_DIRS = {".ipynb_checkpoints", ".git", "__pycache__"}


@dataclass
class Collected:
    target: str
    copied: dict[str, int] = field(default_factory=dict)  # participant -> notebooks
    problems: dict[str, str] = field(default_factory=dict)  # participant -> why not


def pack(source: Path, out: IO[bytes]) -> int:
    """Write a tar of the notebooks under ``source`` to ``out``; returns how many."""
    count = total = 0
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for folder, dirs, files in os.walk(source, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                if not name.endswith(".ipynb"):
                    continue
                path = Path(folder) / name
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    continue
                total += info.st_size
                if total > MAX_BYTES:
                    raise SystemExit(f"more than {MAX_BYTES // 2**20} MB of notebooks")
                with open(path, "rb", opener=_nofollow) as handle:
                    entry = tar.gettarinfo(fileobj=handle, arcname=str(path.relative_to(source)))
                    entry.uid = entry.gid = 0
                    entry.uname = entry.gname = ""
                    tar.addfile(entry, handle)
                count += 1
    return count


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def unpack(target: Path, source: IO[bytes]) -> int:
    """Write the notebooks of the tar on ``source`` under ``target`` (regular files only, no
    absolute or ``..`` names, never through a link, never over an existing file): through
    :mod:`user_files`, relative to directory descriptors."""
    root_fd = user_files.open_dir(target.absolute(), create=0o700)
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if (
                    not member.isfile()
                    or name.suffix != ".ipynb"
                    or name.is_absolute()
                    or ".." in name.parts
                ):
                    continue
                data = tar.extractfile(member)
                assert data is not None
                count += _unpack_one(root_fd, name, data)
    finally:
        os.close(root_fd)
    return count


def _unpack_one(root_fd: int, name: PurePosixPath, data: IO[bytes]) -> int:
    try:
        dir_fd = user_files.open_subdir(root_fd, name.parts[:-1], create=0o700, follow=False)
    except user_files.UnsafePath:
        return 0
    try:
        return int(user_files.write_new(dir_fd, name.name, data, 0o600))
    finally:
        os.close(dir_fd)


async def _run(
    argv: Sequence[str], env: dict[str, str], data: bytes | None = None
) -> tuple[int, bytes, str]:
    """``argv`` with exactly ``env`` (a user can read their processes' environment: the
    service's token must not be in it); killed after ``RUN_TIME_LIMIT`` seconds with
    every process it started (its own process group)."""
    proc = await asyncio.create_subprocess_exec(
        shutil.which(argv[0]) or argv[0],
        *argv[1:],
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: a timeout ends all of it
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), RUN_TIME_LIMIT)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return 1, b"", f"no answer within {RUN_TIME_LIMIT:g} s"
    return proc.returncode or 0, out, err.decode(errors="replace").strip()


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (what runuser started, and their children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _as(user: str, argv: Sequence[str], home: str = "/") -> tuple[list[str], dict[str, str]]:
    """``argv`` run as ``user`` (runuser), with that user's minimal environment (``home``:
    the caller's, from the Slurm client or this host's passwd; this module asks neither)."""
    return ["runuser", "-u", user, "--", *argv], minimal_env(user, home)


def _why(rc: int, err: str) -> str:
    if rc == NO_FOLDER:
        return "no course folder yet (their server never started)"
    return err.splitlines()[-1] if err else f"exit {rc}"


async def collect(
    sources: dict[str, str],
    trainer: str,
    target: str,
    python: str = sys.executable,
    homes: Mapping[str, str] | None = None,
) -> Collected:
    """Copy the notebooks of each participant (name -> their course folder) into
    ``target/<participant>/`` as ``trainer``. The service never looks at the folders itself:
    the participant's side runs as the participant. ``homes``: each person's home (their
    processes' HOME; "/" for those missing)."""
    result = Collected(target)
    me = [python, "-m", "factoryhub.hub.courses.collect"]
    homes = homes or {}
    for participant, folder in sorted(sources.items()):
        pack_as = _as(participant, [*me, "pack", folder], homes.get(participant, "/"))
        rc, packed, err = await _run(*pack_as)
        if rc != 0:
            result.problems[participant] = _why(rc, err)
            continue
        unpack_argv = [*me, "unpack", str(Path(target) / participant)]
        argv, env = _as(trainer, unpack_argv, homes.get(trainer, "/"))
        rc, out, err = await _run(argv, env, packed)
        if rc != 0:
            result.problems[participant] = _why(rc, err)
            continue
        result.copied[participant] = int(out.decode().strip() or 0)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ("pack", "unpack"):
        print("usage: collect pack SOURCE | collect unpack TARGET", file=sys.stderr)
        return 2
    os.umask(0o077)
    if args[0] == "pack":
        if not Path(args[1]).is_dir():
            print(f"no course folder at {args[1]}", file=sys.stderr)
            return NO_FOLDER
        pack(Path(args[1]), sys.stdout.buffer)
    else:
        print(unpack(Path(args[1]), sys.stdin.buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
