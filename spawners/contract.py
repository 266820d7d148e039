"""What the spawner takes from batchspawner, and what it refuses.

``FactorySlurmSpawner`` derives from batchspawner's ``SlurmSpawner`` because batchspawner is a
named dependency of the product and its ``req_*`` traits are the contract a batch job is
described by (they are what the job script is rendered from). It replaces batchspawner's
start, poll, stop, progress and submission, so most of batchspawner's other settings would do
nothing. Rather than ignore them silently, the spawner refuses them at construction with a
message naming the setting and what factoryhub uses instead (:func:`refusals`).

The ``req_*`` traits, and where each value comes from:

- :data:`FROM_REQUEST`: set for every spawn from the request the server checked
  (:mod:`factoryhub.spawners.options`); configuring them would be overwritten, so they are
  refused in configuration (the site file's profiles, projects and courses set them);
- :data:`FROM_CONFIG`: honoured from configuration as batchspawner defines them;
- :data:`COMPUTED`: not configurable, computed as batchspawner does (the home directory comes
  from the Slurm client).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from factoryhub.spawners.model.courses import Course
from factoryhub.spawners.options import JobRequest

#: req_* traits set for every spawn from the checked request: what sets them instead.
FROM_REQUEST = {
    "req_partition": "the site file's profiles[].partition",
    "req_nprocs": "the site file's profiles[].cpus",
    "req_memory": "the site file's profiles[].memory_gb (the user's choice within its range)",
    "req_runtime": "the site file's profiles[].walltime (the user's choice up to its maximum)",
    "req_gres": "the site file's profiles[].gpus (requested as --gres=gpu:N)",
    "req_account": "the site file's projects[].account (a course server: its project's)",
    "req_reservation": "the site file's courses[].reservation (course servers only)",
}

#: req_* traits honoured from configuration: what they do.
FROM_CONFIG = {
    "req_qos": "#SBATCH --qos of every server job",
    "req_keepvars_extra": "names added to the job's --export list",
}

#: req_* traits batchspawner computes (not configurable): what they hold.
COMPUTED = {
    "req_username": "the user's name",
    "req_homedir": "the user's home on the cluster, as the Slurm client knows it (--chdir)",
    "req_keepvars": "the names of the server's environment (--export)",
}

_JSON = "Slurm is read as JSON (squeue --json or slurmrestd), never matched with patterns"
_SERVER = "the server runs <python_env>/bin/factoryhub-singleuser (or in the profile's image)"

#: Inherited settings factoryhub does not honour: what it uses instead.
REFUSED = {
    name: f"it is set for every spawn from the checked request ({source})"
    for name, source in FROM_REQUEST.items()
}
REFUSED.update(
    {
        "batch_script": "the job script is factoryhub's template (spawners/templates/"
        "job.sh.j2) with every value checked; add #SBATCH options with extra_sbatch_options",
        "batch_submit_cmd": "jobs are submitted by the Slurm client of slurm_access (sbatch as "
        "the user through user_command_prefix, or slurmrestd)",
        "batch_query_cmd": "job states come from the shared poller's one query for all "
        "servers, every slurm_poll_interval seconds",
        "batch_cancel_cmd": "jobs are cancelled by the Slurm client of slurm_access",
        "exec_prefix": "Slurm's commands run as the user through user_command_prefix",
        "batchspawner_singleuser_cmd": _SERVER,
        "cmd": _SERVER,
        "startup_poll_interval": "the shared poller's slurm_poll_interval",
        "state_pending_re": _JSON,
        "state_running_re": _JSON,
        "state_unknown_re": _JSON,
        "state_exechost_re": _JSON,
        "state_exechost_exp": _JSON,
        "req_options": "extra_sbatch_options (each option checked)",
        "req_prologue": "nothing runs around the server in its job: prepare python_env or "
        "the profile's image",
        "req_epilogue": "nothing runs around the server in its job: prepare python_env or "
        "the profile's image",
        "req_srun": "the server is the batch step itself, started with exec (no srun step)",
        "req_queue": "the site file's profiles[].partition",
        "req_host": "slurm_access and slurm_rest (the Slurm client knows its cluster)",
        "req_cluster": "one Slurm cluster per hub: slurm_access and slurm_rest",
        "req_ngpus": "the site file's profiles[].gpus (requested as --gres=gpu:N)",
        "ip": "the server listens on its node's address towards the hub and reports it",
        "port": "the server listens on a free port of its node and reports it",
    }
)


class RefusedSetting(ValueError):
    """An inherited setting that factoryhub does not honour was configured."""


def refusals(
    config: Mapping[str, object], sections: Iterable[str], given: Iterable[str] = ()
) -> list[str]:
    """One message per refused setting found in ``config`` (in the spawner's own or a base
    class's section, ``sections``) or among the constructor's arguments ``given``."""
    found: list[str] = []
    for section in sections:
        settings = config[section] if section in config else None
        if not isinstance(settings, Mapping):
            continue
        found += [f"c.{section}.{name}" for name in settings if name in REFUSED]
    found += [name for name in given if name in REFUSED]
    return [
        f"{setting} cannot be configured with factoryhub's spawner: "
        f"{REFUSED[setting.rpartition('.')[2]]}"
        for setting in found
    ]


def req_values(request: JobRequest, course: Course | None) -> dict[str, str]:
    """The :data:`FROM_REQUEST` traits' values for a checked request (and its course)."""
    return {
        "req_partition": request.partition,
        "req_nprocs": str(request.cpus),
        "req_memory": f"{request.memory_gb}G",
        "req_runtime": request.walltime,
        "req_gres": f"gpu:{request.gpus}" if request.gpus else "",
        "req_account": request.account,
        "req_reservation": course.reservation if course else "",
    }
