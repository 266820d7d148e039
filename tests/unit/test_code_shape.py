"""The code's shape, kept by tests rather than by review: no module over 500 lines and no
function over 60, and the dependency direction of the layout (models <- hub -> spawners ->
Slurm client; helpers/ beside the hub, not on it), read from every import statement with
:mod:`ast`. A failure lists every offender with its file and line."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
SHAPED_FOLDERS = ("hub", "spawners", "helpers", "local", "benchmarks", "tests")


def package_folders() -> dict[str, str]:
    """Top-level folder -> the package it installs as (pyproject.toml's package-dir, and
    local/pyproject.toml's for local/)."""
    folders = {}
    for pyproject, base in (
        (REPO / "pyproject.toml", ""),
        (REPO / "local/pyproject.toml", "local"),
    ):
        package_dir = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
        for package, folder in package_dir.items():
            folders[str(Path(base, folder))] = package
    return folders


PACKAGES = package_folders()


def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            if not {"node_modules", "__pycache__"} & set(path.parts):
                yield path


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --------------------------------------------------------------------------- sizes


def test_no_module_over_500_lines() -> None:
    long = [
        f"{rel(path)}: {n} lines"
        for path in python_files(*SHAPED_FOLDERS)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by topic):\n" + "\n".join(
        long
    )


def test_no_function_over_60_lines() -> None:
    long = []
    for path in python_files(*SHAPED_FOLDERS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{rel(path)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


# --------------------------------------------------------------------------- imports


def module_name(path: Path) -> str:
    """The installed name of a file of a package folder: spawners/slurm/local.py ->
    factoryhub.spawners.slurm.local (a package's __init__.py is the package)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    for folder, package in PACKAGES.items():
        top = Path(folder).parts
        if parts[: len(top)] == top:
            rest = [p for p in parts[len(top) :] if p != "__init__"]
            return ".".join([package, *rest])
    raise AssertionError(f"{rel(path)} is in no package folder")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything ``path`` imports, at any depth (imports inside
    functions count). ``from a import b`` gives ``a.b`` (b may be a module); relative imports
    are resolved against the file's own package."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """Every import in ``folder`` of a name under ``forbidden`` and not under ``allowed``."""
    return [
        f"{rel(path)}:{line} imports {name}"
        for path in python_files(folder)
        for line, name in imports_of(path)
        if under(name, *forbidden) and not under(name, *allowed)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden", "allowed", "why"),
    [
        (
            "spawners/model",
            ("factoryhub.hub", "factoryhub.spawners"),
            ("factoryhub.spawners.model",),
            "the model is the leaf both sides stand on",
        ),
        (
            "spawners",
            ("factoryhub.hub",),
            (),
            "the spawner gets its settings through traitlets config, not from the hub",
        ),
        (
            "spawners/slurm",
            ("factoryhub.spawners",),
            (
                "factoryhub.spawners.slurm",
                "factoryhub.spawners.model",
                "factoryhub.spawners.user_env",
            ),
            "the Slurm client stands on the model and the user environment only",
        ),
        (
            "helpers",
            ("factoryhub.hub",),
            (),
            "code the notebooks import runs in users' jobs, without the hub",
        ),
    ],
)
def test_dependency_direction(
    folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...], why: str
) -> None:
    found = offenders(folder, forbidden, allowed)
    assert not found, f"{folder}: {why}; found:\n" + "\n".join(found)


def test_the_import_reader_sees_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader the direction tests rely on: plain, from, relative and nested imports."""
    source = (
        "import factoryhub.hub.site\n"
        "from factoryhub.spawners import user_env\n"
        "from .. import options\n"
        "from .client import SlurmClient\n"
        "def f():\n"
        "    from factoryhub.hub import auth\n"
    )
    folder = tmp_path / "spawners" / "slurm"
    folder.mkdir(parents=True)
    (folder / "x.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert [name for _, name in imports_of(folder / "x.py")] == [
        "factoryhub.hub.site",
        "factoryhub.spawners.user_env",
        "factoryhub.spawners.options",
        "factoryhub.spawners.slurm.client.SlurmClient",
        "factoryhub.hub.auth",
    ]


# --------------------------------------------------------------------------- make's links


def test_make_links_every_package_folder() -> None:
    """`make unit` and `make typecheck` reach the working tree through build/src links, one
    per package folder: a folder missing there would be tested and type-checked from the
    installed (stale) copy, or not at all."""
    makefile = (REPO / "Makefile").read_text()
    m = re.search(r"^PACKAGE_FOLDERS := (.+)$", makefile, re.MULTILINE)
    assert m, "no PACKAGE_FOLDERS in the Makefile"
    assert set(m.group(1).split()) == set(PACKAGES)
    assert all(package == f"factoryhub.{folder}" for folder, package in PACKAGES.items())
