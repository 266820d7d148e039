"""The integration tests' waiting helpers: bounds that follow progress and say what they saw."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.support.waiting import QueuedJob, WaitTimeout, sse_events, wait_until


def test_returns_the_first_true_value_at_once() -> None:
    calls = itertools.count()
    begun = time.monotonic()
    assert wait_until(lambda: next(calls) >= 3 and "done", 5, lambda: "never") == "done"
    assert time.monotonic() - begun < 1


def test_a_bound_raises_with_what_was_seen() -> None:
    with pytest.raises(WaitTimeout) as e:
        wait_until(lambda: None, 0.3, lambda: "the job was PENDING (Resources)")
    assert "gave up after" in str(e.value) and "(the bound)" in str(e.value)
    assert "the job was PENDING (Resources)" in str(e.value)


def test_progress_extends_the_wait_beyond_the_stall_window() -> None:
    ticks = itertools.count()
    ready_at = time.monotonic() + 0.8

    def moving() -> int:  # changes on every look: progress
        return next(ticks)

    value = wait_until(
        lambda: time.monotonic() >= ready_at, 5, lambda: "", progress=moving, stall=0.3
    )
    assert value is True


def test_no_progress_ends_the_wait_before_the_bound() -> None:
    begun = time.monotonic()
    with pytest.raises(WaitTimeout) as e:
        wait_until(lambda: False, 30, lambda: "last event: 70%", progress=lambda: 1, stall=0.3)
    assert time.monotonic() - begun < 5
    assert "no progress in the last" in str(e.value) and "last event: 70%" in str(e.value)


def test_a_failing_predicate_ends_the_wait_at_once() -> None:
    def failed() -> bool:
        raise AssertionError("the hub says the spawn failed")

    with pytest.raises(AssertionError, match="spawn failed"):
        wait_until(failed, 30, lambda: "")


def test_an_event_wakes_the_waiter_before_its_pause_ends() -> None:
    news = threading.Event()
    box: list[str] = []
    threading.Timer(0.2, lambda: (box.append("ready"), news.set())).start()
    begun = time.monotonic()
    # without the event the first pause after 0.2 s would be a long one (5 s)
    assert wait_until(lambda: box, 10, lambda: "", wake=news, first=5, longest=5) == ["ready"]
    assert time.monotonic() - begun < 2


def test_sse_events_joins_data_lines_and_skips_keepalives() -> None:
    lines = ["", "", 'data: {"progress": 20}', "", ": comment", "data: a", "data: b", "", ""]
    assert list(sse_events(iter(lines))) == ['{"progress": 20}', "a\nb"]


def test_a_queued_job_from_squeue_json() -> None:
    job = QueuedJob.from_json(
        {
            "job_id": 17,
            "user_name": "ada",
            "name": "factoryhub-server-ada",
            "job_state": "PENDING",
            "state_reason": "Resources",
            "nodes": "",
            "account": "lab",
            "memory_per_node": 3072,
        }
    )
    assert job.pending and job.live and job.memory_mb == 3072
    assert str(job) == "job 17 'factoryhub-server-ada' of ada: PENDING (Resources)"
    newer = QueuedJob.from_json({"job_id": 3, "job_state": ["RUNNING"], "nodes": "n1"})
    assert newer.state == "RUNNING" and str(newer).endswith("RUNNING on n1")
