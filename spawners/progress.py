"""What a user sees while their server is on its way: plain words for Slurm's states, and the
spawner's stream of progress events (JupyterHub's ``Spawner.progress``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from factoryhub.spawners.slurm.client import JobInfo

# Slurm's pending reasons, in the words of someone waiting for a notebook.
REASONS = {
    "Priority": "other jobs with higher priority are ahead in the queue",
    "Resources": "waiting for a node with the resources you asked for to become free",
    "None": "the scheduler has not looked at it yet",
    "BeginTime": "waiting for its start time",
    "Dependency": "waiting for another job to finish",
    "ReqNodeNotAvail": "the nodes it needs are not available (maintenance or reserved)",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is not accepting jobs",
    "PartitionTimeLimit": "the walltime is above the partition's limit",
    "QOSMaxJobsPerUserLimit": "you have reached your limit of running jobs",
    "AssocMaxJobsLimit": "your project has reached its limit of running jobs",
    "AssocGrpCpuLimit": "your project's CPU limit is reached",
    "AssocGrpGRES": "your project's GPU limit is reached",
    "JobHeldUser": "held by you",
    "JobHeldAdmin": "held by an administrator",
    "Reservation": "waiting for its reservation to start",
    "launch failed requeued held": "the node could not start it; an administrator must release it",
}


def describe_reason(reason: str) -> str:
    if not reason:
        return ""
    return REASONS.get(reason, reason)


def describe(job: JobInfo | None, job_id: str, partition: str) -> tuple[int, str]:
    """(percent, message) for the hub's progress bar."""
    if job is None:
        return 20, f"Submitted job {job_id} to partition {partition}; waiting for Slurm"
    if job.pending:
        words = describe_reason(job.reason)
        text = f"Job {job_id} is queued in partition {job.partition or partition}"
        if words:
            text += f": {words} ({job.reason})"
        if job.start_time:
            text += f". Slurm expects it to start at {job.start_time.replace('T', ' ')}"
        return 30, text
    if job.running:
        node = job.nodes or "its node"
        return 70, f"Job {job_id} is running on {node}: starting JupyterLab"
    return 90, f"Job {job_id} is {job.state.lower()}"


class WaitingServer(Protocol):
    """What the progress stream reads of a spawner while its server starts."""

    job_id: str
    current_job: JobInfo | None
    ready_address: tuple[str, int] | None
    ready_node: str
    ready_event: asyncio.Event

    @property
    def job_partition(self) -> str: ...


async def progress_events(server: WaitingServer) -> AsyncIterator[dict[str, int | str]]:
    """The job's queue state in words whenever it changes (pending reason, expected start,
    node), until the server has reported its address."""
    last = None
    while True:
        job_id = server.job_id
        if job_id:
            percent, message = describe(server.current_job, job_id, server.job_partition)
            if message != last:
                yield {"progress": percent, "message": message}
                last = message
        if server.ready_address is not None:
            # JupyterLab can answer before the poller has seen the job run: say where
            # it runs anyway (the node the server itself reported).
            if job_id and not (last or "").startswith(f"Job {job_id} is running"):
                node = server.ready_node or "its node"
                yield {
                    "progress": 70,
                    "message": f"Job {job_id} is running on {node}: JupyterLab started",
                }
            yield {"progress": 95, "message": "JupyterLab answers; connecting"}
            return
        # Wake at once when the server reports in: the hub stops reading progress as
        # soon as the spawn completes, so these last messages must not wait a tick.
        event = server.ready_event
        if not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), timeout=0.5)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0.5)
