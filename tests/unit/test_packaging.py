"""What ships: every package under the product's folders is in factoryhub's wheel (the list is
found, never written), the local factory's tools are not, and they ship on their own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # builds wheels with pip

REPO = Path(__file__).resolve().parents[2]
PRODUCT = {
    "hub": "factoryhub.hub",
    "spawners": "factoryhub.spawners",
    "helpers": "factoryhub.helpers",
}


def build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def copy_sources(tmp: Path, names: list[str]) -> Path:
    """A copy of the checkout's sources (pip builds in the tree: keep its build/ out of ours)."""
    dest = tmp / "src"
    dest.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info", "node_modules")
    for name in names:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=skip)
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp = tmp_path_factory.mktemp("wheel")
    names = ["pyproject.toml", "setup.py", "README.md", "hub", "spawners", "helpers", "notebooks"]
    with build_wheel(copy_sources(tmp, names), tmp / "out") as wheel:
        listed = set(wheel.namelist())
        scripts = next(wheel.read(n).decode() for n in listed if n.endswith("entry_points.txt"))
    return listed | {f"entry_points: {line}" for line in scripts.splitlines()}


def test_every_package_folder_ships_in_the_wheel(product_wheel: set[str]) -> None:
    for folder, package in PRODUCT.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.relative_to(REPO / folder).as_posix()
            assert f"{package.replace('.', '/')}/{relative}" in product_wheel, relative


def test_the_site_schema_and_templates_ship(product_wheel: set[str]) -> None:
    assert "factoryhub/hub/site/schema.json" in product_wheel
    assert "factoryhub/hub/factory.example.yaml" in product_wheel
    assert "factoryhub/spawners/templates/job.sh.j2" in product_wheel


def test_the_local_tools_are_not_product_code(product_wheel: set[str]) -> None:
    assert not [n for n in product_wheel if n.startswith("factoryhub/local/")]
    assert "entry_points: factoryhub-singleuser = factoryhub.spawners.singleuser.main:main" in (
        product_wheel
    )
    assert not [n for n in product_wheel if n.startswith("entry_points: factoryhub-local")]


def test_the_local_tools_ship_on_their_own(tmp_path: Path) -> None:
    source = copy_sources(tmp_path, ["local"]) / "local"
    with build_wheel(source, tmp_path / "out") as wheel:
        names = set(wheel.namelist())
        scripts = next(wheel.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert (
        "factoryhub/local/cli.py" in names and "factoryhub/local/templates/slurm.conf.j2" in names
    )
    assert not [n for n in names if n.startswith(("factoryhub/hub/", "factoryhub/spawners/"))]
    assert "factoryhub-local = factoryhub.local.cli:main" in scripts
