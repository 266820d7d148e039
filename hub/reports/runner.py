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

UPLOADER = Path(__file__).with_name("uploader.py")

SCRIPT = """#!/bin/bash
#SBATCH --job-name={{ job_name | sbatch }}
#SBATCH --output={{ out_dir | sbatch }}/slurm-%j.log
#SBATCH --partition={{ partition | sbatch }}
#SBATCH --time={{ walltime | sbatch }}
#SBATCH --cpus-per-task={{ cpus | sbatch }}
#SBATCH --mem={{ memory_gb | sbatch }}G
#SBATCH --no-requeue
{% if account %}#SBATCH --account={{ account | sbatch }}
{% endif %}#SBATCH --comment={{ comment | sbatch }}
# factoryhub report run {{ run_id }}: {{ report | q }}
set -uo pipefail
umask 077
{% if upload %}# the upload token is for the uploader only, not for the notebook's code
upload_token=${FACTORYHUB_REPORT_UPLOAD_TOKEN:-}
unset FACTORYHUB_REPORT_UPLOAD_TOKEN
{% endif %}cd {{ out_dir | q }}
{{ python | q }} -m papermill {{ notebook | q }} {{ executed | q }} \\
    -f {{ parameters | q }} -k python3 --cwd {{ out_dir | q }}
status=$?
{{ python | q }} -m nbconvert --to html --output {{ html_name | q }} {{ executed | q }} \\
    || echo "factoryhub: the HTML rendering failed" >&2
{% if upload %}FACTORYHUB_REPORT_UPLOAD_TOKEN=$upload_token \\
    {{ python | q }} -I -c {{ uploader | q }} "$status" \\
    {{ executed | q }} {{ html | q }} "slurm-${SLURM_JOB_ID:-0}.log" || status=1
{% endif %}exit $status
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
    upload: bool = False,
) -> str:
    """The run's job script; ``upload`` (the rest access mode): the job then sends its
    outputs to the Reports service with :mod:`.uploader` (its text inlined: the job's python
    may have another factoryhub, or none)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - a shell script
    env.filters["sbatch"] = sbatch_value
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env.from_string(SCRIPT).render(
        run_id=int(run_id),
        report=report,
        notebook=str(notebook),
        executed=str(paths.executed),
        html_name=paths.html.name,
        html=str(paths.html),
        upload=upload,
        uploader=UPLOADER.read_text() if upload else "",
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


@dataclass(frozen=True)
class TooLarge:
    """The executed notebook is larger than the service reads (``limit`` bytes)."""

    limit: int


NO_NOTEBOOK = "no executed notebook"
MAX_DEPTH = 64  # nesting of lists and objects a notebook may have; nbformat needs < 10


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (iterative: no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _unreadable(reason: str) -> Outcome:
    return Outcome(False, True, None, f"the executed notebook cannot be read ({reason})")


def read_outcome_bytes(data: bytes | TooLarge | None) -> Outcome:
    """What an executed notebook says: papermill marks the cell that raised
    (``metadata.papermill.exception``) and keeps its error output. The service reads the
    notebook's bytes from the user's folder through ``outputs.read_owned`` (never by path
    here), at most ``outputs.NOTEBOOK_MAX_BYTES``. Whatever the bytes are (the user wrote
    them), the answer is an :class:`Outcome`: a notebook that is not JSON, nests deeper than
    ``MAX_DEPTH``, or is not shaped like a notebook is a failed run that says so."""
    if data is None:
        return Outcome(False, True, None, NO_NOTEBOOK)
    if isinstance(data, TooLarge):
        return _unreadable(f"larger than the {data.limit} bytes the service reads")
    try:
        nb = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return _unreadable(str(e)[:200])
    except RecursionError:
        return _unreadable(f"nested deeper than {MAX_DEPTH} levels")
    if _too_deep(nb):
        return _unreadable(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return _unreadable("not a notebook: no list of cells")
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            return _unreadable(f"cell {index} is not an object")
        if not _dict(_dict(cell.get("metadata")).get("papermill")).get("exception"):
            continue
        for output in _list(cell.get("outputs")):
            output = _dict(output)
            if output.get("output_type") == "error":
                lines = [str(x) for x in _list(output.get("traceback"))[-3:]]
                error = f"{output.get('ename')}: {output.get('evalue')}\n" + "\n".join(lines)
                return Outcome(True, True, index, error[:20000])
        return Outcome(True, True, index, "the cell raised an exception")
    return Outcome(True, False, None, "")
