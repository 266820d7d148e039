"""Slurm's units as text, read and written in one place: time limits and memory sizes.

One parser reads every time limit factoryhub meets, in three forms:

- :func:`parse_slurm_time`: all of Slurm's forms (``M``, ``M:S``, ``H:M:S``, ``D-H``,
  ``D-H:M``, ``D-H:M:S``), as sbatch reads them (a job script's ``--time``);
- :func:`parse_walltime`: what a person types in the spawn form or a notebook: ``HH:MM``
  (hours and minutes, not Slurm's minutes and seconds), ``HH:MM:SS`` or ``D-HH:MM[:SS]``;
- :func:`walltime_seconds`: the site file's strict form, exactly the schema's
  ``$defs/slurmTime`` pattern (:data:`SLURM_TIME_PATTERN`, drift-tested).

Every form is ASCII digits only and whole-string: a trailing newline or a full-width digit is
no time, so nothing but a time can reach a job script through it.
"""

from __future__ import annotations

import re

# The site file's Slurm time: the schema's $defs/slurmTime pattern (a unit test keeps them
# the same string).
SLURM_TIME_PATTERN = r"^([0-9]{1,3}-([01][0-9]|2[0-3])|[0-9]{2}):[0-5][0-9]:[0-5][0-9]$"
_SITE_TIME = re.compile(SLURM_TIME_PATTERN)

# [days-]first[:second[:third]]; what the fields mean depends on the form and their number.
_TIME = re.compile(
    r"(?:(?P<days>[0-9]{1,3})-)?(?P<first>[0-9]{1,6})"
    r"(?::(?P<second>[0-5][0-9]))?(?::(?P<third>[0-5][0-9]))?"
)
_PERSON_HOURS_DIGITS = 3  # the spawn form's pattern allows hours of 1 to 3 digits

_MEMORY = re.compile(r"([0-9]{1,9})([KMGT]?)B?", re.IGNORECASE)
_MEMORY_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_slurm_time(text: object, *, hours_minutes: bool = False) -> int:
    """Seconds in a Slurm time string; ValueError when it is none.

    Slurm reads ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M`` and ``D-H:M:S``. With
    ``hours_minutes`` (what people type) two fields are hours and minutes, and a lone number
    (``30``) or days with hours only (``1-02``) are refused as too easy to misread.
    """
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a time of the form HH:MM:SS or D-HH:MM:SS: {text!r}")
    fields = [int(f) for f in match.group("first", "second", "third") if f is not None]
    with_days = match["days"] is not None
    if hours_minutes:
        if len(fields) < 2 or len(match["first"]) > _PERSON_HOURS_DIGITS:
            raise ValueError(f"not a time of the form HH:MM:SS or D-HH:MM:SS: {text!r}")
        hours, minutes, seconds = [*fields, 0][:3]
    elif with_days:
        hours, minutes, seconds = [*fields, 0, 0][:3]
    else:
        # M, M:S or H:M:S
        hours, minutes, seconds = [0, *fields, 0][:3] if len(fields) < 3 else fields
    if with_days and hours > 23:
        raise ValueError(f"hours must be below 24 when days are given: {text!r}")
    days = int(match["days"] or 0)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_walltime(text: object) -> int:
    """Seconds in a time a person typed: ``HH:MM``, ``HH:MM:SS`` or ``D-HH:MM[:SS]``."""
    return parse_slurm_time(text, hours_minutes=True)


def walltime_seconds(text: object) -> int:
    """Seconds in a site file's time: exactly ``HH:MM:SS`` or ``D-HH:MM:SS`` (the schema's
    pattern); ValueError otherwise."""
    if not isinstance(text, str) or not _SITE_TIME.fullmatch(text):
        raise ValueError(f'expected a Slurm time "HH:MM:SS" or "D-HH:MM:SS", got {text!r}')
    return parse_slurm_time(text)


def slurm_minutes(text: object) -> int:
    """A Slurm time in whole minutes, rounded up, at least one (slurmrestd's ``time_limit``)."""
    return max(1, -(-parse_slurm_time(text) // 60))


def format_walltime(seconds: int) -> str:
    """The Slurm time string ``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def human_walltime(seconds: int) -> str:
    """``8 h``, ``1 day``, ``1 day 12 h``, ``30 min``: for people, not for Slurm."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = []
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    return " ".join(parts) or f"{seconds} s"


def memory_mb(text: object) -> int:
    """A Slurm memory size (``2048``, ``512M``, ``2G``, ``1T``, ``2048K``; ``B`` optional, any
    case) in MB, at least 1; ValueError when it is none."""
    match = _MEMORY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"cannot read the memory size {text!r}")
    return max(1, int(int(match.group(1)) * _MEMORY_MB[match.group(2).upper()]))
