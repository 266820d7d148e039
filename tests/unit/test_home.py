"""The home page's job summary, on spawner-like objects."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest

from factoryhub.hub.home import factoryhub_job, job_summary, walltime_end_text
from factoryhub.spawners.slurm.client import JobInfo

NOW = datetime(2026, 11, 23, 11, 53, 0)
PROFILES = [
    {"name": "cpu-small", "display_name": "Small CPU"},
    {"name": "gpu-1", "display_name": "One GPU"},
]
PROJECTS = [{"name": "vision", "display_name": "Vision", "account": "vision-acct"}]
OPTIONS = {"project": "vision", "profile": "gpu-1", "walltime": "02:30:00", "memory_gb": 16}


def spawner(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "name": "",
        "job_id": "123",
        "user_options": dict(OPTIONS),
        "profiles": PROFILES,
        "projects": PROJECTS,
        "current_job": None,
        "last_end_message": "",
    }
    base.update(kw)
    return SimpleNamespace(**base)


def test_running_job_with_end_time() -> None:
    job = JobInfo(
        job_id="123",
        state="RUNNING",
        nodes="node-a",
        start_time="2026-11-23T11:33:00",
        end_time="2026-11-23T14:03:00",
        partition="batch",
    )
    summary = job_summary(spawner(current_job=job), now=NOW)
    assert summary is not None
    assert summary["job_id"] == "123"
    assert summary["node"] == "node-a"
    assert summary["project"] == "vision"
    assert summary["account"] == "vision-acct"
    assert summary["profile"] == "One GPU"
    assert summary["profile_name"] == "gpu-1"
    assert summary["state"] == "RUNNING"
    assert summary["state_text"] == "running"
    assert summary["walltime_end"] == "14:03 (2 h 10 min left)"
    assert summary["end_message"] == ""
    assert summary["queued"] is False


def test_pending_job_has_no_node_nor_end_yet() -> None:
    job = JobInfo(job_id="123", state="PENDING", reason="Resources", partition="batch")
    summary = job_summary(spawner(current_job=job), now=NOW)
    assert summary is not None
    assert summary["queued"] is True
    assert summary["state_text"] == "queued"
    assert summary["node"] == ""
    assert summary["walltime_end"] == ""
    assert summary["walltime"] == "02:30:00"
    assert summary["reason"] == "Resources"
    assert "resources you asked for" in summary["reason_text"]


def test_no_job_and_no_message_shows_nothing() -> None:
    assert job_summary(spawner(job_id="")) is None
    assert job_summary(None) is None


def test_ended_server_shows_why() -> None:
    message = "Your server's job 123 reached the end of its walltime."
    stale = JobInfo(job_id="123", state="RUNNING", nodes="node-a")
    summary = job_summary(spawner(job_id="", last_end_message=message, current_job=stale))
    assert summary is not None
    assert summary["end_message"] == message
    assert summary["job_id"] == ""
    assert summary["node"] == ""  # the record of the ended job is not shown as running


def test_a_new_job_ignores_the_record_of_an_earlier_one() -> None:
    earlier = JobInfo(job_id="99", state="RUNNING", nodes="node-b", end_time="2026-11-23T12:00")
    summary = job_summary(spawner(job_id="123", current_job=earlier), now=NOW)
    assert summary is not None
    assert (summary["job_id"], summary["node"], summary["walltime_end"]) == ("123", "", "")


def test_missing_attributes() -> None:
    # A spawner loaded after a hub restart: no current_job, no last_end_message, no
    # job_request; options from the database only.
    bare = SimpleNamespace(job_id="456", user_options={"profile": "cpu-small"})
    summary = job_summary(bare, now=NOW)
    assert summary is not None
    assert summary["job_id"] == "456"
    assert summary["profile"] == "cpu-small"  # no profiles known: its name
    assert summary["node"] == summary["state"] == summary["walltime_end"] == ""
    assert summary["project"] == summary["account"] == ""
    assert job_summary(SimpleNamespace()) is None
    # user_options None, attributes of the wrong type
    assert job_summary(SimpleNamespace(job_id=None, user_options=None)) is None
    odd = job_summary(SimpleNamespace(job_id="7", user_options="x", current_job="y"), now=NOW)
    assert odd is not None and odd["job_id"] == "7" and odd["node"] == ""


def test_low_level_orm_spawner_reads_its_stored_state() -> None:
    orm = SimpleNamespace(
        name="big",
        state={"job_id": "789", "last_end_message": ""},
        user_options={"profile": "cpu-small"},
    )
    summary = job_summary(orm, now=NOW)
    assert summary is not None
    assert (summary["server"], summary["job_id"]) == ("big", "789")


def test_account_from_the_job_request_first() -> None:
    request = SimpleNamespace(profile="gpu-1", project="vision", account="other-acct")
    summary = job_summary(spawner(job_request=request, projects=[]), now=NOW)
    assert summary is not None and summary["account"] == "other-acct"


def test_a_property_that_raises_counts_as_missing() -> None:
    class Spawner:
        job_id = "5"

        @property
        def current_job(self) -> JobInfo:
            raise AttributeError("not loaded")

    summary = job_summary(Spawner(), now=NOW)
    assert summary is not None and summary["job_id"] == "5"


@pytest.mark.parametrize(
    ("end", "text"),
    [
        ("2026-11-23T14:03:00", "14:03 (2 h 10 min left)"),
        ("2026-11-23T12:00:00", "12:00 (7 min left)"),
        ("2026-11-23T11:53:30", "11:53 (less than a minute left)"),
        ("2026-11-23T11:00:00", "11:00 (walltime reached)"),
        ("2026-11-24T09:00:00", "tomorrow 09:00 (21 h 7 min left)"),
        ("2026-11-25T13:53:00", "2026-11-25 13:53 (2 d 2 h left)"),
        ("2026-11-23T13:53:00", "13:53 (2 h left)"),
        ("", ""),
        ("soon", "soon"),
    ],
)
def test_walltime_end_text(end: str, text: str) -> None:
    assert walltime_end_text(end, NOW) == text


def test_template_var_gives_the_template_the_function() -> None:
    # JupyterHub calls callables in template_vars with the current user (None before
    # sign-in); the template then calls the result per spawner.
    assert factoryhub_job(None) is job_summary
    assert factoryhub_job(SimpleNamespace(name="alice")) is job_summary
