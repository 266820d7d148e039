"""``make lock``: compile ``requirements/local.lock`` and ``requirements/test.lock``.

Both are made by ``uv pip compile`` (uv pinned to ``UV_VERSION``, installed into a temporary
virtualenv that is removed afterwards) with hashes, for CPython 3.11 on x86_64 manylinux_2_28:

- ``local.lock``: factoryhub's dependencies (``pyproject.toml``) and what building factoryhub
  itself with ``--no-build-isolation`` needs (``requirements/build.in``): ``make up`` installs it.
- ``test.lock``: the same pins (``local.lock`` is its constraint) plus the ``test`` extras and
  the test tools of ``requirements/test.in``: ``make test`` installs it.

torch is the CPU build (``+cpu``), which the default index does not serve: uv is given the
wheel folders / pages that pip's own configuration names as find-links (``pip config list``),
and the lock's header says where the CPU wheel comes from.

Runs with the system Python and the standard library only (a fresh clone has no venv yet):
``/usr/bin/python3 local/lock.py [--upgrade]``.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

UV_VERSION = "0.13.9"
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
REQUIREMENTS = "requirements"
BUILD_IN = f"{REQUIREMENTS}/build.in"
TEST_IN = f"{REQUIREMENTS}/test.in"
LOCAL_LOCK = f"{REQUIREMENTS}/local.lock"
TEST_LOCK = f"{REQUIREMENTS}/test.lock"
COMPILE_COMMAND = "make lock"


class LockError(RuntimeError):
    """A step of ``make lock`` failed (the message carries the tool's output)."""


def find_links_from_pip_config(config_list: str) -> list[str]:
    """The find-links locations in the output of ``pip config list`` (every scope, the
    ``PIP_FIND_LINKS`` environment variable included), in order, without duplicates.

    pip prints one ``scope.key='value'`` per line (the value as a Python literal); a value may
    hold several locations separated by whitespace.
    """
    found: list[str] = []
    for line in config_list.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip().endswith(".find-links"):
            continue
        value = ast.literal_eval(raw.strip())
        for location in str(value).split():
            if location not in found:
                found.append(location)
    return found


def lock_header(purpose: str, lock_text: str, find_links: list[str]) -> str:
    """The comment block put above uv's own header: what the lock is for, and where the CPU
    build of torch (a ``+cpu`` pin, when the lock has one) comes from."""
    lines = [f"# {purpose}", "# Refresh with `make lock` (`make lock UPGRADE=1` to upgrade)."]
    torch = next((ln.split()[0] for ln in lock_text.splitlines() if ln.startswith("torch==")), "")
    if "+cpu" in torch:
        where = ", ".join(find_links) if find_links else "(none configured)"
        lines += [
            f"# {torch} is PyTorch's CPU build, which the default index does not serve: pip",
            "# finds it in the wheel folders that its configuration names as find-links; when",
            f"# this lock was made: {where}.",
            "# Where there is no such folder, give pip PyTorch's CPU wheel index",
            "# (--extra-index-url); the hash below pins the exact wheel either way.",
        ]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LockError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def install_uv(folder: Path) -> tuple[Path, Path]:
    """A virtualenv in ``folder`` with uv ``UV_VERSION``; (uv, the venv's python)."""
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install",
         f"uv=={UV_VERSION}"],
        f"pip install uv=={UV_VERSION}",
    )  # fmt: skip
    return folder / "bin" / "uv", python


def compile_lock(
    uv: Path,
    repo: Path,
    inputs: list[str],
    output: str,
    find_links: list[str],
    extra_args: list[str],
) -> str:
    """Run ``uv pip compile`` for ``inputs`` (paths relative to ``repo``); the lock's text.

    The existing lock is uv's starting point, so pins that still fit stay unless
    ``--upgrade`` is among ``extra_args``.
    """
    with tempfile.TemporaryDirectory(prefix="factoryhub-lock.") as tmp:
        out = Path(tmp) / Path(output).name
        if (repo / output).is_file():
            shutil.copyfile(repo / output, out)
        cmd = [
            str(uv), "pip", "compile", "--quiet", "--generate-hashes",
            "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM,
            "--custom-compile-command", COMPILE_COMMAND,
            *(arg for link in find_links for arg in ("--find-links", link)),
            *extra_args, *inputs, "-o", str(out),
        ]  # fmt: skip
        _run(cmd, f"uv pip compile → {output}", cwd=repo)
        return out.read_text()


def write_lock(repo: Path, output: str, purpose: str, text: str, find_links: list[str]) -> None:
    path = repo / output
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(lock_header(purpose, text, find_links) + text)
    tmp.replace(path)


def make_locks(repo: Path, upgrade: bool = False) -> None:
    started = time.monotonic()
    extra = ["--upgrade"] if upgrade else []
    with tempfile.TemporaryDirectory(prefix="factoryhub-uv.") as tmp:
        uv, python = install_uv(Path(tmp) / "venv")
        config = _run([str(python), "-m", "pip", "config", "list"], "pip config list")
        links = find_links_from_pip_config(config)
        print(f"lock: uv {UV_VERSION}; pip's find-links: {', '.join(links) or 'none'}", flush=True)
        text = compile_lock(uv, repo, ["pyproject.toml", BUILD_IN], LOCAL_LOCK, links, extra)
        write_lock(
            repo, LOCAL_LOCK, "factoryhub's runtime lock: `make up` installs it.", text, links
        )
        text = compile_lock(
            uv,
            repo,
            ["--extra", "test", "pyproject.toml", BUILD_IN, TEST_IN, "-c", LOCAL_LOCK],
            TEST_LOCK,
            links,
            extra,
        )
        write_lock(
            repo, TEST_LOCK, "factoryhub's test lock (local.lock + test tools): `make test`.",
            text, links,
        )  # fmt: skip
    print(f"lock: wrote {LOCAL_LOCK} and {TEST_LOCK} ({time.monotonic() - started:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="upgrade every pin")
    args = parser.parse_args(argv)
    try:
        make_locks(Path(__file__).resolve().parent.parent, upgrade=args.upgrade)
    except LockError as exc:
        print(f"lock: ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
