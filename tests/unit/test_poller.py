"""The shared poller's conclusions (pure logic; the integration tests use the real Slurm)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from factoryhub.spawners.poller import SlurmPoller, end_message
from factoryhub.spawners.slurm_client import JobInfo, SlurmUnavailable

TAG = "factoryhub:test"


class ScriptedSlurm:
    """Answers the poller's one query from a script; records cancels."""

    def __init__(self) -> None:
        self.answers: list[list[JobInfo] | Exception] = []
        self.cancelled: list[tuple[str, str]] = []
        self.queries = 0

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        self.queries += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def cancel(self, username: str, job_id: str) -> None:
        self.cancelled.append((username, job_id))


def job(job_id: str, state: str = "RUNNING", comment: str = TAG, age_s: float = 0) -> JobInfo:
    submitted = (datetime.now() - timedelta(seconds=age_s)).isoformat(timespec="seconds")
    return JobInfo(
        job_id, state, name="factoryhub-server-u", user="u", comment=comment, submit_time=submitted
    )


def poller(slurm: ScriptedSlurm, grace: float = 0.0) -> SlurmPoller:
    return SlurmPoller(
        slurm, name_prefix="factoryhub-", tag=TAG, orphan_grace=grace, orphan_every=0
    )


async def test_an_end_is_concluded_only_when_seen_twice() -> None:
    slurm, ended = ScriptedSlurm(), []
    p = poller(slurm, grace=3600)
    p.watch("1", lambda j: _record(ended, j))
    slurm.answers = [[job("1")], [job("1", "CANCELLED")], [job("1", "CANCELLED")]]
    await p.refresh()
    assert p.state("1") == "active"
    await p.refresh()
    assert p.state("1") == "active" and ended == []  # seen once: not yet
    await p.refresh()
    assert p.state("1") == "ended" and [j.state for j in ended] == ["CANCELLED"]


async def test_a_blip_is_not_an_end() -> None:
    slurm, ended = ScriptedSlurm(), []
    p = poller(slurm, grace=3600)
    p.watch("1", lambda j: _record(ended, j))
    slurm.answers = [[], [job("1")], [], [job("1")]]
    for _ in range(4):
        await p.refresh()
    assert ended == [] and p.state("1") == "active"


async def test_silence_is_unknown_never_gone() -> None:
    slurm, ended = ScriptedSlurm(), []
    p = poller(slurm, grace=3600)
    p.watch("1", lambda j: _record(ended, j))
    slurm.answers = [[job("1")], *[SlurmUnavailable("no controller")] * 5, [job("1")]]
    await p.refresh()
    for _ in range(5):
        await p.refresh()
        assert p.state("1") == "unknown"
    await p.refresh()
    assert p.state("1") == "active" and ended == []
    assert p.stats.failures == 5 and p.stats.queries == 7


async def test_orphans_of_this_hub_are_cancelled_after_the_grace() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=60)
    p._started_at -= 120  # the hub has been up for two minutes
    p.watch("1", _nothing)
    slurm.answers = [
        [
            job("1", age_s=600),  # owned
            job("2", age_s=600),  # orphan
            job("3", age_s=10),  # too young: may be a spawn being registered
            job("4", age_s=600, comment="factoryhub:another-hub"),  # not ours
            job("5", "COMPLETED", age_s=600),  # over already
        ]
    ]
    await p.refresh()
    assert slurm.cancelled == [("u", "2")]
    assert p.stats.orphans_cancelled == 1


async def test_no_orphans_right_after_the_hub_starts() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=60)
    slurm.answers = [[job("2", age_s=600)]]
    await p.refresh()
    assert slurm.cancelled == []


async def test_a_disowned_job_becomes_an_orphan() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=0)
    p.watch("2", _nothing)
    p.disown("2")
    slurm.answers = [[job("2", age_s=5)]]
    await p.refresh()
    assert slurm.cancelled == [("u", "2")]


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("TIMEOUT", "end of its walltime"),
        ("CANCELLED", "cancelled"),
        ("NODE_FAIL", "node failed"),
        ("PREEMPTED", "preempted"),
    ],
)
def test_end_messages_say_why(state: str, words: str) -> None:
    assert words in end_message("7", JobInfo("7", state))
    assert "no longer known" in end_message("7", None)


async def _record(into: list, j: JobInfo | None) -> None:
    into.append(j)


async def _nothing(j: JobInfo | None) -> None:
    return None


def worker(job_id: str, parent: str, state: str = "RUNNING") -> JobInfo:
    return JobInfo(
        job_id,
        state,
        name="factoryhub-dask-u",
        user="u",
        comment=f"{TAG}/dask-of/{parent}",
        submit_time=datetime.now().isoformat(timespec="seconds"),
    )


async def test_dask_workers_end_with_their_server_after_a_second_look() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=3600)
    p.watch("1", _ignore)
    slurm.answers = [
        [job("1"), worker("2", "1"), worker("3", "1", "PENDING")],
        [job("1", "CANCELLED"), worker("2", "1"), worker("3", "1", "PENDING")],
        [job("1", "CANCELLED"), worker("2", "1"), worker("3", "1", "PENDING")],
    ]
    await p.refresh()
    await p.refresh()
    assert slurm.cancelled == []  # the server's end seen once: not yet
    await p.refresh()
    assert sorted(slurm.cancelled) == [("u", "2"), ("u", "3")]


async def test_dask_workers_of_a_live_server_or_of_another_hub_are_left_alone() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=3600)
    p.watch("1", _ignore)
    foreign = JobInfo(
        "5", "RUNNING", name="factoryhub-dask-u", user="u", comment="other:hub/dask-of/9"
    )
    answer = [job("1"), worker("2", "1"), foreign]
    slurm.answers = [answer, answer, answer]
    for _ in range(3):
        await p.refresh()
    assert slurm.cancelled == []


async def test_dask_workers_are_kept_while_slurm_is_silent() -> None:
    slurm = ScriptedSlurm()
    p = poller(slurm, grace=3600)
    slurm.answers = [[worker("2", "1")], SlurmUnavailable("down"), SlurmUnavailable("down")]
    for _ in range(3):
        await p.refresh()
    assert slurm.cancelled == []
    slurm.answers = [[worker("2", "1")]]
    await p.refresh()  # the server job 1 is gone: seen twice now
    assert slurm.cancelled == [("u", "2")]


async def _ignore(job: JobInfo | None) -> None:
    return None
