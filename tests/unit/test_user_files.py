"""Template notebooks land in the user's home; the user's edits are never overwritten."""

from __future__ import annotations

from pathlib import Path

from factoryhub.spawners.user_files import copy_new_files


def test_new_files_arrive_and_edits_stay(tmp_path: Path) -> None:
    source, home = tmp_path / "templates", tmp_path / "home"
    (source / "data-prep" / "data").mkdir(parents=True)
    (source / "__pycache__").mkdir()
    (source / "__init__.py").write_text("")
    (source / "__pycache__" / "x.pyc").write_bytes(b"")
    (source / "data-prep" / "a.ipynb").write_text("template v1")
    (source / "data-prep" / "data" / "seed.txt").write_text("seed")
    copied = copy_new_files(source, home)
    assert sorted(p.relative_to(home).as_posix() for p in copied) == [
        "data-prep/a.ipynb",
        "data-prep/data/seed.txt",
    ]
    (home / "data-prep" / "a.ipynb").write_text("my edits")
    (source / "data-prep" / "a.ipynb").write_text("template v2")
    (source / "data-prep" / "b.ipynb").write_text("new template")
    copied = copy_new_files(source, home)
    assert [p.name for p in copied] == ["b.ipynb"]
    assert (home / "data-prep" / "a.ipynb").read_text() == "my edits"
