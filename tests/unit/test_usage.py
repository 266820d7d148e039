"""Factory usage from Slurm accounting (factoryhub.helpers.usage): the ``sacct --json``
command line, its answer as a table (running jobs, GPU TRES, several accounts, hostile job
names, nothing at all, no answer), jobs cut at the period's edges, CPU and GPU hours per
project, per user and per day."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from typing import Any

import pandas as pd
import pytest

from factoryhub.helpers import usage


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) if text else 0


def _tres(cpus: int, gres: dict[str, int] | None = None) -> list[dict[str, Any]]:
    items = [{"type": "cpu", "name": None, "id": 1, "count": cpus}] if cpus else []
    items += [{"type": "mem", "name": None, "id": 2, "count": 2048}] if cpus else []
    return items + [
        {"type": "gres", "name": name, "id": 1000 + i, "count": count}
        for i, (name, count) in enumerate((gres or {}).items())
    ]


def record(
    job_id: int,
    user: str,
    account: str,
    partition: str,
    state: str,
    start: str,
    end: str,
    elapsed: int,
    cpus: int,
    name: str,
    gres: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One job as ``sacct --json`` (openapi/dbv0.0.38, Slurm 22.05) prints it (the fields
    factoryhub reads, with their neighbours)."""
    return {
        "account": account, "comment": {"administrator": None, "job": None, "system": None},
        "array": {"job_id": 0, "task": None, "task_id": None}, "cluster": "factoryhub",
        "time": {"elapsed": elapsed, "eligible": _epoch(start), "end": _epoch(end),
                 "start": _epoch(start), "submission": _epoch(start), "suspended": 0,
                 "limit": 60},
        "exit_code": {"status": "SUCCESS", "return_code": 0}, "group": user,
        "het": {"job_id": 0, "job_offset": None}, "job_id": job_id, "name": name,
        "nodes": "vm", "partition": partition, "qos": "normal",
        "required": {"CPUs": cpus, "memory": 2048},
        "state": {"current": state, "reason": "None"}, "steps": [],
        "tres": {"allocated": _tres(cpus, gres), "requested": _tres(cpus, gres)},
        "user": user, "wckey": {"wckey": "", "flags": []},
    }  # fmt: skip


def document(*jobs: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> str:
    meta = {"plugin": {"type": "openapi/dbv0.0.38", "name": "Slurm OpenAPI DB v0.0.38"}}
    return json.dumps({"meta": meta, "errors": errors or [], "jobs": list(jobs)})


SAMPLE = document(
    record(101, "sofia", "acme-ai", "batch", "COMPLETED", "2026-11-20T10:00:00",
           "2026-11-20T12:00:00", 7200, 4, "train-a"),
    record(102, "sofia", "acme-ai", "gpu", "COMPLETED", "2026-11-20T23:00:00",
           "2026-11-21T01:00:00", 7200, 8, "factoryhub-train-sofia",
           {"gpu:a100": 2, "gpu": 2}),
    record(103, "ravi", "climate-lab", "batch", "CANCELLED", "2026-11-21T09:00:00",
           "2026-11-21T09:30:00", 1800, 2, "a|name|with|bars\nand 101|sofia|lines"),
    record(104, "ravi", "acme-ai", "interactive", "RUNNING", "2026-11-22T08:00:00", "",
           3600, 1, "factoryhub-server-ravi"),
    record(105, "ada", "climate-lab", "gpu", "PENDING", "", "", 0, 0, "waiting"),
    record(106, "ada", "climate-lab", "gpu", "FAILED", "2026-11-22T10:00:00",
           "2026-11-22T10:06:00", 360, 1, "typed-only", {"gpu:h100": 1}),
)  # fmt: skip


@pytest.fixture
def jobs() -> pd.DataFrame:
    return usage.parse_sacct(SAMPLE)


def test_the_command_asks_for_every_users_jobs_in_the_period_as_json() -> None:
    argv = usage.sacct_command(datetime(2026, 11, 1), datetime(2026, 11, 30, 12, 30))
    assert argv == [
        "sacct", "--json", "--allusers", "--allocations",
        "-S", "2026-11-01T00:00:00", "-E", "2026-11-30T12:30:00",
    ]  # fmt: skip
    filtered = usage.sacct_command(datetime(2026, 11, 1), datetime(2026, 11, 2), ["a", "b-c"])
    assert filtered[-1] == "--accounts=a,b-c"
    with pytest.raises(ValueError, match="account"):
        usage.sacct_command(datetime(2026, 11, 1), datetime(2026, 11, 2), ["a,b"])


def test_the_period() -> None:
    now = datetime(2026, 11, 23, 7, 30, 15, 999)
    assert usage.period(30, now=now) == usage.Period(
        datetime(2026, 10, 24, 7, 30, 15), datetime(2026, 11, 23, 7, 30, 15)
    )
    # an end date is included whole; a start overrides days
    assert usage.period(7, start="2026-11-01", end="2026-11-10", now=now) == usage.Period(
        datetime(2026, 11, 1), datetime(2026, 11, 11)
    )
    assert usage.period(2, end="2026-11-10", now=now).start == datetime(2026, 11, 9)
    assert usage.period(start="2026-11-20T12:00", now=now).end == datetime(2026, 11, 23, 7, 30, 15)
    assert len(usage.period(start="2026-11-20T12:00", end="2026-11-22", now=now).days) == 3
    assert usage.period(start="2026-11-01", end="2026-11-10").describe() == (
        "2026-11-01 to 2026-11-10"
    )
    assert usage.period(1, now=now).describe() == "2026-11-22 07:30 to 2026-11-23 07:30"
    for bad in ({"days": 0}, {"start": "yesterday"}, {"start": "2026-11-10", "end": "2026-11-01"}):
        with pytest.raises(ValueError):
            usage.period(**bad, now=now)


def test_parsing(jobs: pd.DataFrame) -> None:
    assert list(jobs.columns) == list(usage.COLUMNS)
    assert list(jobs["job_id"]) == ["101", "102", "103", "104", "105", "106"]
    assert list(jobs["state"]) == [
        "COMPLETED", "COMPLETED", "CANCELLED", "RUNNING", "PENDING", "FAILED",
    ]  # fmt: skip
    # gres/gpu when given, else the typed ones summed
    assert list(jobs["gpus"]) == [0, 2, 0, 0, 0, 1]
    assert list(jobs["cpu_hours"]) == [8.0, 16.0, 1.0, 1.0, 0.0, 0.1]
    assert list(jobs["gpu_hours"]) == [0.0, 4.0, 0.0, 0.0, 0.0, 0.1]
    assert jobs.loc[2, "name"] == "a|name|with|bars\nand 101|sofia|lines"
    assert (jobs["user"] == "sofia").sum() == 2  # the name's "sofia" is no job of hers
    running, pending = jobs.loc[3], jobs.loc[4]
    assert running["start"] == pd.Timestamp("2026-11-22T08:00") and pd.isna(running["end"])
    assert pd.isna(pending["start"]) and pd.isna(pending["end"])
    assert jobs["start"].dtype == "datetime64[ns]" and jobs["elapsed_s"].dtype == "int64"


def test_jobs_are_cut_at_the_periods_edges(jobs: pd.DataFrame) -> None:
    when = usage.Period(datetime(2026, 11, 21), datetime(2026, 11, 22, 8, 30))
    now = datetime(2026, 11, 22, 9).timestamp()
    cut = usage.parse_sacct(SAMPLE, when, now=now).set_index("job_id")
    # 102 ran 23:00-01:00: one hour inside; 103 inside, Slurm's own figure
    assert (
        cut.loc["102", "start"] == pd.Timestamp("2026-11-21")
        and cut.loc["102", "elapsed_s"] == 3600
    )
    assert cut.loc["103", "elapsed_s"] == 1800
    # 101 ended before the period; 104 runs: up to the period's end (before now)
    assert cut.loc["101", "elapsed_s"] == 0 and cut.loc["104", "elapsed_s"] == 1800
    assert cut.loc["104", "end"] == pd.Timestamp("2026-11-22T08:30")
    # a running job in a period that ends in the future counts up to now
    later = usage.Period(datetime(2026, 11, 22), datetime(2026, 11, 23))
    running = usage.parse_sacct(SAMPLE, later, now=now).set_index("job_id").loc["104"]
    assert running["elapsed_s"] == 3600 and running["end"] == pd.Timestamp("2026-11-22T09:00")


@pytest.mark.parametrize(
    "text",
    ["101|sofia|acme-ai\n", "", "[]", '{"jobs": "none"}', '{"jobs": [{"name": "no id"}]}',
     document(errors=[{"error": "Unspecified error", "error_number": -1}])],
)  # fmt: skip
def test_what_is_not_an_accounting_answer_is_refused(text: str) -> None:
    with pytest.raises(usage.AccountingUnavailable):
        usage.parse_sacct(text)


def test_per_project_and_per_user(jobs: pd.DataFrame) -> None:
    projects = usage.per_project(jobs)
    assert list(projects.index) == ["acme-ai", "climate-lab"]
    assert projects.loc["acme-ai"].to_dict() == {
        "jobs": 3, "users": 2, "cpu_hours": 25.0, "gpu_hours": 4.0,
    }  # fmt: skip
    assert projects.loc["climate-lab", "jobs"] == 3
    assert projects.loc["climate-lab", "cpu_hours"] == pytest.approx(1.1)
    users = usage.per_user(jobs)
    assert list(users.index) == ["sofia", "ravi", "ada"]
    assert users.loc["ravi", "projects"] == 2 and users.loc["ada", "gpu_hours"] == 0.1
    assert list(usage.per_user(jobs, top=1).index) == ["sofia"]


def test_per_day_splits_jobs_at_midnight(jobs: pd.DataFrame) -> None:
    when = usage.Period(datetime(2026, 11, 19), datetime(2026, 11, 23))
    cpu = usage.per_day(jobs, when)
    assert list(cpu.index) == list(pd.date_range("2026-11-19", "2026-11-22"))
    assert list(cpu.columns) == ["acme-ai", "climate-lab"]
    # job 102 ran 23:00-01:00 on 8 cores: 8 hours on each day; the running job counts its
    # elapsed time from its start
    assert cpu["acme-ai"].to_dict() == {
        pd.Timestamp("2026-11-19"): 0.0,
        pd.Timestamp("2026-11-20"): 16.0,
        pd.Timestamp("2026-11-21"): 8.0,
        pd.Timestamp("2026-11-22"): 1.0,
    }
    assert cpu.to_numpy().sum() == pytest.approx(jobs["cpu_hours"].sum())
    gpu = usage.per_day(jobs, when, hours="gpu_hours")
    assert gpu.loc["2026-11-21", "acme-ai"] == 2.0
    assert gpu.loc["2026-11-22", "climate-lab"] == pytest.approx(0.1)
    by_user = usage.per_day(jobs, by="user")
    assert list(by_user.columns) == ["sofia", "ravi", "ada"]
    assert list(by_user.index) == list(pd.date_range("2026-11-20", "2026-11-22"))


def test_nothing_in_the_period() -> None:
    nothing_found = {"error": "Nothing found with query", "error_number": 9003}
    empty = usage.parse_sacct(document(errors=[nothing_found]))
    assert list(empty.columns) == list(usage.COLUMNS) and empty.empty
    assert usage.per_project(empty).empty and usage.per_user(empty, top=3).empty
    when = usage.Period(datetime(2026, 11, 1), datetime(2026, 11, 3))
    days = usage.per_day(empty, when)
    assert len(days) == 2 and days.columns.empty


def test_sacct_failures_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(usage.AccountingUnavailable, match="not installed"):
        usage.run_sacct(["/nonexistent/sacct", "--allusers"])

    def refused(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(
            argv, 1, "", "sacct: error: Problem talking to the database: Connection refused"
        )

    monkeypatch.setattr(subprocess, "run", refused)
    with pytest.raises(usage.AccountingUnavailable, match=r"Connection refused.*slurmdbd"):
        usage.run_sacct(["sacct"])


def test_jobs_in_runs_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def answer(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, SAMPLE, "")

    monkeypatch.setattr(subprocess, "run", answer)
    when = usage.Period(datetime(2026, 11, 19), datetime(2026, 11, 23))
    assert len(usage.jobs_in(when, ["acme-ai"])) == 6
    assert seen[0][:2] == ["sacct", "--json"] and seen[0][-1] == "--accounts=acme-ai"
