"""The one reader of Slurm's answers: the ``openapi/v0.0.38`` JSON that ``squeue --json``,
``sinfo --json`` and ``sacct --json`` print on Slurm 22.05, and that slurmrestd returns.

Both access modes ("local": the commands on this host; "rest": slurmrestd) read jobs, nodes
and accounting records here, and nothing in factoryhub reads Slurm's text formats: a job's
name and comment are its user's, and Slurm keeps newlines and ``\\x1f`` in them, so a line
of ``squeue --format`` output can be written by anyone who submits a job. In JSON they stay
strings inside one object.

An answer that holds errors, or is not a v0.0.38 document, is
:class:`~.client.SlurmUnavailable` (nothing in it is trusted); the types themselves are
declared in :mod:`~.client`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryhub.spawners.slurm.client import JobInfo, SlurmUnavailable

# What Slurm says when the controller (or slurmdbd) could not be reached.
UNAVAILABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted"
    r"|Connection refused|Communication connection failure|Slurm backup controller in standby"
    r"|slurm_load_jobs error: Unexpected message received|Unspecified error",
    re.IGNORECASE,
)
_NOTHING_FOUND = 9003  # slurmdb_jobs_get's error_number for an empty answer
_NOT_SET = {"", "None", "(null)", "N/A", "Unknown"}


# ---------------------------------------------------------------------- documents


def loads(text: str, what: str) -> dict[str, Any]:
    """A Slurm JSON document; :class:`SlurmUnavailable` when ``text`` is not one."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SlurmUnavailable(f"Slurm's answer to {what} is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise SlurmUnavailable(f"Slurm's answer to {what} is not a JSON object")
    return data


def errors_of(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The document's ``errors``, without slurmdbd's "Nothing found" (an empty answer)."""
    errors = data.get("errors") or []
    if not isinstance(errors, list):
        return [{"description": f"errors is not a list: {errors!r:.100}"}]
    return [
        e if isinstance(e, Mapping) else {"description": repr(e)}
        for e in errors
        if not (isinstance(e, Mapping) and e.get("error_number") == _NOTHING_FOUND)
    ]


def error_text(errors: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(str(e.get("description") or e.get("error") or dict(e)) for e in errors)


def listed(data: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    """The objects under ``key`` of a query's answer. Any error in the answer, or no list
    there, is :class:`SlurmUnavailable`: a query Slurm did not answer in full says nothing."""
    errors = errors_of(data)
    if errors:
        raise SlurmUnavailable(f"Slurm did not answer ({what}): {error_text(errors)}")
    items = data.get(key)
    if items is None and len(data.get("errors") or []) > 0:
        return []  # slurmdbd's "Nothing found", which may come without the list
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise SlurmUnavailable(f"Slurm's answer to {what} has no {key} list (not v0.0.38?)")
    return items


# ---------------------------------------------------------------------- jobs


def local_time(epoch: Any) -> str:
    """An epoch as local time (``2026-11-23T12:08:22``); "" for none."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= 0:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def _text(job: Mapping[str, Any], key: str) -> str:
    value = job.get(key)
    return value if isinstance(value, str) else ""


def _set(text: str) -> str:
    return "" if text in _NOT_SET else text


def _state(value: Any) -> str:
    # v0.0.38 has one string; later versions a list of flags, the base state first
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"no job_state: {value!r:.60}")
    return value.split()[0]


def job_id_of(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"not a job id: {value!r:.60}")
    return str(value)


def job_info(job: Mapping[str, Any]) -> JobInfo:
    """A v0.0.38 job object (``squeue --json``, slurmrestd's ``/jobs``) as a :class:`JobInfo`.
    Names and comments are kept as they are; ValueError when the id or state is missing."""
    return JobInfo(
        job_id=job_id_of(job.get("job_id")),
        state=_state(job.get("job_state")),
        reason=_set(_text(job, "state_reason")),
        nodes=_set(_text(job, "nodes")),
        start_time=local_time(job.get("start_time")),
        end_time=local_time(job.get("end_time")),
        name=_text(job, "name"),
        user=_text(job, "user_name"),
        partition=_text(job, "partition"),
        comment=_text(job, "comment"),
        submit_time=local_time(job.get("submit_time")),
    )


def jobs_of(data: Mapping[str, Any], what: str = "the queue query") -> list[JobInfo]:
    """Every job of a v0.0.38 jobs document; :class:`SlurmUnavailable` if it holds errors, a
    job without id or state, or one id twice (then nothing in it is trusted)."""
    try:
        jobs = [job_info(j) for j in listed(data, "jobs", what)]
    except ValueError as e:
        raise SlurmUnavailable(f"Slurm's answer to {what} has a job without {e}") from None
    if len({j.job_id for j in jobs}) != len(jobs):
        raise SlurmUnavailable(f"Slurm's answer to {what} lists a job twice")
    return jobs


def reservation_jobs(data: Mapping[str, Any], name: str) -> list[tuple[str, int, str]]:
    """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
    found = []
    for job in listed(data, "jobs", "the queue query"):
        if job.get("resv_name") != name:
            continue
        try:
            info = job_info(job)
        except ValueError:
            continue
        if not info.active:
            continue
        cpus = _count(job.get("cpus"))
        memory = _count(job.get("memory_per_node")) or _count(job.get("memory_per_cpu")) * cpus
        found.append((info.state, cpus, f"{memory}M"))
    return found


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# ---------------------------------------------------------------------- nodes, reservations


def node_view(node: Mapping[str, Any]) -> dict[str, str]:
    """A v0.0.38 node (``sinfo --json``, slurmrestd's ``/nodes``) with the keys of
    ``scontrol show node`` that factoryhub reads."""
    flags = [f for f in node.get("state_flags") or [] if isinstance(f, str)]
    return {
        "NodeName": str(node.get("name", "")),
        "NodeAddr": str(node.get("address") or ""),
        "NodeHostName": str(node.get("hostname") or ""),
        "State": "+".join([str(node.get("state", "")).upper(), *flags]),
        "CPUTot": str(_count(node.get("cpus"))),
        "CPUAlloc": str(_count(node.get("alloc_cpus"))),
        "RealMemory": str(_count(node.get("real_memory"))),
        "AllocMem": str(_count(node.get("alloc_memory"))),
        "Partitions": ",".join(p for p in node.get("partitions") or [] if isinstance(p, str)),
    }


def reservation_view(res: Mapping[str, Any], now: float | None = None) -> dict[str, str]:
    """A v0.0.38 reservation (slurmrestd's ``/reservations``) with ``scontrol show``'s keys."""
    now = time.time() if now is None else now
    start, end = _count(res.get("start_time")), _count(res.get("end_time"))
    return {
        "ReservationName": str(res.get("name", "")),
        "Nodes": str(res.get("node_list", "")),
        "CoreCnt": str(_count(res.get("core_count"))),
        "State": "ACTIVE" if start <= now < end else "INACTIVE",
        "StartTime": local_time(start),
        "EndTime": local_time(end),
    }


# ---------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class AccountedJob:
    """One job of Slurm accounting (``sacct --json``, slurmrestd's ``/slurmdb/.../job``);
    times as epochs, 0 for none (not started, still running)."""

    job_id: str
    user: str
    account: str
    partition: str
    state: str
    start: int
    end: int
    elapsed_s: int
    cpus: int
    gpus: int
    name: str


def gpus_of(tres: Any) -> int:
    """GPUs of a TRES list: ``gres/gpu`` when given, else the sum of the typed
    ``gres/gpu:TYPE`` (Slurm lists both for typed requests)."""
    total, typed = None, 0
    for item in tres if isinstance(tres, list) else []:
        if not isinstance(item, Mapping) or item.get("type") != "gres":
            continue
        name, count = item.get("name"), _count(item.get("count"))
        if name == "gpu":
            total = count
        elif isinstance(name, str) and name.startswith("gpu:"):
            typed += count
    return typed if total is None else total


def _tres_count(tres: Any, kind: str) -> int:
    items = tres if isinstance(tres, list) else []
    return sum(
        _count(i.get("count")) for i in items if isinstance(i, Mapping) and i.get("type") == kind
    )


def _mapping(job: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = job.get(key)
    return value if isinstance(value, Mapping) else {}


def accounted_job(job: Mapping[str, Any]) -> AccountedJob:
    """A v0.0.38 accounting record; ValueError without a job id."""
    times, state = _mapping(job, "time"), _mapping(job, "state")
    allocated = _mapping(job, "tres").get("allocated")
    current = state.get("current")
    return AccountedJob(
        job_id=job_id_of(job.get("job_id")),
        user=_text(job, "user"),
        account=_text(job, "account"),
        partition=_text(job, "partition"),
        state=current.split()[0] if isinstance(current, str) and current.strip() else "",
        start=_count(times.get("start")),
        end=_count(times.get("end")),
        elapsed_s=_count(times.get("elapsed")),
        cpus=_tres_count(allocated, "cpu"),
        gpus=gpus_of(allocated),
        name=_text(job, "name"),
    )


def accounted_jobs(
    data: Mapping[str, Any], what: str = "the accounting query"
) -> list[AccountedJob]:
    """Every record of an accounting document ("Nothing found" is none);
    :class:`SlurmUnavailable` when it holds errors or a record without an id."""
    try:
        return [accounted_job(j) for j in listed(data, "jobs", what)]
    except ValueError as e:
        raise SlurmUnavailable(f"Slurm's answer to {what} has a record without {e}") from None


def accounted_state(data: Mapping[str, Any], job_id: str) -> str:
    """The state accounting recorded for ``job_id`` (e.g. ``COMPLETED``); "" when none."""
    return next((j.state for j in accounted_jobs(data) if j.job_id == job_id), "")
