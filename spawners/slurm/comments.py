"""What this hub writes into its jobs' ``--comment``, and how it reads it back.

A server job carries the hub's tag; a Dask worker job carries
``<hub tag>/dask-of/<server job id>`` (:func:`dask_comment`), so that the shared poller can
cancel a server's workers as soon as that server job has ended. A comment is written by
whoever submits the job, so it only ever picks *which* of a user's own jobs to look at;
the job's id, state and user always come from Slurm.
"""

from __future__ import annotations

import re

__all__ = ["dask_comment", "parent_job"]

_PARENT = re.compile(r"/dask-of/([0-9]+)$")


def dask_comment(hub_tag: str, server_job_id: str) -> str:
    """The comment of the Dask worker jobs of server job ``server_job_id``."""
    return f"{hub_tag}/dask-of/{server_job_id}"


def parent_job(comment: str, hub_tag: str) -> str | None:
    """The server job a worker job belongs to, from its comment (None: not a worker of
    this hub)."""
    if not comment.startswith(f"{hub_tag}/dask-of/"):
        return None
    match = _PARENT.search(comment)
    return match.group(1) if match else None
