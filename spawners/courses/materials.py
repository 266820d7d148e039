"""A course's materials in a participant's home, merged the way nbgitpuller merges.

``sync_materials`` runs on the compute node as the participant when their server starts: new
files arrive, files the participant has not touched are updated, files they deleted come back,
and their own edits are never overwritten. ``.factoryhub-materials.json`` in the target records
the sha256 of each version delivered, which is how "untouched" is told from "edited". Nothing
is written through a symlink: each directory under the target is opened with ``O_NOFOLLOW``
and files are written to a temporary file beside them, then ``os.replace``d (both through
:mod:`user_files`, the one module that opens paths in a user's home).

``mirror_git`` runs in the course service (as root): a world-readable checkout of the course's
repository at a branch, tag or commit, which ``sync_materials`` then reads from.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from factoryhub.spawners import user_files

STATE_FILE = ".factoryhub-materials.json"
SKIPPED_NAMES = frozenset({".git", "__pycache__", ".ipynb_checkpoints"})
MAX_FILE_BYTES = 200 * 1024 * 1024  # larger files are skipped: data belongs on project storage
# Variables that would point git at another repository than the one on its command line.
GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
COMMIT_ID = re.compile(r"[0-9a-fA-F]{4,64}")
NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class MaterialsError(RuntimeError):
    """The materials could not be delivered or mirrored; the message says what to do."""


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {f.name: sorted(getattr(self, f.name)) for f in fields(self)}

    def summary(self) -> str:
        """One line for a log: ``"3 new, 1 updated, 1 kept (your edits)"``."""
        labels = ("new", "updated", "restored", "kept (your edits)", "skipped")
        counts = [len(paths) for paths in self.to_dict().values()]
        parts = [f"{n} {label}" for n, label in zip(counts, labels, strict=True) if n]
        return ", ".join(parts) or "up to date"


def _open_dir(root_fd: int, parts: Sequence[str]) -> int | None:
    """A descriptor of the directory ``parts`` under ``root_fd``, created where missing;
    ``None`` when one of them is a symlink or not a directory."""
    try:
        return user_files.open_subdir(root_fd, parts, create=0o755, follow=False)  # less umask
    except user_files.UnsafePath:
        return None


def _write(dir_fd: int, name: str, data: BinaryIO, mode: int, durable: bool = False) -> str:
    """``data`` into ``name`` in ``dir_fd`` through a temporary file beside it and
    ``os.replace``; returns the sha256 of what was written."""
    return user_files.write_replace(dir_fd, name, data, mode, durable)


def _load_state(root_fd: int) -> dict[str, str]:
    """Relative path → sha256 delivered. Absent or damaged: empty, so every file present
    counts as the participant's own and is kept; nothing is lost."""
    try:
        with open(os.open(STATE_FILE, NOFOLLOW, dir_fd=root_fd), "rb") as f:
            files = json.load(f)["files"]
        return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _save_state(root_fd: int, source: Path, files: dict[str, str]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    state = {"version": 1, "source": str(source.absolute()), "synced_at": now, "files": files}
    data = io.BytesIO((json.dumps(state, indent=1, sort_keys=True) + "\n").encode())
    _write(root_fd, STATE_FILE, data, 0o666, durable=True)


def _source_files(source: Path, report: SyncReport) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of each regular file to deliver; the rest is skipped."""
    found: list[tuple[str, Path]] = []

    def skip(path: str | Path) -> None:
        report.skipped.append(Path(path).relative_to(source).as_posix())

    for top, dirs, names in os.walk(source, onerror=lambda e: skip(e.filename)):
        for name in list(dirs):
            if name in SKIPPED_NAMES or os.path.islink(os.path.join(top, name)):
                dirs.remove(name)
                if name not in SKIPPED_NAMES:
                    skip(os.path.join(top, name))
        dirs.sort()
        for name in sorted(names):
            path = Path(top, name)
            if name in SKIPPED_NAMES or (Path(top) == source and name == STATE_FILE):
                continue
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE_BYTES:
                found.append((path.relative_to(source).as_posix(), path))
            else:
                skip(path)
    return found


def _sync_file(root_fd: int, relative: str, path: Path, state: dict[str, str]) -> str:
    """Deliver one file; returns the report's list it belongs to, or "" for none."""
    *parents, name = PurePosixPath(relative).parts
    dir_fd = _open_dir(root_fd, parents)
    if dir_fd is None:
        return "skipped"
    try:
        with open(os.open(path, NOFOLLOW), "rb") as src:
            source_sha = hashlib.file_digest(src, "sha256").hexdigest()
            src.seek(0)
            mode = 0o777 if os.fstat(src.fileno()).st_mode & 0o111 else 0o666  # less the umask
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                kind = "restored" if relative in state else "added"
                state[relative] = _write(dir_fd, name, src, mode)
                return kind
            if not stat.S_ISREG(st.st_mode):  # a symlink, a directory, a fifo: never touched
                return "skipped"
            with open(os.open(name, NOFOLLOW, dir_fd=dir_fd), "rb") as f:
                target_sha = hashlib.file_digest(f, "sha256").hexdigest()
            if target_sha == source_sha:
                state[relative] = source_sha
                return ""
            if state.get(relative) == target_sha:  # untouched since it was delivered
                state[relative] = _write(dir_fd, name, src, mode)
                return "updated"
            return "kept"  # edited, or the participant's own file at that name
    finally:
        os.close(dir_fd)


def sync_materials(source: Path, target: Path) -> SyncReport:
    """Deliver the files under ``source`` into ``target``, keeping the participant's edits."""
    source, target = Path(source), Path(target)
    try:
        os.scandir(source).close()
    except OSError as e:
        raise MaterialsError(
            f"cannot read the course materials at {source} ({e.strerror}): ask the course's "
            "owner to check that the course is published and readable"
        ) from e
    try:
        root_fd = user_files.open_dir(target.absolute(), create=0o755)
    except OSError as e:
        raise MaterialsError(f"cannot create {target} ({e.strerror}): check your home") from e
    report = SyncReport()
    try:
        state = _load_state(root_fd)
        try:
            for relative, path in _source_files(source, report):
                if kind := _sync_file(root_fd, relative, path, state):
                    getattr(report, kind).append(relative)
        finally:
            _save_state(root_fd, source, state)  # what was delivered so far stays recorded
    except OSError as e:
        what = "no space left (or over quota)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e
        raise MaterialsError(
            f"could not deliver the materials into {target}: {what}; free some space or fix "
            "the permissions, then restart your server"
        ) from e
    finally:
        os.close(root_fd)
    return report


def _check_arg(value: str, what: str) -> str:
    # TRANSPORT: git's "<transport>::<address>" form (ext:: runs commands)
    if not value or value.startswith("-") or CONTROL_CHARS.search(value) or TRANSPORT.match(value):
        raise MaterialsError(
            f"refusing the {what} {value!r}: it must not be empty, start with '-' or hold "
            "control characters; give a path, a file://, https:// or ssh URL, or a git ref"
        )
    return value


def _git(args: Sequence[str], cwd: Path | None, timeout: float, check: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    command = ["git", "-c", "protocol.ext.allow=never", *args]
    try:
        rc, out, err = run_bounded(command, cwd, env, timeout)
    except subprocess.TimeoutExpired as e:
        raise MaterialsError(
            f"git {args[0]} took over {timeout:g} s: check the URL and the network"
        ) from e
    except FileNotFoundError as e:
        raise MaterialsError("git is not installed on this machine") from e
    if check and rc:
        lines = [line for line in err.splitlines() if line.strip()]
        raise MaterialsError(f"git {args[0]} failed: {lines[-1] if lines else rc}")
    return out.strip() if rc == 0 else ""


def run_bounded(
    command: Sequence[str], cwd: Path | None, env: dict[str, str], timeout: float
) -> tuple[int, str, str]:
    """Run ``command`` in its own process group; after ``timeout`` seconds SIGKILL the whole
    group (git's helpers, ssh: nothing outlives the call) and raise TimeoutExpired."""
    with subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return proc.returncode, out, err


def _make_readable(dest: Path) -> None:
    """Directories o+rx, files o+r (and o+x where u+x); ``.git`` and symlinks left alone."""
    for top, dirs, names in os.walk(dest):
        if Path(top) == dest and ".git" in dirs:
            dirs.remove(".git")
        for path in [top, *(os.path.join(top, n) for n in names)]:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                wanted = st.st_mode | 0o755
            elif stat.S_ISREG(st.st_mode):
                wanted = st.st_mode | 0o444 | (0o111 if st.st_mode & 0o100 else 0)
            else:
                continue
            if wanted != st.st_mode:
                os.chmod(path, stat.S_IMODE(wanted))


def mirror_git(url: str, dest: Path, ref: str = "", timeout: float = 120.0) -> str:
    """A world-readable checkout of ``url`` at ``ref`` (branch, tag or commit; "" = the
    remote's default branch) in ``dest``, cloned or brought up to date; returns its commit."""
    _check_arg(url, "git URL")
    if ref:
        _check_arg(ref, "git ref")
    dest = Path(dest)
    if (dest / ".git").is_dir():
        _git(["remote", "set-url", "origin", url], dest, timeout)
        _git(["fetch", "--quiet", "--force", "--prune", "--tags", "origin"], dest, timeout)
        if not ref:
            _git(["remote", "set-head", "origin", "--auto"], dest, timeout)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--quiet", "--no-checkout", "--", url, str(dest)], None, timeout)
    candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"] if ref else ["origin/HEAD"]
    if COMMIT_ID.fullmatch(ref):  # not a stale local branch of that name
        candidates.append(ref)
    for candidate in candidates:
        verify = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"]
        if commit := _git(verify, dest, timeout, check=False):
            break
    else:
        raise MaterialsError(
            f"{ref or 'the default branch'} is not a branch, tag or commit of {url}: "
            "check the course's git ref"
        )
    _git(["checkout", "--quiet", "--force", "--detach", commit, "--"], dest, timeout)
    _git(["clean", "-ffdxq"], dest, timeout)
    _make_readable(dest)
    return _git(["rev-parse", "HEAD"], dest, timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m factoryhub.spawners.courses.materials",
        description="A course's materials in a participant's home.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="deliver SOURCE into TARGET; prints the report")
    sync.add_argument("source", type=Path)
    sync.add_argument("target", type=Path)
    mirror = commands.add_parser("mirror", help="check URL out into DEST; prints the commit")
    mirror.add_argument("url")
    mirror.add_argument("dest", type=Path)
    mirror.add_argument("--ref", default="", help="branch, tag or commit (default: HEAD)")
    args = parser.parse_args(argv)
    try:
        if args.command == "sync":
            print(json.dumps(sync_materials(args.source, args.target).to_dict(), indent=1))
        else:
            print(mirror_git(args.url, args.dest, args.ref))
    except MaterialsError as e:
        print(f"factoryhub materials: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
