"""The shared poller's conclusions (pure logic; the integration tests use the real Slurm),
and the poller on the local client's reading of a queue that holds forged lines."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from factoryhub.spawners.slurm.client import CommandResult, JobInfo, SlurmUnavailable
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.slurm.poller import SlurmPoller, end_message

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


# ------------------------------------------------------------------ forged queue lines


def _squeue_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch)) if epoch else "N/A"


# squeue --format codes → how Slurm 22.05 prints the job's field (a v0.0.38 job object)
_CODES = {
    "i": lambda j: str(j["job_id"]),
    "T": lambda j: j["job_state"],
    "r": lambda j: j["state_reason"],
    "N": lambda j: j["nodes"],
    "S": lambda j: _squeue_time(j["start_time"]),
    "e": lambda j: _squeue_time(j["end_time"]),
    "j": lambda j: j["name"],
    "u": lambda j: j["user_name"],
    "P": lambda j: j["partition"],
    "k": lambda j: j["comment"],
    "V": lambda j: _squeue_time(j["submit_time"]),
}


class SqueueOnThisHost(LocalSlurmClient):
    """The local client with ``squeue`` answered from a table of jobs as Slurm 22.05 prints
    them: the v0.0.38 JSON for ``--json``, else the text ``--format`` asks for (newlines and
    \\x1f of names and comments printed as they are, as Slurm does)."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.table = jobs
        self.others: list[list[str]] = []

    async def _run(self, argv: Any, *, input: Any = None, env: Any = None) -> CommandResult:
        if argv[0] != "squeue":
            self.others.append(list(argv))
            return CommandResult(0, "", "")
        if "--json" in argv:
            return CommandResult(0, json.dumps({"meta": {}, "errors": [], "jobs": self.table}), "")
        fmt = next(a.split("=", 1)[1] for a in argv if a.startswith(("--format=", "-o")))
        render = lambda j: re.sub(r"%(\w)", lambda m: _CODES[m.group(1)](j), fmt)  # noqa: E731
        return CommandResult(0, "".join(render(j) + "\n" for j in self.table), "")


def queue_job(job_id: int, user: str, name: str, comment: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "job_id": job_id, "job_state": "RUNNING", "state_reason": "None", "nodes": "vm",
        "start_time": now - 60, "end_time": now + 3600, "name": name, "user_name": user,
        "partition": "interactive", "comment": comment, "submit_time": now - 61,
    }  # fmt: skip


async def test_forged_queue_lines_end_no_one_elses_server() -> None:
    """Issue 16: sofia's job name and comment hold a queue line saying ravi's job 150 has
    COMPLETED; the hub must not conclude that it ended, nor cancel anything."""
    sep, when = "\x1f", datetime.now().isoformat(timespec="seconds")
    forged = sep.join(["150", "COMPLETED", "None", "vm", when, when, "factoryhub-server-ravi",
                       "ravi", "interactive", TAG])  # fmt: skip
    slurm = SqueueOnThisHost(
        [
            queue_job(150, "ravi", "factoryhub-server-ravi", TAG),
            queue_job(151, "sofia", "a\nb", f"x\n{forged}"),
            queue_job(152, "sofia", f"factoryhub-server-ravi\n{forged}", TAG),
            queue_job(153, "sofia", f"factoryhub-server-ravi{sep}{sep}", f"{sep}150{sep}COMPLETED"),
        ]
    )
    p, ended = SlurmPoller(slurm, name_prefix="factoryhub-", tag=TAG, orphan_grace=3600), []
    p.watch("150", lambda j: _record(ended, j))
    for _ in range(4):
        await p.refresh()
    assert ended == [] and p.state("150") == "active"
    assert (p.jobs["150"].state, p.jobs["150"].user) == ("RUNNING", "ravi")
    assert {j.user for j in p.jobs.values()} == {"ravi", "sofia"}
    assert slurm.others == []
