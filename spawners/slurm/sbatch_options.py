"""A job script's ``#SBATCH`` lines as slurmrestd job properties (API v0.0.38).

``sbatch`` reads the ``#SBATCH`` lines of a script; slurmrestd does not: a job submitted over
REST gets its options from the JSON ``job`` object only. The same rendered job script serves
both access modes, so the REST client turns its header into that object here. Only options
factoryhub's job scripts and an operator's ``extra_sbatch_options`` may use are known; any
other option is refused with its name rather than silently dropped.
"""

from __future__ import annotations

import re
from typing import Any

from factoryhub.spawners.model.slurm_units import memory_mb, slurm_minutes

# sbatch long option -> v0.0.38 job property, for options whose value passes unchanged.
_PLAIN = {
    "job-name": "name",
    "comment": "comment",
    "output": "standard_output",
    "error": "standard_error",
    "chdir": "current_working_directory",
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "reservation": "reservation",
    "gres": "gres",
    "gpus": "gpus",
    "constraint": "constraints",
    "signal": "signal",
    "mail-type": "mail_type",
    "mail-user": "mail_user",
    "licenses": "licenses",
    "wckey": "wckey",
}
_INT = {"ntasks": "tasks", "cpus-per-task": "cpus_per_task", "nice": "nice"}
_FLAGS = {"oversubscribe": ("oversubscribe", True), "requeue": ("requeue", True),
          "no-requeue": ("requeue", False), "exclusive": ("exclusive", "true")}  # fmt: skip
# Handled by the REST client itself: the environment is the job's whole environment.
_IGNORED = {"export"}

_LINE = re.compile(r"^#SBATCH\s+--([a-z][a-z-]*)(?:[= ](.*))?$")


class UnsupportedOption(ValueError):
    """An ``#SBATCH`` option the REST access mode cannot pass on."""


def header_options(script: str) -> list[tuple[str, str]]:
    """(option, value) of every ``#SBATCH --option[=value]`` line before the first command."""
    found = []
    for line in script.splitlines()[1:]:
        text = line.strip()
        if not text:
            continue
        if not text.startswith("#"):
            break  # sbatch stops reading directives at the first command
        match = _LINE.match(text)
        if match:
            found.append((match.group(1), (match.group(2) or "").strip()))
        elif text.startswith("#SBATCH"):
            raise UnsupportedOption(f"cannot read the job option {text!r}")
    return found


def job_properties(script: str) -> dict[str, Any]:
    """The v0.0.38 ``job`` object equivalent to the script's ``#SBATCH`` header."""
    job: dict[str, Any] = {}
    for option, value in header_options(script):
        try:
            if option in _PLAIN:
                job[_PLAIN[option]] = value
            elif option in _INT:
                job[_INT[option]] = int(value)
            elif option in _FLAGS:
                key, flag = _FLAGS[option]
                job[key] = flag
            elif option == "time":
                job["time_limit"] = slurm_minutes(value)
            elif option == "mem":
                job["memory_per_node"] = memory_mb(value)
            elif option == "nodes":
                low, _, high = value.partition("-")
                job["nodes"] = [int(low), int(high or low)]
            elif option not in _IGNORED:
                raise UnsupportedOption(
                    f"the job option --{option} is not supported in the rest access mode"
                )
        except UnsupportedOption:
            raise
        except ValueError as e:
            raise UnsupportedOption(f"cannot read --{option}={value}: {e}") from None
    return job
