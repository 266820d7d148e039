"""The intro-ai course's notebooks are well-formed: valid nbformat, one ``parameters`` cell
that papermill reads, folded solutions, no stored outputs, and shipped as package data.
(They run, in a real user server, in tests/integration/test_course_notebooks.py.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[2]
COURSE = REPO / "notebooks" / "courses" / "intro-ai"
NOTEBOOKS = ["00-welcome", "01-python-basics", "02-data-prep", "03-training"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_course_holds_its_notebooks_and_readme() -> None:
    assert sorted(p.stem for p in COURSE.glob("*.ipynb")) == NOTEBOOKS
    readme = (COURSE / "README.md").read_text()
    for name in NOTEBOOKS:
        assert f"`{name}.ipynb`" in readme, name
    assert "~/courses/intro-ai/" in readme


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_course_notebook_is_valid_and_has_one_parameters_cell(name: str) -> None:
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in tags(cell)]
    assert len(tagged) == 1, tagged
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    assert tagged[0] == code[0], "the parameters cell is the first code cell"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # papermill reads the parameters, with their types, defaults and help
    found = papermill.inspect_notebook(str(COURSE / f"{name}.ipynb"))
    assert found["summary_path"]["default"] == '""', found
    assert all(p["inferred_type_name"] != "None" and p["help"] for p in found.values()), found
    # shipped clean: no outputs, no execution counts
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_exercise_has_a_folded_solution(name: str) -> None:
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    solutions = [cell for cell in nb.cells if "solution" in tags(cell)]
    exercises = sum(
        "✏️ **Exercise" in cell.source and "(no check)" not in cell.source
        for cell in nb.cells
        if cell.cell_type == "markdown"
    )
    assert exercises >= 2 and len(solutions) == exercises, (exercises, len(solutions))
    for cell in solutions:
        assert cell.cell_type == "code" and cell.metadata["jupyter"]["source_hidden"] is True
        assert cell.source.startswith("# Solution"), cell.id
        assert "check(" in cell.source or "print(" in cell.source, cell.id


def test_the_data_prep_notebook_uses_a_local_cluster_unless_asked() -> None:
    found = papermill.inspect_notebook(str(COURSE / "02-data-prep.ipynb"))
    assert found["use_slurm_cluster"]["inferred_type_name"] == "bool"
    assert found["use_slurm_cluster"]["default"] == "False"
    source = nbformat.read(COURSE / "02-data-prep.ipynb", as_version=4)
    code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    assert "SLURMCluster()" in code and "LocalCluster(" in code


def test_the_course_is_package_data() -> None:
    """Every file of the course matches a package-data glob of ``factoryhub.notebooks``, so
    it is installed with factoryhub (setuptools globs are relative to the package folder)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder = REPO / config["package-dir"]["factoryhub.notebooks"]
    patterns = config["package-data"]["factoryhub.notebooks"]
    shipped = {path for pattern in patterns for path in folder.glob(pattern)}
    files = [p for p in COURSE.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts]
    assert files and not [p for p in files if p not in shipped]
