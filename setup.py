"""The package list, found: every package under the top-level folders that pyproject.toml's
``package-dir`` maps to ``factoryhub.*`` ships, so a new subpackage cannot be forgotten.
Everything else about the build is in pyproject.toml."""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"
]


def packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIR.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(str(HERE / folder))]
    return sorted(found)


setup(packages=packages())
