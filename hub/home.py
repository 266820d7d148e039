"""The hub home page's view of each server's Slurm job.

:func:`job_summary` turns a spawner into what ``templates/home.html`` shows: the job id,
its node, project (Slurm account), profile, state, when its walltime ends and how long
is left, and -- when a server ended without its user stopping it -- why.

It only reads attributes, and tolerates every one of them missing: a
``FactorySlurmSpawner`` loaded after a hub restart has no ``current_job``, one from an
older hub no ``last_end_message``, and the home page may hand it a low-level
``orm.Spawner`` (a stopped named server) that has only ``name``, ``state`` and
``user_options``.

JupyterHub calls every callable in ``c.JupyterHub.template_vars`` with the current
user, and puts what it returns into the template. So the value to configure is
:func:`factoryhub_job` (user -> :func:`job_summary`), which the template then calls
per spawner: ``{% set job = factoryhub_job(spawner) %}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from factoryhub.spawners.progress import describe_reason

# Slurm's long job states (squeue %T), in words.
STATE_WORDS = {
    "PENDING": "queued",
    "CONFIGURING": "starting (node being configured)",
    "REQUEUED": "requeued",
    "REQUEUE_HOLD": "requeued and held",
    "RESIZING": "resizing",
    "RUNNING": "running",
    "COMPLETING": "ending",
    "SIGNALING": "being signalled",
    "STAGE_OUT": "ending (staging out)",
    "SUSPENDED": "suspended",
    "STOPPED": "stopped",
}
# Still waiting in the queue: no node, and the walltime has not begun.
QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD"})


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name``, or ``default`` when missing (or when a property raises)."""
    try:
        value = getattr(obj, name)
    except Exception:
        return default
    return default if value is None else value


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _duration(seconds: float) -> str:
    """``2 h 10 min``, ``1 d 3 h``, ``45 min``; whole minutes, rounded down."""
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def walltime_end_text(end_time: str, now: datetime | None = None) -> str:
    """Slurm's end time (``2026-11-23T14:03:00``, local time) for people:
    ``14:03 (2 h 10 min left)``; another day's date is written out. ``""`` if unknown."""
    end_time = _text(end_time)
    if not end_time:
        return ""
    try:
        end = datetime.fromisoformat(end_time)
    except ValueError:
        return end_time.replace("T", " ")
    now = now or datetime.now(end.tzinfo)
    if end.date() == now.date():
        when = end.strftime("%H:%M")
    elif end.date() == (now + timedelta(days=1)).date():
        when = "tomorrow " + end.strftime("%H:%M")
    else:
        when = end.strftime("%Y-%m-%d %H:%M")
    left = (end - now).total_seconds()
    if left <= 0:
        return f"{when} (walltime reached)"
    if left < 60:
        return f"{when} (less than a minute left)"
    return f"{when} ({_duration(left)} left)"


def _named(configs: Any, name: str) -> Mapping[str, Any]:
    """The entry called ``name`` in a list of config dicts (profiles, projects)."""
    if not name or not isinstance(configs, list | tuple):
        return {}
    for config in configs:
        if isinstance(config, Mapping) and config.get("name") == name:
            return config
    return {}


def job_summary(spawner: Any, now: datetime | None = None) -> dict[str, Any] | None:
    """What the home page shows about a server's Slurm job, or None: nothing to show
    (no job, and no message about how the last one ended).

    Keys, all text (``""`` when unknown) but ``queued`` (bool: the job waits in the queue):
    server (its name, ``""`` for the default server), job_id, state (Slurm's, e.g.
    ``RUNNING``), state_text (in words), reason and reason_text (why a queued job waits:
    Slurm's word, in words), node, project, account (the Slurm account), profile (its
    display name), profile_name, walltime (asked for), walltime_end (``14:03 (2 h 10 min
    left)``), end_message (why the server ended, only while it has no job).
    """
    if spawner is None:
        return None
    state = _mapping(_attr(spawner, "state"))  # orm.Spawner's stored state
    job_id = _text(_attr(spawner, "job_id")) or _text(state.get("job_id"))
    end_message = _text(_attr(spawner, "last_end_message")) or _text(state.get("last_end_message"))
    if not job_id and not end_message:
        return None

    options = _mapping(_attr(spawner, "user_options"))
    request = _attr(spawner, "job_request")
    profile_name = _text(options.get("profile")) or _text(_attr(request, "profile"))
    profile = _named(_attr(spawner, "profiles"), profile_name)
    project = _text(options.get("project")) or _text(_attr(request, "project"))
    account = (
        _text(_attr(request, "account"))
        or _text(_named(_attr(spawner, "projects"), project).get("account"))
        or _text(_attr(spawner, "req_account"))
    )

    job = _attr(spawner, "current_job")
    # A record of an earlier job (or of none) says nothing about this one.
    if not job_id or _text(_attr(job, "job_id")) != job_id:
        job = None
    slurm_state = _text(_attr(job, "state"))
    queued = slurm_state in QUEUED_STATES
    reason = _text(_attr(job, "reason")) if queued else ""
    return {
        "server": _text(_attr(spawner, "name")),
        "job_id": job_id,
        "state": slurm_state,
        "state_text": STATE_WORDS.get(slurm_state, slurm_state.lower()),
        "reason": reason,
        "reason_text": describe_reason(reason),
        "node": "" if queued else _text(_attr(job, "nodes")),
        "project": project,
        "account": account,
        "profile": _text(profile.get("display_name")) or profile_name,
        "profile_name": profile_name,
        "walltime": _text(options.get("walltime")),
        "walltime_end": "" if queued else walltime_end_text(_attr(job, "end_time", ""), now),
        "end_message": "" if job_id else end_message,
        "queued": queued,
    }


def factoryhub_job(user: Any) -> Callable[..., dict[str, Any] | None]:
    """For ``c.JupyterHub.template_vars``: JupyterHub calls it with the current user (None
    on pages before sign-in); the template gets :func:`job_summary` to call per spawner."""
    return job_summary
