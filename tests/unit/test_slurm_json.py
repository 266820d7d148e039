"""The one reader of Slurm's v0.0.38 JSON (factoryhub.spawners.slurm.job_json) and the local
client that feeds it: hostile job names and comments stay strings, missing fields, Slurm's
error answers (unknown, never gone), accounting records, nodes, and the minimal environment
of what runs as a user."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from factoryhub.spawners.slurm.client import CommandResult, SlurmUnavailable
from factoryhub.spawners.slurm.job_json import (
    accounted_jobs,
    accounted_state,
    job_info,
    jobs_of,
    loads,
    local_time,
    node_view,
    reservation_jobs,
)
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.user_env import SYSTEM_PATH, minimal_env

SEP = "\x1f"
FORGED = SEP.join(["150", "COMPLETED", "None", "vm", "2026-12-03T08:00:00", "", "x", "ravi"])
HOSTILE = [
    "a\nb",
    f"x\n{FORGED}",
    f"factoryhub-server-ravi{SEP}ravi{SEP}interactive",
    "a|b|c|COMPLETED|",
    "ü 名前 \u2028 \r\n\t\x00end",
    '{"job_id": 150, "job_state": "COMPLETED"}',
]


def squeue_job(job_id: int = 150, **over: Any) -> dict[str, Any]:
    """A job as ``squeue --json`` (openapi/v0.0.38, Slurm 22.05) prints it, trimmed to the
    fields factoryhub reads and a few neighbours."""
    job = {
        "account": "fhtest", "array_job_id": 0, "array_task_id": None, "batch_host": "vm",
        "comment": "factoryhub:abc", "cpus": 1, "current_working_directory": "/home/ravi",
        "end_time": 1796290554, "job_id": job_id, "job_state": "RUNNING",
        "memory_per_cpu": None, "memory_per_node": 2048, "name": "factoryhub-server-ravi",
        "nodes": "vm", "partition": "interactive", "resv_name": "", "start_time": 1796286954,
        "state_reason": "None", "submit_time": 1796286953, "user_id": 1001, "user_name": "ravi",
    }  # fmt: skip
    job.update(over)
    return job


def document(*jobs: dict[str, Any], errors: list[Any] | None = None) -> dict[str, Any]:
    meta = {"plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"}}
    return {"meta": meta, "errors": errors or [], "jobs": list(jobs)}


# the answer of squeue --json on Slurm 22.05 when slurmctld is down: exit status 0
CONTROLLER_DOWN = document(
    errors=[
        {
            "description": "Failed while looking for jobs",
            "error_number": -1,
            "error": "Unspecified error",
            "source": "slurm_load_jobs",
        }
    ]
)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_and_comments_stay_strings_of_their_own_job(text: str) -> None:
    data = loads(
        json.dumps(document(squeue_job(151, name=text, comment=text, user_name="sofia"))), "q"
    )
    (job,) = jobs_of(data)
    assert (job.job_id, job.state, job.user) == ("151", "RUNNING", "sofia")
    assert job.name == text and job.comment == text


def test_a_forged_line_in_a_comment_does_not_touch_the_job_it_names() -> None:
    victim = squeue_job(150)
    attacker = squeue_job(151, name="a\nb", comment=f"x\n{FORGED}", user_name="sofia")
    jobs = {j.job_id: j for j in jobs_of(document(victim, attacker))}
    assert sorted(jobs) == ["150", "151"]
    assert jobs["150"].running and jobs["150"].user == "ravi"
    assert jobs["151"].user == "sofia"


def test_fields_as_the_queue_reads_them() -> None:
    job = job_info(squeue_job(state_reason="Resources", job_state="PENDING", nodes=""))
    assert (job.pending, job.active, job.reason, job.nodes) == (True, True, "Resources", "")
    assert job.start_time == local_time(1796286954) and job.submit_time.startswith("2026-")
    assert job_info(squeue_job(job_state="COMPLETED")).active is False
    # later versions list the state with its flags, the base state first
    assert job_info(squeue_job(job_state=["RUNNING", "COMPLETING"])).running


def test_missing_or_odd_optional_fields_are_empty() -> None:
    job = job_info({"job_id": 7, "job_state": "RUNNING"})
    assert job == job_info({"job_id": 7, "job_state": "RUNNING", "name": None, "nodes": 3})
    assert (job.name, job.user, job.comment, job.start_time, job.reason) == ("", "", "", "", "")
    assert local_time(0) == "" and local_time(True) == "" and local_time("1796286954") == ""


@pytest.mark.parametrize(
    "job",
    [
        {"job_state": "RUNNING"},
        {"job_id": "150", "job_state": "RUNNING"},
        {"job_id": True, "job_state": "RUNNING"},
        {"job_id": 0, "job_state": "RUNNING"},
        {"job_id": 150},
        {"job_id": 150, "job_state": ""},
        {"job_id": 150, "job_state": 3},
    ],
)
def test_a_job_without_id_or_state_makes_the_answer_unknown(job: dict[str, Any]) -> None:
    with pytest.raises(SlurmUnavailable):
        jobs_of(document(squeue_job(149), job))


def test_a_job_listed_twice_makes_the_answer_unknown() -> None:
    with pytest.raises(SlurmUnavailable, match="twice"):
        jobs_of(document(squeue_job(150), squeue_job(150, job_state="COMPLETED")))


@pytest.mark.parametrize(
    "data",
    [CONTROLLER_DOWN, {"meta": {}}, {"jobs": "none"}, {"jobs": [1]}, document(errors="bad")],
)
def test_an_answer_with_errors_or_without_jobs_is_unknown_never_empty(
    data: dict[str, Any],
) -> None:
    with pytest.raises(SlurmUnavailable):
        jobs_of(data)


@pytest.mark.parametrize("text", ["", '{"jobs": [', "[]", "null", "squeue: error: x"])
def test_what_is_not_a_json_object_is_unknown(text: str) -> None:
    with pytest.raises(SlurmUnavailable):
        loads(text, "the queue query")


def test_jobs_in_a_reservation() -> None:
    data = document(
        squeue_job(1, resv_name="intro", cpus=2),
        squeue_job(2, resv_name="intro", memory_per_node=None, memory_per_cpu=512, cpus=2),
        squeue_job(3, resv_name="intro", job_state="COMPLETED"),
        squeue_job(4, resv_name="other"),
    )
    assert reservation_jobs(data, "intro") == [("RUNNING", 2, "2048M"), ("RUNNING", 2, "1024M")]


def test_nodes_as_sinfo_json_prints_them() -> None:
    node = {
        "name": "vm", "address": "127.0.0.1", "hostname": "vm", "state": "mixed",
        "state_flags": ["DRAIN"], "cpus": 64, "alloc_cpus": 3, "real_memory": 16873,
        "alloc_memory": 2048, "partitions": ["interactive", "batch"],
        "comment": "a\nNodeName=evil", "reason": "x",
    }  # fmt: skip
    assert node_view(node) == {
        "NodeName": "vm", "NodeAddr": "127.0.0.1", "NodeHostName": "vm",
        "State": "MIXED+DRAIN", "CPUTot": "64", "CPUAlloc": "3", "RealMemory": "16873",
        "AllocMem": "2048", "Partitions": "interactive,batch",
    }  # fmt: skip
    assert node_view({})["CPUTot"] == "0"


def accounting(*jobs: dict[str, Any], errors: list[Any] | None = None) -> dict[str, Any]:
    return {"meta": {}, "errors": errors or [], "jobs": list(jobs)}


def test_accounting_records_and_states() -> None:
    record = {
        "job_id": 3, "name": "a\nb|c\x1fd é", "user": "sofia", "account": "fhtest",
        "partition": "interactive", "state": {"current": "CANCELLED by 0", "reason": "None"},
        "time": {"elapsed": 60, "start": 1796286954, "end": 1796287014},
        "tres": {"allocated": [
            {"type": "cpu", "name": None, "count": 2}, {"type": "mem", "name": None, "count": 512},
            {"type": "gres", "name": "gpu:a100", "count": 2},
            {"type": "gres", "name": "gpumem", "count": 40},
        ]},
    }  # fmt: skip
    (job,) = accounted_jobs(accounting(record))
    assert (job.job_id, job.user, job.state, job.cpus, job.gpus) == (
        "3",
        "sofia",
        "CANCELLED",
        2,
        2,
    )
    assert (job.start, job.end, job.elapsed_s, job.name) == (
        1796286954,
        1796287014,
        60,
        record["name"],
    )
    assert accounted_state(accounting(record), "3") == "CANCELLED"
    assert accounted_state(accounting(record), "4") == ""
    nothing = {"error": "Nothing found with query", "error_number": 9003}
    assert accounted_state(accounting(errors=[nothing]), "3") == ""
    with pytest.raises(SlurmUnavailable):
        accounted_state(
            accounting(errors=[{"error": "Unspecified error", "error_number": -1}]), "3"
        )
    pending = accounted_jobs(accounting({"job_id": 5, "state": {}, "time": None}))[0]
    assert (pending.start, pending.end, pending.cpus, pending.gpus, pending.state) == (
        0,
        0,
        0,
        0,
        "",
    )


# ------------------------------------------------------------------ the local client


class AnsweringSlurm(LocalSlurmClient):
    """The local client with Slurm's commands answered from a script: (returncode, stdout,
    stderr) per command name."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        super().__init__()
        self.answers = answers
        self.argvs: list[list[str]] = []

    async def _run(self, argv: Any, *, input: Any = None, env: Any = None) -> CommandResult:
        self.argvs.append(list(argv))
        return CommandResult(*self.answers[argv[0]])


async def test_the_local_client_reads_squeue_json() -> None:
    text = json.dumps(
        document(squeue_job(150), squeue_job(151, name="a\nb", comment=f"x\n{FORGED}"))
    )
    slurm = AnsweringSlurm({"squeue": (0, text, "")})
    assert [j.job_id for j in await slurm.jobs_named("factoryhub-")] == ["150"]
    found = await slurm.query(["150", "151", "999"])
    assert sorted(found) == ["150", "151"] and found["150"].state == "RUNNING"
    assert slurm.argvs[0][:2] == ["squeue", "--json"]


@pytest.mark.parametrize(
    "answer",
    [
        (0, json.dumps(CONTROLLER_DOWN), ""),
        (1, "", "squeue: error: Unable to contact slurm controller (connect failure)"),
        (0, '{"jobs": [{"job_id": 150, "job_st', ""),
    ],
)
async def test_the_local_client_says_unknown_when_slurm_does_not_answer(
    answer: tuple[int, str, str],
) -> None:
    slurm = AnsweringSlurm({"squeue": answer})
    with pytest.raises(SlurmUnavailable):
        await slurm.query(["150"])
    with pytest.raises(SlurmUnavailable):
        await slurm.jobs_named("factoryhub-", "all")


async def test_the_local_client_reads_sacct_and_sinfo_json() -> None:
    record = {"job_id": 3, "state": {"current": "TIMEOUT"}, "time": {}, "tres": {}}
    node = {"name": "vm", "state": "idle", "cpus": 2, "partitions": ["interactive"]}
    slurm = AnsweringSlurm(
        {
            "sacct": (0, json.dumps(accounting(record)), ""),
            "sinfo": (0, json.dumps({"meta": {}, "errors": [], "nodes": [node]}), ""),
        }
    )
    assert await slurm.accounted_state("3") == "TIMEOUT"
    assert slurm.argvs[-1] == ["sacct", "--json", "--jobs=3"]
    assert [n["NodeName"] for n in await slurm.show("node")] == ["vm"]
    assert await slurm.show("node", "other") == []


# ------------------------------------------------------------------ environments


def test_the_minimal_environment() -> None:
    env = minimal_env("ravi", "/home/ravi", {"SLURM_CONF": "/etc/slurm/slurm.conf"})
    assert env == {
        "PATH": SYSTEM_PATH, "HOME": "/home/ravi", "USER": "ravi", "LOGNAME": "ravi",
        "LANG": "C.UTF-8", "SHELL": "/bin/sh", "SLURM_CONF": "/etc/slurm/slurm.conf",
    }  # fmt: skip


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


async def test_what_runs_as_a_user_never_sees_the_hubs_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "hub-secret")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-secret")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    # the prefix records what a command run as the user (scancel) gets, as this test's user
    seen = tmp_path / "env"
    slurm = LocalSlurmClient(user_prefix=("sh", "-c", 'env > "$0"', str(seen)))
    await slurm.cancel(_me(), "7")
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert "hub-secret" not in env.values()
    assert env["PATH"] == SYSTEM_PATH and env["USER"] == _me() and env["LANG"] == "C.UTF-8"
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    # sbatch gets the job's environment over the minimal one, and nothing of the hub's
    submitter = LocalSlurmClient(user_prefix=("sh", "-c", 'env > "$0"; echo 42', str(seen)))
    job_env = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "JUPYTERHUB_API_TOKEN": "the-users-own"}
    assert await submitter.submit(_me(), "#!/bin/bash\n", job_env) == "42"
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert env["JUPYTERHUB_API_TOKEN"] == "the-users-own" and env["PATH"] == job_env["PATH"]
    assert "CONFIGPROXY_AUTH_TOKEN" not in env and env["HOME"] == slurm.home(_me())
