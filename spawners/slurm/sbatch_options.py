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
_MEMORY = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)
_MEMORY_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


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


def minutes(walltime: str) -> int:
    """Slurm's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in
    whole minutes, rounded up."""
    days, _, rest = walltime.partition("-") if "-" in walltime else ("0", "", walltime)
    parts = [int(p) for p in rest.split(":")]
    if "-" in walltime:
        hours, mins, secs = [*parts, 0, 0][:3]
    elif len(parts) == 3:
        hours, mins, secs = parts
    elif len(parts) == 2:
        hours, mins, secs = 0, parts[0], parts[1]
    else:
        hours, mins, secs = 0, parts[0], 0
    total = ((int(days) * 24 + hours) * 60 + mins) * 60 + secs
    return max(1, -(-total // 60))


def memory_mb(value: str) -> int:
    match = _MEMORY.match(value.strip())
    if not match:
        raise UnsupportedOption(f"cannot read the memory size {value!r}")
    return max(1, int(int(match.group(1)) * _MEMORY_MB[match.group(2).upper()]))


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
                job["time_limit"] = minutes(value)
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
