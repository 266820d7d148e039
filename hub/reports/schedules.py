"""Report schedules: cron expressions, checked, and their next runs."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from croniter import croniter

MIN_INTERVAL = timedelta(minutes=5)


class ScheduleError(ValueError):
    """A cron expression that cannot be used; the message says why."""


def check(expression: str, now: datetime, min_interval: timedelta = MIN_INTERVAL) -> str:
    """The expression, normalised; raise :class:`ScheduleError` when it is not a five-field
    cron expression or fires more often than ``min_interval``."""
    text = " ".join(str(expression).split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ScheduleError(
            f"{expression!r} is not a cron expression of five fields "
            '(minute hour day-of-month month day-of-week, e.g. "0 6 * * 1" for Mondays 06:00)'
        )
    runs = next_runs(text, now, 4)
    shortest = min(b - a for a, b in itertools.pairwise(runs))
    if shortest < min_interval:
        minutes = int(min_interval.total_seconds() // 60)
        raise ScheduleError(f"{expression!r} runs more often than every {minutes} minutes")
    return text


def next_runs(expression: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` times the schedule fires after ``after``."""
    it = croniter(expression, after)
    return [it.get_next(datetime) for _ in range(count)]


def due(expression: str, last_fired: datetime, now: datetime) -> datetime | None:
    """The latest firing time in (``last_fired``, ``now``], or None: a service that was down
    fires a missed schedule once, not once per missed slot."""
    it = croniter(expression, now)
    latest = it.get_prev(datetime)
    return latest if latest > last_fired else None
