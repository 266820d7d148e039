"""The template notebooks, installed as package data (``factoryhub.notebooks``).

Every user server copies them into ``~/factoryhub-templates`` when it starts (new files
only: a user's own edits are never overwritten), so the templates are one click away in
JupyterLab's file browser.
"""

from __future__ import annotations

from pathlib import Path


def templates_dir() -> Path:
    """The folder holding the installed templates (``data-prep/``, ``training/``, ...)."""
    return Path(__file__).parent
