"""The template's training as a Slurm batch job: 1..N GPUs per node, 1..M nodes, ``srun`` +
``torchrun``, under the project account of the user's server.

The job script is rendered (jinja2) from a validated :class:`TrainJobRequest` only: every
value is checked against a range or a pattern first, and quoted again when rendered.
The job runs the same training loop as the interactive notebook
(``python -m factoryhub.helpers.lm.train``), which writes ``metrics.jsonl``,
``checkpoint.pt`` and ``done.json`` into the run's folder; :class:`TrainJob` follows them.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from factoryhub.helpers import slurm_jobs
from factoryhub.spawners.model.slurm_units import format_walltime, parse_walltime

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PATH = re.compile(r"[A-Za-z0-9_./+@-]{1,512}")
MODEL_SIZES = ("tiny", "small", "medium")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"}

SCRIPT = """#!/bin/bash
#SBATCH --job-name={{ name | q }}
#SBATCH --nodes={{ r.nodes }}
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task={{ r.cpus_per_node }}
#SBATCH --mem={{ r.memory_gb }}G
#SBATCH --partition={{ r.partition | q }}
#SBATCH --time={{ r.walltime | q }}
{% if r.gpus_per_node %}#SBATCH --gpus-per-node={{ r.gpus_per_node }}
{% endif %}{% if r.account %}#SBATCH --account={{ r.account | q }}
{% endif %}#SBATCH --output={{ out_dir | q }}/slurm-%j.log
# factoryhub: the train-interactive template's training as a batch job.
# Every value above was validated by factoryhub.helpers.train_job.
set -euo pipefail
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR="$first_node" MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export OMP_NUM_THREADS={{ threads }}
echo "factoryhub: job $SLURM_JOB_ID, $SLURM_JOB_NUM_NODES node(s), {{ procs }} process(es) each"
srun --kill-on-bad-exit=1 {{ python | q }} -m torch.distributed.run \\
    --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node={{ procs }} \\
    --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \\
    -m factoryhub.helpers.lm.train {{ args }}
"""


class InvalidRequest(ValueError):
    """A value of the training request is out of range; the message says which and why."""


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _check_path(name: str, value: object, allow_empty: bool = False) -> str:
    if allow_empty and value == "":
        return value
    expanded = os.path.expanduser(value) if isinstance(value, str) else value
    if not isinstance(expanded, str) or not _PATH.fullmatch(expanded) or ".." in expanded:
        raise InvalidRequest(
            f"{name} must be a path of letters, digits and _ . / + @ - (no ..), got {value!r}"
        )
    return str(Path(expanded).absolute())


@dataclass(frozen=True)
class TrainJobRequest:
    """What the user asks for; ``validated()`` returns a checked copy or raises
    :class:`InvalidRequest`."""

    out_dir: str
    data: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node_cpu: int = 1
    cpus_per_node: int = 2
    memory_gb: int = 4
    partition: str = "batch"
    walltime: str = "00:30:00"
    account: str = ""
    model_size: str = "tiny"
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 3e-3
    extra: dict[str, Any] = field(default_factory=dict)

    def validated(self) -> TrainJobRequest:
        _check_int("nodes", self.nodes, 1, 64)
        _check_int("gpus_per_node", self.gpus_per_node, 0, 8)
        _check_int("procs_per_node_cpu", self.procs_per_node_cpu, 1, 64)
        _check_int("cpus_per_node", self.cpus_per_node, 1, 256)
        _check_int("memory_gb", self.memory_gb, 1, 4096)
        _check_int("steps", self.steps, 1, 10_000_000)
        _check_int("batch_size", self.batch_size, 1, 65536)
        if not _NAME.fullmatch(self.partition):
            raise InvalidRequest(
                f"partition must be a Slurm partition name, got {self.partition!r}"
            )
        if self.account and not _NAME.fullmatch(self.account):
            raise InvalidRequest(f"account must be a Slurm account name, got {self.account!r}")
        try:
            # What a person types ("02:00" = two hours), written the way Slurm reads it
            # ("02:00:00"): Slurm itself would read "02:00" as two minutes.
            walltime = format_walltime(parse_walltime(self.walltime))
        except ValueError as e:
            raise InvalidRequest(f"walltime: {e}") from None
        if self.model_size not in MODEL_SIZES:
            raise InvalidRequest(f"model_size must be one of {', '.join(MODEL_SIZES)}")
        lr: object = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= 1:
            raise InvalidRequest(f"learning_rate must be a number in (0, 1], got {lr!r}")
        if self.extra:
            raise InvalidRequest(f"unknown settings: {', '.join(sorted(self.extra))}")
        return TrainJobRequest(
            **{
                **self.__dict__,
                "out_dir": _check_path("out_dir", self.out_dir),
                "data": _check_path("data", self.data, allow_empty=True),
                "learning_rate": float(lr),
                "walltime": walltime,
            }
        )

    @property
    def procs(self) -> int:
        """Training processes per node: one per GPU, or ``procs_per_node_cpu`` on CPUs."""
        return self.gpus_per_node or self.procs_per_node_cpu


def current_account() -> str:
    """The project account the user's server runs under (its job's account)."""
    return os.environ.get("SLURM_JOB_ACCOUNT", "")


def train_args(request: TrainJobRequest) -> list[str]:
    """The arguments of ``python -m factoryhub.helpers.lm.train`` for a request."""
    args = [
        "--out",
        request.out_dir,
        "--steps",
        str(request.steps),
        "--batch-size",
        str(request.batch_size),
        "--lr",
        repr(request.learning_rate),
        "--size",
        request.model_size,
    ]
    if request.data:
        args += ["--data", request.data]
    return args


def render_script(request: TrainJobRequest, python: str = sys.executable) -> str:
    """The job script for a validated request."""
    request = request.validated()
    env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)  # noqa: S701 - a shell script, values quoted
    env.filters["q"] = lambda v: shlex.quote(str(v))
    threads = max(1, request.cpus_per_node // request.procs)
    return env.from_string(SCRIPT).render(
        r=request,
        name=f"factoryhub-train-{getpass.getuser()}",
        out_dir=request.out_dir,
        python=python,
        procs=request.procs,
        threads=threads,
        args=" ".join(shlex.quote(a) for a in train_args(request)),
    )


@dataclass
class TrainJob:
    """A submitted training job and the files its training writes."""

    job_id: str
    out_dir: Path

    @classmethod
    def submit(cls, request: TrainJobRequest, python: str = sys.executable) -> TrainJob:
        script = render_script(request, python)
        out_dir = Path(request.validated().out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(slurm_jobs.submit(script), out_dir)

    def state(self) -> str:
        """Slurm's state of the job: from the queue while it lists the job, then from
        accounting."""
        info = slurm_jobs.job(self.job_id)
        if info is not None:
            return info.state
        return slurm_jobs.final_state(self.job_id) or "UNKNOWN"

    def metrics(self) -> list[dict[str, Any]]:
        """The training's logged steps so far (``metrics.jsonl``)."""
        path = self.out_dir / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
        return out

    def log_tail(self, lines: int = 20) -> str:
        path = self.out_dir / f"slurm-{self.job_id}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def cancel(self) -> None:
        slurm_jobs.cancel(self.job_id)

    def wait(
        self,
        timeout: float = 3600,
        every: float = 2.0,
        on_update: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> str:
        """Wait for the job to end; return its final state. ``on_update(state, metrics)``
        is called at every look."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if on_update is not None:
                on_update(state, self.metrics())
            if state in ENDED:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {state} after {timeout:g} s")
            time.sleep(every)
