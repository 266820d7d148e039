"""The report notebooks the service offers: the built-in ones (``notebooks/reports``) and those
in the folders the site file names. A report's name is its file name without ``.ipynb``;
its title and description come from its first markdown cell, its form from its
``parameters`` cell (papermill's inspection), read again only when the file changes."""

from __future__ import annotations

import importlib.resources
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from factoryhub.hub.reports.parameters import Parameter, inspect

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
log = logging.getLogger("factoryhub.reports")


@dataclass(frozen=True)
class Report:
    name: str
    path: Path
    title: str
    description: str
    parameters: tuple[Parameter, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "parameters": [p.to_form() for p in self.parameters],
        }


def built_in_folder() -> Path:
    return Path(str(importlib.resources.files("factoryhub.notebooks") / "reports"))


def describe(notebook: Path) -> tuple[str, str]:
    """(title, description): the first ``# `` heading of the first markdown cell and the
    paragraph after it."""
    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, json.JSONDecodeError):
        return notebook.stem, ""
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell.get("source", []))
        title, description, lines = notebook.stem, "", text.strip().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# "):
                title = line[2:].strip()
                rest = "\n".join(lines[i + 1 :]).strip()
                description = " ".join(rest.split("\n\n")[0].split())
                break
        return title, description
    return notebook.stem, ""


class Catalog:
    def __init__(self, folders: Iterable[str | Path]) -> None:
        self.folders = tuple(Path(f) for f in folders)
        self._cache: dict[Path, tuple[float, Report]] = {}

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.folders:
            for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else ():
                name = path.stem
                if not NAME.match(name) or name.startswith("."):
                    continue
                if name in found:
                    log.warning(
                        "report %s in %s is ignored: %s has that name", name, path, found[name]
                    )
                    continue
                found[name] = path
        return found

    def _load(self, name: str, path: Path) -> Report:
        mtime = path.stat().st_mtime
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        title, description = describe(path)
        report = Report(name, path, title, description, inspect(path))
        self._cache[path] = (mtime, report)
        return report

    def reports(self) -> list[Report]:
        out = []
        for name, path in self._files().items():
            try:
                out.append(self._load(name, path))
            except Exception as e:  # a broken notebook must not hide the others
                log.warning("report %s (%s) cannot be read: %s", name, path, e)
        return sorted(out, key=lambda r: r.title.lower())

    def get(self, name: str) -> Report | None:
        path = self._files().get(name)
        return self._load(name, path) if path else None
