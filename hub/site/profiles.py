"""The site file's ``profiles`` section: each entry becomes a
:class:`~factoryhub.spawners.model.profiles.Profile` (the one model of a profile, which the
spawner gets too). Checks the schema cannot express: names are unique, the partition is
declared in ``slurm.partitions``, ``min <= default <= max`` and the walltime's
``0 < default <= max``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from factoryhub.hub.site.problems import Problem, entries, not_declared, show, unique_names
from factoryhub.hub.site.schema import SLURM_TIME_WORDS
from factoryhub.hub.site.slurm import declared_partitions
from factoryhub.spawners.model.profiles import Profile
from factoryhub.spawners.model.slurm_units import walltime_seconds


def build_profiles(entries_: Sequence[Mapping[str, Any]]) -> tuple[Profile, ...]:
    return tuple(Profile.from_config(p) for p in entries_)


def profiles_problems(data: Any) -> list[Problem]:
    profiles = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(profiles, list):
        return []
    partitions = declared_partitions(data)
    problems = unique_names(profiles, "profiles", "profile")
    for i, prof in enumerate(profiles):
        if not isinstance(prof, Mapping):
            continue
        here = f"profiles[{i}]"
        part = prof.get("partition")
        if isinstance(part, str) and partitions is not None and part not in partitions:
            problems.append(
                not_declared(f"{here}.partition", partitions, "slurm.partitions", show(part))
            )
        for key in ("memory_gb", "gpus"):
            rng = prof.get(key)
            if isinstance(rng, Mapping):
                problems += _range_problems(rng, f"{here}.{key}")
        wall = prof.get("walltime")
        if isinstance(wall, Mapping):
            problems += _walltime_problems(wall, f"{here}.walltime")
    return problems


def _is_int(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()


def _range_problems(rng: Mapping[str, Any], where: str) -> list[Problem]:
    lo, default, hi = rng.get("min"), rng.get("default"), rng.get("max")
    out = []
    if _is_int(lo) and _is_int(hi) and lo > hi:
        out.append(Problem(f"{where}.min", f"expected at most max ({hi:g}), got {lo:g}"))
    if _is_int(default):
        if _is_int(lo) and default < lo:
            out.append(
                Problem(f"{where}.default", f"expected at least min ({lo:g}), got {default:g}")
            )
        if _is_int(hi) and default > hi:
            out.append(
                Problem(f"{where}.default", f"expected at most max ({hi:g}), got {default:g}")
            )
    return out


def _walltime_problems(wall: Mapping[str, Any], where: str) -> list[Problem]:
    seconds: dict[str, int] = {}
    out = []
    for key in ("default", "max"):
        value = wall.get(key)
        if not isinstance(value, str):
            continue  # missing or wrong type: the schema reports it
        try:
            seconds[key] = walltime_seconds(value)
        except ValueError:
            out.append(Problem(f"{where}.{key}", f"expected {SLURM_TIME_WORDS}, got {show(value)}"))
            continue
        if seconds[key] <= 0:
            out.append(
                Problem(f"{where}.{key}", f"expected a time longer than zero, got {show(value)}")
            )
    if "default" in seconds and "max" in seconds and seconds["default"] > seconds["max"]:
        out.append(
            Problem(
                f"{where}.default",
                f"expected at most max ({wall['max']}), got {show(wall['default'])}",
            )
        )
    return out


def profile_names(data: Any) -> list[str]:
    """The names of the profiles declared (for the checks of other sections)."""
    return [
        p["name"]
        for p in entries(data.get("profiles") if isinstance(data, Mapping) else None)
        if isinstance(p.get("name"), str)
    ]
