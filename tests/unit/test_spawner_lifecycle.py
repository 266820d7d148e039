"""The spawner's lifecycle (start, poll, stop, progress) against a scripted Slurm.

The way JupyterHub's ``tests/mocking.py`` (``MockSpawner``) and batchspawner's ``BatchDummy``
test a spawner without a cluster: :class:`ScriptedSlurm` stands in for the Slurm client
(it records submissions and cancels, and its queue is what the test says), the real
:class:`SlurmPoller` reads it but only when the test says so (:class:`ManualPoller`), and
:func:`hub_spawn` / :func:`hub_stop` call the spawner the way JupyterHub's ``User.spawn`` and
``User.stop`` do. No Slurm, no root, no network; the integration tests do the same on the
real cluster.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub
from tornado import web

from factoryhub.hub.site import loader as site
from factoryhub.spawners.job_log import SlurmJobEnded
from factoryhub.spawners.slurm.client import (
    JobInfo,
    SlurmClient,
    SlurmError,
    SlurmUnavailable,
    SlurmUser,
)
from factoryhub.spawners.slurm.poller import SlurmPoller
from factoryhub.spawners.spawner import FactorySlurmSpawner

# a name this host knows (batchspawner's get_env reads the user's shell from the password file)
USER = pwd.getpwuid(os.getuid()).pw_name
EXAMPLE = site.load_site(site.example_site_path())


@dataclass
class Submission:
    username: str
    script: str
    env: dict[str, str]
    dirs: list[str]
    job_id: str


@dataclass
class ScriptedSlurm:
    """The Slurm client's part the spawner and its poller use, answering from a script."""

    home_dir: str
    queue: dict[str, JobInfo] = field(default_factory=dict)
    submitted: list[Submission] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    silent: bool = False  # Slurm does not answer
    refusal: str = ""  # Slurm answers, refusing the submission with this
    next_id: int = 100

    def _answer(self) -> None:
        if self.silent:
            raise SlurmUnavailable("slurm_load_jobs error: Unable to contact slurm controller")

    def home(self, username: str) -> str:
        return self.home_dir

    async def user(self, username: str) -> SlurmUser | None:
        return SlurmUser(username, self.home_dir)

    async def submit(
        self,
        username: str,
        script: str,
        env: Mapping[str, str],
        dirs: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
    ) -> str:
        self._answer()
        if self.refusal:
            raise SlurmError(self.refusal)
        job_id, self.next_id = str(self.next_id), self.next_id + 1
        self.submitted.append(Submission(username, script, dict(env), list(dirs), job_id))
        sbatch = dict(re.findall(r"^#SBATCH --([a-z-]+)=(.*)$", script, re.MULTILINE))
        self.queue[job_id] = JobInfo(
            job_id,
            "PENDING",
            reason="None",
            name=sbatch["job-name"],
            user=username,
            partition=sbatch["partition"],
            comment=sbatch.get("comment", ""),
            submit_time=datetime.now().isoformat(timespec="seconds"),
        )
        return job_id

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        self._answer()
        return [j for j in self.queue.values() if j.name.startswith(prefix)]

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        self._answer()
        return {j: self.queue[j] for j in job_ids if j in self.queue}

    async def cancel(self, username: str, job_id: str) -> None:
        self._answer()
        self.cancelled.append((username, job_id))
        self.queue[job_id] = replace(self.queue[job_id], state="CANCELLED")

    async def accounted_state(self, job_id: str) -> str:
        return ""

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        return []

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        return []

    def set(self, job_id: str, state: str, **fields: str) -> None:
        """The job's next state, as the scheduler moves it."""
        self.queue[job_id] = replace(self.queue[job_id], state=state, **fields)


class ManualPoller(SlurmPoller):
    """The hub's poller, asking Slurm only when the test calls :meth:`refresh`."""

    def ensure_running(self) -> None:
        pass


@dataclass
class Cluster:
    slurm: ScriptedSlurm
    poller: ManualPoller
    home: Path

    def spawner(self, groups: Sequence[str] = ("climate-lab",), **traits: Any) -> Any:
        user = SimpleNamespace(
            name=USER,
            groups=[SimpleNamespace(name=g) for g in groups],
            spawners={},
            url=f"/user/{USER}/",
        )
        spawner = FactorySlurmSpawner(
            user=user,
            hub=Hub(),
            slurm=self.slurm,
            slurm_poller=self.poller,
            profiles=[p.to_config() for p in EXAMPLE.profiles],
            projects=[p.to_config() for p in EXAMPLE.projects],
            user_command_prefix=[],  # the log's tail is read as whoever runs the test
            **traits,
        )
        user.spawners[""] = spawner
        return spawner

    async def refresh(self, times: int = 1) -> None:
        for _ in range(times):
            await self.poller.refresh()


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    slurm = ScriptedSlurm(home_dir=str(tmp_path))
    assert isinstance(slurm, SlurmClient)  # the Protocol both access modes satisfy
    poller = ManualPoller(slurm, name_prefix="factoryhub-", tag="factoryhub:hub", interval=0.01)
    return Cluster(slurm, poller, tmp_path)


async def until(condition: Callable[[], Any]) -> None:
    """Wait (3 s at most) until ``condition()`` holds: the spawner's tasks run meanwhile."""
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold within 3 s")


async def hub_spawn(spawner: Any, options: dict[str, Any]) -> asyncio.Task[tuple[str, int]]:
    """What JupyterHub's User.spawn does around start(): the started task."""
    spawner.user_options = options
    spawner.clear_state()
    spawner.api_token = "the-server-token"
    spawner._spawn_pending = True
    await spawner._run_apply_user_options(options)
    task = asyncio.create_task(spawner.start())
    task.add_done_callback(lambda _: setattr(spawner, "_spawn_pending", False))
    return task


async def hub_stop(spawner: Any) -> dict[str, Any]:
    """What JupyterHub's User.stop does: poll, stop if running, clear, store the state."""
    if await spawner.poll() is None:
        await spawner.stop()
    spawner.clear_state()
    return spawner.get_state()


async def running_server(cluster: Cluster) -> Any:
    """A spawner whose server runs on cn-01 (job 100)."""
    spawner = cluster.spawner()
    start = await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"})
    await until(lambda: cluster.slurm.submitted)
    cluster.slurm.set("100", "RUNNING", nodes="cn-01")
    await cluster.refresh()
    spawner.report_ready("10.0.0.5", 40123, "cn-01")
    assert await start == ("10.0.0.5", 40123)
    return spawner


# ---------------------------------------------------------------------- start


async def test_start_submits_with_the_projects_account_and_returns_the_ready_address(
    cluster: Cluster,
) -> None:
    spawner = await running_server(cluster)
    [job] = cluster.slurm.submitted
    assert job.username == USER and job.job_id == spawner.job_id == "100"
    assert "#SBATCH --account=climate-lab\n" in job.script
    assert "#SBATCH --partition=interactive\n" in job.script
    assert "#SBATCH --comment=factoryhub:hub\n" in job.script
    assert job.env["JUPYTERHUB_API_TOKEN"] == "the-server-token"  # in the environment only
    assert "the-server-token" not in job.script
    assert job.dirs == [f"{cluster.home}/.factoryhub/logs"]
    assert (spawner.req_account, spawner.req_memory) == ("climate-lab", "2G")
    assert spawner.current_job.nodes == "cn-01"
    assert spawner.get_state() == {"job_id": "100"}


async def test_a_submission_slurm_does_not_answer_or_refuses_fails_the_spawn(
    cluster: Cluster,
) -> None:
    spawner = cluster.spawner()
    cluster.slurm.silent = True
    with pytest.raises(web.HTTPError) as silent:
        await (await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"}))
    assert silent.value.status_code == 503 and "did not answer" in silent.value.log_message
    cluster.slurm.silent, cluster.slurm.refusal = False, "Invalid account or partition"
    with pytest.raises(web.HTTPError) as refused:
        await (await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"}))
    assert refused.value.status_code == 400 and "Invalid account" in refused.value.log_message
    assert spawner.job_id == "" and cluster.slurm.submitted == []


async def test_a_job_that_ends_before_jupyterlab_answers_fails_the_spawn_with_its_log(
    cluster: Cluster,
) -> None:
    spawner = cluster.spawner()
    start = await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"})
    await until(lambda: cluster.slurm.submitted)
    log = Path(cluster.slurm.submitted[0].dirs[0]) / f"factoryhub-server-{USER}-100.log"
    log.parent.mkdir(parents=True)
    log.write_text("jupyterlab: no space left on device\n")
    cluster.slurm.set("100", "FAILED")
    await cluster.refresh(2)  # an end is concluded when seen twice
    with pytest.raises(SlurmJobEnded) as ended:
        await start
    assert str(ended.value) == (
        f"Job 100 ended (failed) before JupyterLab answered. Its log on the cluster: {log}"
    )
    assert ended.value.jupyterhub_message.endswith("no space left on device")
    assert spawner.job_id == ""


# ---------------------------------------------------------------------- poll


async def test_poll_says_none_while_running_and_an_exit_status_after_the_job_ended(
    cluster: Cluster,
) -> None:
    spawner = await running_server(cluster)
    statuses: list[int | None] = []
    poll = spawner.poll

    async def recorded() -> int | None:
        statuses.append(await poll())
        return statuses[-1]

    spawner.poll = recorded  # the hub's notification path calls it
    stopped: list[bool] = []
    spawner.add_poll_callback(lambda: stopped.append(True))  # the hub's user_stopped
    await cluster.refresh()
    assert await spawner.poll() is None
    cluster.slurm.set("100", "TIMEOUT")
    await cluster.refresh()
    assert await spawner.poll() is None  # seen ended once: not yet an end
    await cluster.refresh()
    assert statuses == [None, None, 1] and stopped == [True]
    assert spawner.job_id == "" and spawner.current_job is None
    assert spawner.last_end_message == (
        "Your server's job 100 reached the end of its walltime. "
        "Start a new server when you need one."
    )
    state = await hub_stop(spawner)  # the hub then stops it: nothing left to cancel
    assert cluster.slurm.cancelled == []
    assert state == {"last_end_message": spawner.last_end_message}  # for the home page


async def test_slurm_unreachable_is_unknown_and_the_server_is_kept(cluster: Cluster) -> None:
    spawner = await running_server(cluster)
    stopped: list[bool] = []
    spawner.add_poll_callback(lambda: stopped.append(True))
    cluster.slurm.silent = True
    cluster.slurm.queue.clear()  # whatever Slurm would say, it says nothing
    await cluster.refresh(5)
    assert cluster.poller.state("100") == "unknown"
    assert await spawner.poll() is None
    assert stopped == [] and spawner.job_id == "100" and spawner.last_end_message == ""


async def test_a_hub_restart_keeps_the_server_and_notices_its_end(cluster: Cluster) -> None:
    spawner = await running_server(cluster)
    state = spawner.get_state()
    restarted = cluster.spawner()
    restarted.load_state(state)  # watches its job again
    assert restarted.job_id == "100" and await restarted.poll() is None
    cluster.slurm.set("100", "NODE_FAIL")
    await cluster.refresh(2)
    assert restarted.job_id == "" and "its node failed" in restarted.last_end_message


# ---------------------------------------------------------------------- stop


async def test_stop_cancels_the_job_and_clears_state(cluster: Cluster) -> None:
    spawner = await running_server(cluster)
    stopping = asyncio.create_task(hub_stop(spawner))
    await until(lambda: cluster.slurm.cancelled)
    await cluster.refresh()  # stop() waits until the poller sees the job end
    state = await stopping
    assert cluster.slurm.cancelled == [(USER, "100")]
    assert state == {} and spawner.job_id == ""
    assert (spawner.current_job, spawner.ready_address, spawner.ready_node) == (None, None, "")
    await cluster.refresh(2)  # the hub ended it: not an end to report
    assert spawner.last_end_message == ""


async def test_a_stop_slurm_does_not_answer_is_finished_by_the_poller(tmp_path: Path) -> None:
    slurm = ScriptedSlurm(home_dir=str(tmp_path))
    poller = ManualPoller(
        slurm, name_prefix="factoryhub-", tag="factoryhub:hub", interval=0.01, orphan_grace=0
    )
    spawner = await running_server(Cluster(slurm, poller, tmp_path))
    slurm.silent = True
    await hub_stop(spawner)
    assert spawner.job_id == "" and slurm.cancelled == []
    slurm.silent = False
    await poller.refresh()  # Slurm answers again: the job no server owns is cancelled
    assert slurm.cancelled == [(USER, "100")]


# ---------------------------------------------------------------------- progress


async def test_progress_yields_pending_reason_estimated_start_and_node(cluster: Cluster) -> None:
    spawner = cluster.spawner()
    start = await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"})
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in spawner.progress():
            events.append(event)

    following = asyncio.create_task(follow())
    await until(lambda: events)
    cluster.slurm.set("100", "PENDING", reason="Resources", start_time="2026-11-23T14:03:00")
    await cluster.refresh()
    await until(lambda: len(events) >= 2)
    cluster.slurm.set("100", "RUNNING", nodes="cn-01")
    await cluster.refresh()
    await until(lambda: len(events) >= 3)
    spawner.report_ready("10.0.0.5", 40123, "cn-01")
    await asyncio.wait_for(following, 3)
    await start
    assert [(e["progress"], e["message"]) for e in events] == [
        (20, "Submitted job 100 to partition interactive; waiting for Slurm"),
        (
            30,
            "Job 100 is queued in partition interactive: waiting for a node with the "
            "resources you asked for to become free (Resources). "
            "Slurm expects it to start at 2026-11-23 14:03:00",
        ),
        (70, "Job 100 is running on cn-01: starting JupyterLab"),
        (95, "JupyterLab answers; connecting"),
    ]


async def test_progress_names_the_node_when_jupyterlab_answers_first(cluster: Cluster) -> None:
    spawner = cluster.spawner()
    start = await hub_spawn(spawner, {"project": "climate-lab", "profile": "cpu-small"})
    await until(lambda: cluster.slurm.submitted)
    spawner.report_ready("10.0.0.5", 40123, "cn-02")  # before the poller saw it run
    await start
    events = [e["message"] async for e in spawner.progress()]
    assert events[-2:] == [
        "Job 100 is running on cn-02: JupyterLab started",
        "JupyterLab answers; connecting",
    ]


# ---------------------------------------------------------------------- declared state

RUN_TIME_STATE = (
    "job_request",
    "job_course",
    "current_job",
    "last_end_message",
    "ready_address",
    "ready_node",
    "ready_event",
)


async def test_all_run_time_state_is_declared(cluster: Cluster) -> None:
    """A whole lifecycle leaves no attribute on the spawner but its traits' values (and the
    flag JupyterHub itself sets): no state made up inside a method."""
    spawner = await running_server(cluster)
    cluster.slurm.set("100", "COMPLETED")
    await cluster.refresh(2)
    await hub_stop(spawner)
    traitlets_own = {"_cross_validation_lock", "_trait_notifiers", "_trait_validators"}
    traitlets_own |= {f"_{name}_metadata" for name in spawner.trait_names()}  # Union traits'
    jupyterhubs_own = {"_spawn_pending"}  # set by User.spawn (here hub_spawn) and User.stop
    assert set(vars(spawner)) - traitlets_own - jupyterhubs_own == {"_trait_values"}
    for name in RUN_TIME_STATE:
        trait = spawner.traits()[name]
        assert trait.help and not trait.metadata.get("config"), name
