"""Collect a copy of every participant's course notebooks into the trainer's directory.

Each copy crosses between two users without root ever opening their files: the
participant's notebooks are packed *as the participant* (``pack``: only ``.ipynb`` files of
their course folder, regular files, no symbolic links, at most ``MAX_BYTES``) and unpacked
*as the trainer* (``unpack``: into ``<collect_dir>/<course>/<time>/<participant>/``, notebooks
only, never through a link). Command line (run through ``runuser`` by the service)::

    python -m factoryhub.hub.courses.collect pack SOURCE      # tar on stdout
    python -m factoryhub.hub.courses.collect unpack TARGET    # tar on stdin
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_BYTES = 256 * 1024 * 1024
SKIPPED_DIRS = {".ipynb_checkpoints", ".git", "__pycache__"}


@dataclass
class Collected:
    target: str
    copied: dict[str, int] = field(default_factory=dict)  # participant -> notebooks
    problems: dict[str, str] = field(default_factory=dict)  # participant -> why not


def pack(source: Path, out: io.BufferedIOBase) -> int:
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


def unpack(target: Path, source: io.BufferedIOBase) -> int:
    """Write the notebooks of the tar on ``source`` under ``target`` (regular files only, no
    absolute or ``..`` names, never through a link, never over an existing file)."""
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    count = 0
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
            destination = target.joinpath(*name.parts)
            destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if any(p.is_symlink() for p in destination.parents if p.is_relative_to(target)):
                continue
            data = tar.extractfile(member)
            assert data is not None
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(destination, flags, 0o600), "wb") as out:
                shutil.copyfileobj(data, out)
            count += 1
    return count


async def _run(argv: Sequence[str], data: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(data), timeout=120)
    return proc.returncode or 0, out, err.decode(errors="replace").strip()


async def collect(
    sources: dict[str, str], trainer: str, target: str, python: str = sys.executable
) -> Collected:
    """Copy the notebooks of each participant (name -> their course folder) into
    ``target/<participant>/`` as ``trainer``."""
    result = Collected(target)
    me = [python, "-m", "factoryhub.hub.courses.collect"]
    for participant, folder in sorted(sources.items()):
        if not await asyncio.to_thread(Path(folder).is_dir):
            result.problems[participant] = "no course folder yet (their server never started)"
            continue
        rc, packed, err = await _run(["runuser", "-u", participant, "--", *me, "pack", folder])
        if rc != 0:
            result.problems[participant] = err.splitlines()[-1] if err else f"exit {rc}"
            continue
        rc, out, err = await _run(
            ["runuser", "-u", trainer, "--", *me, "unpack", str(Path(target) / participant)],
            packed,
        )
        if rc != 0:
            result.problems[participant] = err.splitlines()[-1] if err else f"exit {rc}"
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
        pack(Path(args[1]), sys.stdout.buffer)
    else:
        print(unpack(Path(args[1]), sys.stdin.buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
