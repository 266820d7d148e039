"""What a report run is on the cluster: a Slurm batch job that executes the notebook with
papermill and renders it to HTML; and what its outputs say when it ends.

Parameters travel as a JSON file next to the outputs (``papermill -f``), never on the
command line or in the script; every ``#SBATCH`` value passes the spawner's allowlist
filter (``sbatch_value``), and paths are shell-quoted.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from factoryhub.spawners.jobscript import sbatch_value

SCRIPT = """#!/bin/bash
#SBATCH --job-name={{ job_name | sbatch }}
#SBATCH --output={{ out_dir | sbatch }}/slurm-%j.log
#SBATCH --partition={{ partition | sbatch }}
#SBATCH --time={{ walltime | sbatch }}
#SBATCH --cpus-per-task={{ cpus | sbatch }}
#SBATCH --mem={{ memory_gb | sbatch }}G
{% if account %}#SBATCH --account={{ account | sbatch }}
{% endif %}#SBATCH --comment={{ comment | sbatch }}
# factoryhub report run {{ run_id }}: {{ report | q }}
set -uo pipefail
umask 077
cd {{ out_dir | q }}
{{ python | q }} -m papermill {{ notebook | q }} {{ executed | q }} \\
    -f {{ parameters | q }} -k python3 --cwd {{ out_dir | q }}
status=$?
{{ python | q }} -m nbconvert --to html --output {{ html_name | q }} {{ executed | q }} \\
    || echo "factoryhub: the HTML rendering failed" >&2
exit $status
"""


@dataclass(frozen=True)
class RunPaths:
    out_dir: Path
    parameters: Path
    executed: Path
    html: Path

    @classmethod
    def for_run(cls, runs_dir: str | Path, run_id: int, report: str) -> RunPaths:
        out = Path(runs_dir) / f"run-{run_id}"
        return cls(
            out,
            out / "parameters.json",
            out / f"{report}.ipynb",
            out / f"{report}.html",
        )


def render_script(
    *,
    run_id: int,
    report: str,
    notebook: str | Path,
    paths: RunPaths,
    python: str,
    partition: str,
    walltime: str,
    cpus: int = 1,
    memory_gb: int = 2,
    account: str = "",
    job_name: str = "factoryhub-report",
    comment: str = "factoryhub:reports",
) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - a shell script
    env.filters["sbatch"] = sbatch_value
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env.from_string(SCRIPT).render(
        run_id=int(run_id),
        report=report,
        notebook=str(notebook),
        executed=str(paths.executed),
        html_name=paths.html.name,
        parameters=str(paths.parameters),
        out_dir=str(paths.out_dir),
        python=python,
        partition=partition,
        walltime=walltime,
        cpus=int(cpus),
        memory_gb=int(memory_gb),
        account=account,
        job_name=job_name,
        comment=comment,
    )


def parameters_json(values: Mapping[str, Any]) -> str:
    """The validated values, as papermill's ``-f`` file (YAML accepts JSON)."""
    return json.dumps(dict(values), indent=2)


@dataclass(frozen=True)
class Outcome:
    executed: bool  # an executed notebook was there to read
    failed: bool
    failed_cell: int | None  # index among the notebook's cells
    error: str  # "Name: message" and the traceback's last lines


def read_outcome_bytes(data: bytes | None) -> Outcome:
    """What an executed notebook says: papermill marks the cell that raised
    (``metadata.papermill.exception``) and keeps its error output. The service reads the
    notebook's bytes from the user's folder through ``outputs.read_owned`` (never by path
    here)."""
    if data is None:
        return Outcome(False, True, None, "no executed notebook")
    try:
        nb = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return Outcome(False, True, None, f"the executed notebook cannot be read ({e})")
    for index, cell in enumerate(nb.get("cells", [])):
        if not cell.get("metadata", {}).get("papermill", {}).get("exception"):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = "\n".join(output.get("traceback", [])[-3:])
                return Outcome(
                    True, True, index, f"{output.get('ename')}: {output.get('evalue')}\n{trace}"
                )
        return Outcome(True, True, index, "the cell raised an exception")
    return Outcome(True, False, None, "")
