"""Files a user's server puts in place for its user when it starts."""

from __future__ import annotations

import shutil
from pathlib import Path

SKIPPED = {"__init__.py", "__pycache__"}
# courses/ arrive through their course (spawners.materials), not with the templates
SKIPPED_TOP = {"courses"}
TEMPLATES_FOLDER = "factoryhub-templates"


def copy_new_files(source: Path, target: Path) -> list[Path]:
    """Copy every file under ``source`` that ``target`` does not have yet; never overwrite
    (the user's edits stay). Returns the files copied."""
    copied: list[Path] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if SKIPPED.intersection(relative.parts) or relative.parts[0] in SKIPPED_TOP:
            continue
        if not path.is_file():
            continue
        destination = target / relative
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        copied.append(destination)
    return copied


def copy_templates(home: Path) -> list[Path]:
    """The template notebooks into ``~/factoryhub-templates`` (new files only)."""
    try:
        from factoryhub.notebooks import templates_dir
    except ImportError:  # an environment without the templates
        return []
    return copy_new_files(templates_dir(), home / TEMPLATES_FOLDER)
