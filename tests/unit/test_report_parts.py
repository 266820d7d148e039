"""The Reports service's pure parts: parameters, schedules, the run store."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from factoryhub.hub.reports import parameters, schedules
from factoryhub.hub.reports.parameters import from_inspection, inspect
from factoryhub.hub.reports.store import RunStore, StoreError
from factoryhub.notebooks import templates_dir

NOTEBOOKS = templates_dir()

# --------------------------------------------------------------------------- parameters


def test_parameters_of_a_real_notebook() -> None:
    found = {p.name: p for p in parameters.inspect(templates_dir() / "training/evaluate.ipynb")}
    assert found["max_windows"].type == "int" and found["max_windows"].default == 2000
    assert found["prompts"].type == "list" and found["prompts"].default[0] == "The "
    assert found["temperatures"].default == [0.5, 1.0]
    assert found["split"].type == "str" and found["split"].help.startswith("val:")
    assert found["split"].to_form()["default"] == "val"
    assert found["prompts"].to_form()["default"].startswith('["The "')


def test_annotations_and_odd_defaults() -> None:
    params = parameters.from_inspection(
        {
            "rate": {"inferred_type_name": "float", "default": "1", "help": ""},
            "when": {"inferred_type_name": "None", "default": "None", "help": ""},
            "expr": {"inferred_type_name": "None", "default": "2 ** 10", "help": ""},
            "flag": {"inferred_type_name": "None", "default": "True", "help": ""},
        }
    )
    kinds = {p.name: (p.type, p.default) for p in params}
    assert kinds == {
        "rate": ("float", 1),
        "when": ("str", ""),
        "expr": ("str", "2 ** 10"),
        "flag": ("bool", True),
    }


PARAMS = parameters.from_inspection(
    {
        "n": {"default": "10"},
        "rate": {"default": "0.5"},
        "on": {"default": "False"},
        "name": {"default": '"x"'},
        "items": {"default": "[1, 2]"},
    }
)


def test_values_are_converted_from_form_text_and_json() -> None:
    got = parameters.validate(
        PARAMS, {"n": "12", "rate": 2, "on": "true", "items": '["a", 3]', "name": "y"}
    )
    assert got == {"n": 12, "rate": 2.0, "on": True, "name": "y", "items": ["a", 3]}
    assert parameters.validate(PARAMS, {})["n"] == 10


def test_every_bad_value_is_named() -> None:
    with pytest.raises(parameters.ParameterError) as info:
        parameters.validate(
            PARAMS,
            {
                "n": "ten",
                "rate": "nan",
                "on": "yes",
                "items": "[1, {'a': 1}]",
                "name": 5,
                "rm": "-rf",
            },
        )
    assert set(info.value.problems) == {"n", "rate", "on", "items", "name", "rm"}
    assert "not a parameter of this report" in info.value.problems["rm"]
    with pytest.raises(parameters.ParameterError, match="whole number"):
        parameters.validate(PARAMS, {"n": True})
    with pytest.raises(parameters.ParameterError, match="at most"):
        parameters.validate(PARAMS, {"name": "x" * 5000})


# --------------------------------------------------------------------------- schedules

NOW = datetime(2026, 11, 23, 10, 7, 0)


def test_schedules_are_checked_and_say_when_they_run() -> None:
    assert schedules.check("0  6 * * 1", NOW) == "0 6 * * 1"
    runs = schedules.next_runs("0 6 * * 1", NOW, 2)
    assert runs == [datetime(2026, 11, 30, 6, 0), datetime(2026, 12, 7, 6, 0)]
    with pytest.raises(schedules.ScheduleError, match="five fields"):
        schedules.check("every monday", NOW)
    with pytest.raises(schedules.ScheduleError, match="five fields"):
        schedules.check("0 0 6 * * 1", NOW)
    with pytest.raises(schedules.ScheduleError, match="more often"):
        schedules.check("* * * * *", NOW)


def test_a_missed_schedule_fires_once() -> None:
    last = datetime(2026, 11, 23, 9, 0)
    assert schedules.due("*/10 * * * *", last, NOW) == datetime(2026, 11, 23, 10, 0)
    assert schedules.due("*/10 * * * *", datetime(2026, 11, 23, 10, 0), NOW) is None


# --------------------------------------------------------------------------- store


def test_runs_move_forward_only_and_survive_a_reopen(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "reports.sqlite")
    run = store.add_run("usage", "stan", {"days": 7})
    assert run.status == "queued" and run.parameters == {"days": 7}
    store.set_job(run.id, "123")
    store.move(run.id, "running")
    done = store.move(run.id, "failed", error="ZeroDivisionError", failed_cell=4)
    assert done.failed_cell == 4 and done.duration_s is not None and done.duration_s >= 0
    with pytest.raises(StoreError, match="cannot become running"):
        store.move(run.id, "running")
    with pytest.raises(StoreError, match="unknown fields"):
        store.move(run.id, "failed", user="root")
    with pytest.raises(StoreError, match="job id"):
        store.set_job(run.id, "1; rm")
    other = store.add_run("usage", "ada", {})
    reopened = RunStore(tmp_path / "reports.sqlite")
    assert [r.id for r in reopened.runs()] == [other.id, run.id]
    assert [r.id for r in reopened.runs(user="stan")] == [run.id]
    assert [r.id for r in reopened.unfinished()] == [other.id]
    assert oct((tmp_path / "reports.sqlite").stat().st_mode & 0o777) == "0o600"


def test_schedules_are_stored(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "reports.sqlite")
    s = store.add_schedule("usage", "stan", "0 6 * * 1", {"days": 7})
    store.fired(s.id, datetime(2026, 11, 30, 6, 0))
    assert store.schedule(s.id).last_fired == "2026-11-30T06:00:00"
    store.enable(s.id, False)
    assert store.schedules(enabled_only=True) == []


# --------------------------------------------------------------------------- runner


def test_the_run_script_is_checked_and_quoted(tmp_path: Path) -> None:
    import subprocess

    from factoryhub.hub.reports.runner import RunPaths, render_script
    from factoryhub.spawners.jobscript import UnsafeValue

    paths = RunPaths.for_run(tmp_path / "runs", 7, "usage")
    script = render_script(
        run_id=7,
        report="usage",
        notebook="/opt/x/usage report.ipynb",
        paths=paths,
        python="/opt/venv/bin/python",
        partition="batch",
        walltime="00:30:00",
        account="factory-ops",
    )
    assert "#SBATCH --account=factory-ops" in script
    assert "'/opt/x/usage report.ipynb'" in script and f"-f {paths.parameters}" in script
    (tmp_path / "job.sh").write_text(script)
    subprocess.run(["bash", "-n", str(tmp_path / "job.sh")], check=True)
    with pytest.raises(UnsafeValue):
        render_script(
            run_id=7,
            report="usage",
            notebook="n.ipynb",
            paths=paths,
            python="python",
            partition="batch\n#SBATCH --uid=0",
            walltime="00:30:00",
        )


@pytest.mark.process
def test_a_failed_run_names_its_cell(tmp_path: Path) -> None:
    import nbformat
    import papermill

    from factoryhub.hub.reports.runner import read_outcome_bytes

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("d = 0", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_code_cell("1 / d"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(source), str(executed), parameters={"d": 0}, progress_bar=False
        )
    outcome = read_outcome_bytes(executed.read_bytes())
    assert outcome.failed and "ZeroDivisionError" in outcome.error
    # papermill puts its own cells first (an error banner, the injected parameters)
    assert nbformat.read(executed, 4).cells[outcome.failed_cell].source == "1 / d"
    papermill.execute_notebook(str(source), str(executed), parameters={"d": 2}, progress_bar=False)
    assert read_outcome_bytes(executed.read_bytes()).failed is False


# ---------------------------------------------------------------- malformed outputs (issue 17)

DEEP_LIST = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[]", "not a notebook"),
        (b'{"cells": [1]}', "cell 0 is not an object"),
        (b'{"cells": {"a": 1}}', "not a notebook"),
        (DEEP_LIST, "nested deeper than"),
        (DEEP_OBJECT, "nested deeper than"),
        (b'{"cells": [' + b"[" * 20 + b"]" * 20 + b"]}", "cell 0 is not an object"),
        (b'{"metadata": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b', "cells": []}', "nested"),
        (b"\xff\xfe not json", "cannot be read"),
    ],
)
def test_a_malformed_executed_notebook_is_a_failed_run_that_says_why(
    data: bytes, reason: str
) -> None:
    from factoryhub.hub.reports.runner import read_outcome_bytes

    outcome = read_outcome_bytes(data)
    assert outcome.failed and not outcome.executed
    assert reason in outcome.error and "cannot be read" in outcome.error


def test_odd_cells_and_outputs_of_a_failed_cell_are_read_without_trusting_them() -> None:
    from factoryhub.hub.reports.runner import read_outcome_bytes

    cell = {"metadata": {"papermill": {"exception": True}}, "outputs": [1, "x", {"traceback": 5}]}
    outcome = read_outcome_bytes(json.dumps({"cells": [{"metadata": []}, cell]}).encode())
    assert outcome.failed and outcome.failed_cell == 1
    error = {"output_type": "error", "ename": "E", "evalue": "v", "traceback": [1, None, "t"]}
    cell["outputs"] = [error]
    outcome = read_outcome_bytes(json.dumps({"cells": [cell]}).encode())
    assert outcome.error.startswith("E: v") and outcome.error.endswith("t")


def test_a_50_mb_executed_notebook_is_not_read_whole(tmp_path: Path) -> None:
    from factoryhub.hub.reports.engine import ReportEngine
    from factoryhub.hub.reports.outputs import NOTEBOOK_MAX_BYTES
    from factoryhub.hub.reports.runner import TooLarge, read_outcome_bytes

    big = tmp_path / "big.ipynb"
    with big.open("wb") as f:
        f.write(b'{"cells": [], "x": "')
        f.write(b"x" * (50 * 1024 * 1024))
        f.write(b'"}')
    read = asyncio.run(ReportEngine._read_notebook(big, os.getuid()))
    assert isinstance(read, TooLarge) and read.limit == NOTEBOOK_MAX_BYTES < 50 * 1024 * 1024
    outcome = read_outcome_bytes(read)
    assert outcome.failed and "larger than" in outcome.error


# ---------------------------------------------------------------- path parameters (issue 17)


def test_a_parameter_typed_path_in_its_comment_is_a_path() -> None:
    params = from_inspection(
        {
            "data": {"default": '""', "inferred_type_name": "path", "help": "a folder"},
            "label": {"default": '"x"', "inferred_type_name": "None", "help": ""},
        }
    )
    assert [(p.name, p.type, p.default) for p in params] == [
        ("data", "path", ""),
        ("label", "str", "x"),
    ]
    evaluation = inspect(NOTEBOOKS / "reports" / "model-evaluation.ipynb")
    kinds = {p.name: p.type for p in evaluation}
    assert kinds["data"] == "path" and kinds["evaluate_notebook"] == "path"


def test_path_values_are_confined_to_the_home_and_the_allowed_folders(tmp_path: Path) -> None:
    from factoryhub.hub.reports.parameters import Parameter, ParameterError
    from factoryhub.hub.reports.paths import confine

    home, shared, outside = tmp_path / "home", tmp_path / "shared", tmp_path / "outside"
    for d in (home / "data", shared, outside):
        d.mkdir(parents=True)
    (home / "data" / "a.txt").write_text("a")
    (outside / "secret").write_text("s")
    (home / "out").symlink_to(outside)  # a link out of the home
    (home / "data" / "s.txt").symlink_to(outside / "secret")
    params = (Parameter("data", "path", ""), Parameter("label", "str", ""))

    def check(value: str) -> str:
        return confine(params, {"data": value, "label": "x"}, str(home), [str(shared)])["data"]

    assert check("~/data/a.txt") == f"{home}/data/a.txt"
    assert check("data") == f"{home}/data"
    assert check(str(shared)) == str(shared)
    assert confine(params, {"data": "", "label": "/etc"}, str(home), [])["data"] == ""
    for value, why in [
        ("/etc/shadow", "outside the folders"),
        (str(outside / "secret"), "outside the folders"),
        ("~/../outside/secret", "outside the folders"),
        ("~/out/secret", "symbolic link"),
        ("~/data/s.txt", "symbolic link"),
        ("~/missing.txt", "does not exist"),
    ]:
        with pytest.raises(ParameterError) as e:
            check(value)
        assert set(e.value.problems) == {"data"}, value
        assert "the path parameter data" in e.value.problems["data"] and why in str(e.value)
