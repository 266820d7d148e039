"""Report parameters that are paths (``name = ""  # type: path`` in the parameters cell).

A path a person gives must name something that exists inside one of the folders it may name:
the home of the user the run runs as, or a folder of ``reports.path_folders``. ``~`` is that
home; a relative path is taken from it. The check is the service's (root's), so it goes
through :mod:`factoryhub.spawners.user_files`: the allowed folder is opened from ``/``, then
every step below it with ``O_NOFOLLOW`` and no symbolic link followed at all, the last
component looked at without following it. The run gets the checked, absolute path. The job
itself runs as its user, so whatever the path names afterwards is at most what that user can
read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from factoryhub.hub.reports.parameters import Parameter, ParameterError
from factoryhub.spawners.user_files import open_dir, open_subdir


class OutsidePath(ValueError):
    """A path value that may not be used; the message says why."""


def _absolute(value: str, home: str) -> str:
    if value == "~" or value.startswith("~/"):
        value = home + value[1:]
    elif not value.startswith("/"):
        value = posixpath.join(home, value)
    return posixpath.normpath(value)


def _inside(path: str, folder: str) -> str | None:
    """The part of ``path`` below ``folder`` ("" for the folder itself), or None."""
    folder = posixpath.normpath(folder)
    if path == folder:
        return ""
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def _walk(folder: str, below: str, shown: str) -> None:
    """Raise :class:`OutsidePath` unless ``below`` exists under ``folder`` without a link."""
    parts = [p for p in below.split("/") if p]
    try:
        base = open_dir(folder)
    except OSError as e:
        raise OutsidePath(f"{shown!r} cannot be reached ({e.strerror or e})") from None
    try:
        if not parts:
            return
        try:
            parent = open_subdir(base, parts[:-1], shown=shown, follow=False)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise OutsidePath(f"{shown!r} does not exist") from None
            raise OutsidePath(f"{shown!r} leads through {e.strerror or e}") from None
        try:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise OutsidePath(f"{shown!r} does not exist") from None
        finally:
            os.close(parent)
        if stat.S_ISLNK(info.st_mode):
            raise OutsidePath(f"{shown!r} is a symbolic link")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise OutsidePath(f"{shown!r} is neither a file nor a folder")
    finally:
        os.close(base)


def resolve(value: str, home: str, folders: Sequence[str]) -> str:
    """The absolute path ``value`` names, when it may be used; else :class:`OutsidePath`."""
    path = _absolute(value, home)
    allowed = [home, *folders]
    for folder in allowed:
        below = _inside(path, folder)
        if below is not None:
            _walk(folder, below, value)
            return path
    names = ", ".join(allowed)
    raise OutsidePath(f"{value!r} is outside the folders a path may name ({names})")


def confine(
    params: Iterable[Parameter], values: Mapping[str, Any], home: str, folders: Sequence[str]
) -> dict[str, Any]:
    """``values`` with every non-empty path parameter resolved; :class:`ParameterError`
    names each path parameter that may not be used."""
    out = dict(values)
    problems: dict[str, str] = {}
    for param in params:
        value = out.get(param.name)
        if param.type != "path" or not value:
            continue
        try:
            out[param.name] = resolve(str(value), home, folders)
        except OutsidePath as e:
            problems[param.name] = f"the path parameter {param.name}: {e}"
    if problems:
        raise ParameterError(problems)
    return out
