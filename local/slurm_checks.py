"""Whether each part of the local factory's Slurm answers: munge, slurmdbd, the controller,
the node, and a real job run to completion.

Slurm's answers are read as JSON through factoryhub's own Slurm package
(``factoryhub.spawners.slurm``: the commands and their one parser), never from its text.
"""

from __future__ import annotations

import subprocess
import time

from factoryhub.local import accounting
from factoryhub.local.slurm_layout import fail, nodename, run
from factoryhub.spawners.slurm import blocking, commands
from factoryhub.spawners.slurm.client import SlurmError, SlurmUnavailable

READY_STATES = ("idle", "mixed", "allocated")
# Node state flags (sinfo --json) that keep a node from running jobs now.
NOT_READY_FLAGS = frozenset(
    {"DRAIN", "NOT_RESPONDING", "FAIL", "MAINTENANCE", "POWERED_DOWN", "POWERING_DOWN",
     "POWER_DOWN", "POWERING_UP", "REBOOT_REQUESTED", "REBOOT_ISSUED"}
)  # fmt: skip
ENDED_BADLY = ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL")


def munge_ok() -> bool:
    try:
        cred = run(["munge", "-n"], timeout=5)
        if cred.returncode != 0:
            return False
        out = subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def dbd_ok() -> bool:
    """slurmdbd answers (``sacctmgr show cluster`` succeeds; its output is not read)."""
    try:
        out = run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def controller_up() -> bool:
    """slurmctld answers: ``sinfo --json`` comes back as a document without errors."""
    try:
        blocking.run(commands.nodes(), timeout=15)
    except (SlurmUnavailable, SlurmError):
        return False
    return True


def node_state() -> str:
    """This node's state as Slurm's JSON gives it, e.g. ``IDLE`` or ``IDLE+DRAIN``; ""
    when Slurm did not answer or does not know the node."""
    try:
        found = blocking.run(commands.nodes(nodename()), timeout=15)
    except (SlurmUnavailable, SlurmError):
        return ""
    return found[0]["State"] if found else ""


def _ready(state: str) -> bool:
    base, *flags = state.split("+")
    return base.lower() in READY_STATES and not NOT_READY_FLAGS.intersection(flags)


def wait_node_ready(timeout: float = 60) -> str:
    """Wait until the node is idle/mixed/allocated, resuming it once if it is down/drained."""
    resumed = False
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = node_state()
        if _ready(state):
            return state
        base, *flags = state.split("+")
        if not resumed and (base.lower() == "down" or "DRAIN" in flags):
            run(["scontrol", "update", f"nodename={nodename()}", "state=resume"], timeout=15)
            resumed = True
        time.sleep(0.3)
    raise fail(f"node {nodename()} is not ready after {timeout:.0f}s (state {state!r})", "slurmd")


def job_state(job_id: str) -> str:
    """The job's state in the queue; "" when Slurm does not list it or did not answer."""
    try:
        return blocking.run(commands.job_state(job_id), timeout=15)
    except (SlurmUnavailable, SlurmError):
        return ""


def verify_job(timeout: float = 60) -> float:
    """Run a job that does nothing as root, to completion; the seconds it took."""
    begin = time.monotonic()
    options = [
        "--oversubscribe",
        "--job-name=factoryhub-check",
        f"--account={accounting.OPS_ACCOUNT}",
        "--output=/dev/null",
        "--chdir=/tmp",
    ]
    try:
        job_id = blocking.run(commands.submit("#!/bin/sh\ntrue\n", options), timeout=30)
    except (SlurmUnavailable, SlurmError) as e:
        raise fail(f"sbatch failed: {e}", "slurmctld") from None
    state = ""
    while time.monotonic() - begin < timeout:
        state = job_state(job_id)
        if state == "COMPLETED":
            return time.monotonic() - begin
        if state in ENDED_BADLY:
            break
        time.sleep(0.2)
    try:
        blocking.run(commands.cancel(job_id), timeout=15)
    except (SlurmUnavailable, SlurmError):
        pass
    raise fail(f"check job {job_id} did not complete (state {state or 'unknown'})", "slurmd")
