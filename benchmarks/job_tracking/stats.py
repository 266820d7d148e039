"""The job-tracking benchmark's pure functions: statistics, sdiag parsing, rates.

No I/O here: the other modules of ``benchmarks.job_tracking`` call these.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import cli

# Queries of the job table (squeue): all jobs, one job by id, one user's jobs.
JOB_INFO_TYPES = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
# sdiag's own RPC: the second snapshot counts itself.
SDIAG_TYPE = "REQUEST_STATS_INFO"


def summarize(
    samples: Sequence[float], *, digits: int = 3, keep_samples: bool = True
) -> dict[str, Any]:
    """The benchmarks' summary with this report's keys: no unit suffix, and the mean."""
    return cli.summarize(samples, suffix="", digits=digits, keep_samples=keep_samples, mean=True)


_RPC_LINE = re.compile(r"^\s*(\S+)\s*\(\s*(\d+)\)\s+count:(\d+)")
_STAMP = re.compile(r"^(sdiag output at|Data since)\s.*\((\d+)\)\s*$")


def parse_sdiag(text: str) -> dict[str, Any]:
    """RPC counts of ``sdiag`` output.

    ``{"at": epoch, "since": epoch, "by_type": {name: count}, "by_user": {user: count}}``:
    the counts are read from the sections "Remote Procedure Call statistics by message
    type" and "... by user"; ``at``/``since`` from the header ("sdiag output at",
    "Data since": slurmctld's statistics start at its start and at midnight), None if
    absent. Raises ValueError when the message-type section is missing.
    """
    out: dict[str, Any] = {"at": None, "since": None, "by_type": {}, "by_user": {}}
    current: str | None = None
    seen_types = False
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            out["at" if stamp.group(1).startswith("sdiag") else "since"] = int(stamp.group(2))
            continue
        if line.startswith("Remote Procedure Call statistics by message type"):
            current, seen_types = "by_type", True
            continue
        if line.startswith("Remote Procedure Call statistics by user"):
            current = "by_user"
            continue
        if not line.strip() or not line[0].isspace():
            current = None  # a blank line or a new heading ends a section
            continue
        if current is None:
            continue
        match = _RPC_LINE.match(line)
        if match:
            name, _code, count = match.groups()
            out[current][name] = out[current].get(name, 0) + int(count)
    if not seen_types:
        raise ValueError("no 'Remote Procedure Call statistics by message type' section")
    return out


def rpc_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Counts between two parsed sdiag snapshots, largest first.

    When slurmctld's statistics were reset in between (a new "Data since", or a counter
    that went down), the counts are those since the reset, ``reset`` is True and
    ``seconds_since_reset`` (when known) is the time they cover.
    """
    reset = before.get("since") != after.get("since")
    for section in ("by_type", "by_user"):
        for name, count in before.get(section, {}).items():
            if after.get(section, {}).get(name, 0) < count:
                reset = True
    out: dict[str, Any] = {"reset": reset}
    for section in ("by_type", "by_user"):
        old = {} if reset else before.get(section, {})
        diff = {n: c - old.get(n, 0) for n, c in after.get(section, {}).items()}
        diff = {n: d for n, d in diff.items() if d}
        out[section] = dict(sorted(diff.items(), key=lambda kv: (-kv[1], kv[0])))
    if reset and after.get("at") is not None and after.get("since") is not None:
        out["seconds_since_reset"] = after["at"] - after["since"]
    return out


def rpc_rates(delta: Mapping[str, Any], seconds: float, user_prefix: str) -> dict[str, Any]:
    """Per-minute rates of an RPC delta over ``seconds`` (after a reset: over the time
    since the reset); sdiag's own REQUEST_STATS_INFO is left out."""
    if delta.get("reset") and delta.get("seconds_since_reset"):
        seconds = float(delta["seconds_since_reset"])
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    per_min = 60.0 / seconds
    by_type: Mapping[str, int] = delta["by_type"]
    by_user: Mapping[str, int] = delta["by_user"]
    job_info_all = sum(by_type.get(t, 0) for t in JOB_INFO_TYPES)
    total = sum(n for t, n in by_type.items() if t != SDIAG_TYPE)
    bench_users = sum(n for u, n in by_user.items() if u.startswith(user_prefix))
    return {
        "seconds": round(seconds, 1),
        "request_job_info_per_minute": round(by_type.get("REQUEST_JOB_INFO", 0) * per_min, 1),
        "job_info_rpcs_per_minute": round(job_info_all * per_min, 1),
        "all_rpcs_per_minute": round(total * per_min, 1),
        "rpcs_by_benchmark_users_per_minute": round(bench_users * per_min, 1),
        "by_type_per_minute": {
            t: round(n * per_min, 1) for t, n in by_type.items() if t != SDIAG_TYPE
        },
        "reset_in_window": bool(delta.get("reset")),
    }


def net_of(raw: Mapping[str, Any], background: Mapping[str, Any] | None, key: str) -> float | None:
    """``raw[key]`` minus the background rate (never below 0); None without a background."""
    if background is None or key not in raw or key not in background:
        return None
    return round(max(0.0, raw[key] - background[key]), 1)


def process_rates(names: Sequence[str], seconds: float) -> dict[str, Any]:
    """Processes per minute, in total and by command name (most frequent first)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    per_min = 60.0 / seconds
    counts = Counter(names)
    return {
        "count": len(names),
        "per_minute": round(len(names) * per_min, 1),
        "by_name_per_minute": {
            name: round(n * per_min, 1)
            for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        },
    }


def detection_targets(summary: Mapping[str, Any] | None, limit_s: float) -> bool | None:
    if not summary or "p95" not in summary:
        return None
    return bool(summary["p95"] <= limit_s)


def descendants(table: Mapping[int, tuple[int, str, int]], root: int) -> set[int]:
    """Processes of ``table`` whose parent chain leads to ``root`` (root included)."""
    found = {root}
    memo: dict[int, bool] = {root: True}
    for pid in table:
        chain = []
        cur = pid
        verdict = False
        while True:
            if cur in memo:
                verdict = memo[cur]
                break
            entry = table.get(cur)
            if entry is None or cur <= 1:
                break
            chain.append(cur)
            cur = entry[0]
        for p in chain:
            memo[p] = verdict
        if verdict:
            found.add(pid)
    return found
