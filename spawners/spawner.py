"""FactorySlurmSpawner: each user's JupyterLab as a Slurm job.

The base class stays batchspawner's ``SlurmSpawner``: batchspawner is a named dependency of
the product and its ``req_*`` traits are the contract a batch job is described by. Its start,
poll, stop, progress and submission are replaced, so its other settings (``batch_script``,
``exec_prefix``, ``req_options``, ``batch_submit_cmd``, ...) would do nothing: the spawner
refuses them at construction, naming each and what factoryhub uses instead. The ``req_*``
traits honoured (:mod:`~.contract`): ``req_partition``, ``req_nprocs``, ``req_memory``,
``req_runtime``, ``req_gres``, ``req_account``, ``req_reservation`` set from the checked
request; ``req_qos``, ``req_keepvars_extra`` from configuration; ``req_username``,
``req_homedir``, ``req_keepvars`` computed. Otherwise:

- the options form is rendered from the site's profiles and checked on the server (form and
  REST API alike, :mod:`~.choices`); only checked values become ``req_*`` values;
- the job script is rendered by :mod:`~.jobscript`, never from raw user options;
- the server reports its address once it listens (:mod:`~.ready_api`): the spawn is ready
  as soon as JupyterLab answers;
- Slurm not answering is *unknown*, never *gone* (the shared poller, :mod:`~.slurm.poller`):
  a server is kept, a submission is reported as failed, a job made meanwhile is reaped.

All run-time state is declared as traits (below; ``job_request`` and ``job_course`` in
:mod:`~.choices`); ``clear_state`` forgets the job, ``get_state``/``load_state`` carry its id
and the last end message over a hub restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from batchspawner import SlurmSpawner
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import (
    CaselessStrEnum,
    Dict,
    Float,
    Instance,
    Int,
    List,
    Tuple,
    Unicode,
    Union,
    default,
)

from factoryhub.spawners import (
    metrics,
    ready_api,  # noqa: F401 - registers the server-ready API route
)
from factoryhub.spawners.apptainer import ApptainerSettings, server_command
from factoryhub.spawners.choices import ServerChoices
from factoryhub.spawners.contract import RefusedSetting, refusals
from factoryhub.spawners.dask_setup import ENV_VAR as DASK_ENV_VAR
from factoryhub.spawners.dask_setup import dask_payload
from factoryhub.spawners.job_log import SlurmJobEnded, tail_as_user
from factoryhub.spawners.jobscript import render_job_script
from factoryhub.spawners.model.profiles import load_profiles
from factoryhub.spawners.model.users import fill_user_template
from factoryhub.spawners.progress import progress_events
from factoryhub.spawners.ready_address import check_ready_address
from factoryhub.spawners.slurm.access import ACCESS_MODES, make_client
from factoryhub.spawners.slurm.client import JobInfo, SlurmClient, SlurmError, SlurmUnavailable
from factoryhub.spawners.slurm.poller import (
    PollerSettings,
    SlurmPoller,
    end_message,
    poller_for,
)


class FactorySlurmSpawner(ServerChoices, SlurmSpawner):
    """Start JupyterLab as a Slurm job of the user, from a validated profile."""

    # ------------------------------------------------------------------ configuration

    python_env = Unicode(
        "/opt/factoryhub/venv",
        help="Python environment on the compute nodes holding JupyterLab and factoryhub.",
    ).tag(config=True)

    job_name_prefix = Unicode(
        "factoryhub",
        help="Every factoryhub job name starts with this prefix.",
    ).tag(config=True)

    log_dir = Unicode(
        "{home}/.factoryhub/logs",
        help="Directory for job logs; {home} and {username} are filled in. Created as the user.",
    ).tag(config=True)

    user_command_prefix = List(
        Unicode(),
        ["runuser", "-u", "{username}", "--"],
        help="Prefix that runs a command as the user (sbatch, scancel, mkdir).",
    ).tag(config=True)

    extra_sbatch_options = List(
        Unicode(),
        help="Operator's own #SBATCH options added to every server job, e.g. --oversubscribe.",
    ).tag(config=True)

    slurm_command_timeout = Float(
        30.0,
        help="Seconds a Slurm command may take before Slurm is taken as not answering.",
    ).tag(config=True)

    hub_tag = Unicode(
        help="Marks this hub's jobs (their --comment), so its poller can tell its orphans "
        "from other hubs' jobs on the same cluster. Default: '<job_name_prefix>:hub'.",
    ).tag(config=True)

    @default("hub_tag")
    def _default_hub_tag(self) -> str:
        return f"{self.job_name_prefix}:hub"

    slurm_poll_interval = Float(
        1.0,
        help="Seconds between the shared poller's queries (one squeue for all servers).",
    ).tag(config=True)

    orphan_grace = Float(
        120.0,
        help="Seconds a job of this hub that no server owns may live before it is cancelled "
        "(and how long after the hub starts before orphans are looked for).",
    ).tag(config=True)

    dask_settings = Dict(
        help="""Dask worker settings per profile name (set from the site file's dask section):
        partition, cores, memory_gb, processes, walltime, interface, death_timeout. A server of
        a profile listed here gets Dask's configuration, so that SLURMCluster() needs no
        arguments; empty: none.""",
    ).tag(config=True)

    apptainer = Dict(
        help="""How servers of profiles with an ``image`` run (set from the site file's
        spawner.apptainer): command, binds, python_env (see factoryhub.spawners.apptainer).""",
    ).tag(config=True)

    slurm_access = CaselessStrEnum(
        ACCESS_MODES,
        "local",
        help="""How the hub reaches Slurm: "local" runs sbatch/squeue/scancel on this host as
        the user (user_command_prefix); "rest" talks to slurmrestd with a JWT per user
        (slurm_rest). Set from the site file's slurm.access.""",
    ).tag(config=True)

    slurm_rest = Dict(
        help="""The site file's slurm.rest settings for the "rest" access mode: url,
        api_version, key_file, token_lifetime, home, query_user, timeout.""",
    ).tag(config=True)

    node_addresses = Dict(
        Unicode(),
        help="""Slurm node name -> the IP address the hub reaches that node by, where it is not
        the node's NodeAddr in Slurm (set from the site file's spawner.node_addresses). A
        server's ready call is accepted only with an address of the node its job runs on.""",
    ).tag(config=True)

    slurm = AnyTrait(help="The Slurm client (factoryhub.spawners.slurm.access.make_client).")

    @default("slurm")
    def _default_slurm(self) -> SlurmClient:
        return make_client(
            self.slurm_access, self.slurm_rest, self.user_command_prefix, self.slurm_command_timeout
        )

    slurm_poller = Instance(
        SlurmPoller,
        help="""The poller this spawner reads its job's state from: by default this hub's
        shared one (one Slurm query per interval for all servers).""",
    )

    @default("slurm_poller")
    def _default_slurm_poller(self) -> SlurmPoller:
        return poller_for(PollerSettings.of(self), self.slurm)

    # ------------------------------------------------------------------ run-time state

    current_job = Instance(
        JobInfo,
        allow_none=True,
        help="The job as the poller last saw it active (None: not seen yet in this hub).",
    )

    last_end_message = Unicode(
        "",
        help="""Why the last job ended without its user stopping it, for the home page: kept
        after the server ends (and in the stored state) until the next start.""",
    )

    ready_address = Union(  # a Union of one: traitlets types a Tuple as never None
        [Tuple(Unicode(), Int())],
        default_value=None,
        allow_none=True,
        help="(ip, port) the server reported through the ready API; None until then.",
    )

    ready_node = Unicode("", help="The node Slurm runs the job on, as of the ready call.")

    ready_event = Instance(
        asyncio.Event,
        args=(),
        help="""Set by the ready call, or by the poller when the job ended during start():
        wakes start() and the progress stream at once. A new one for every start.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        """Refuse, in the hub's log and as the error, any batchspawner setting that factoryhub
        does not honour: no spawner is made, so no server runs with a setting ignored."""
        super().__init__(**kwargs)
        problems = refusals(self.config, self.section_names(), kwargs)
        for problem in problems:
            self.log.error("%s", problem)
        if problems:
            raise RefusedSetting("; ".join(problems))

    # ------------------------------------------------------------------ defaults

    def home(self) -> str:
        """The user's home directory on the cluster (as the Slurm client knows it)."""
        return self.slurm.home(self.user.name)

    @default("req_homedir")
    def _default_req_homedir(self) -> str:
        return self.home()

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return type(self)._apply_user_options

    @default("options_form")
    def _default_options_form(self) -> Any:
        return type(self)._render_options_form

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return 600

    @default("http_timeout")
    def _default_http_timeout(self) -> int:
        return 120

    # ------------------------------------------------------------------ job script

    @property
    def job_name(self) -> str:
        name = f"{self.job_name_prefix}-server-{self.user.name}"
        return f"{name}-{self.name}" if self.name else name

    @property
    def job_log_dir(self) -> str:
        return fill_user_template(self.log_dir, username=self.user.name, home=self.home())

    @property
    def job_partition(self) -> str:
        return self.job_request.partition if self.job_request else ""

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """USER and HOME of the job (batchspawner's UserEnvMixin, which get_env calls). The
        "local" mode keeps batchspawner's: this host's passwd (HOME, login SHELL). The
        "rest" mode never reads this host's passwd (the pod's holds nobody): HOME is the
        Slurm client's (slurm.rest.home), and SHELL is left to the compute node."""
        if self.slurm_access == "local":
            return dict(super().user_env(env))
        env["USER"] = self.user.name
        env["HOME"] = self.home()
        return env

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["PATH"] = f"{self.python_env}/bin:/usr/local/bin:/usr/bin:/bin"
        env.pop("VIRTUAL_ENV", None)
        request = self.job_request
        payload = dask_payload(
            self.dask_settings.get(request.profile) if request else None,
            account=request.account if request else "",
            job_name=f"{self.job_name_prefix}-dask-{self.user.name}",
            hub_tag=self.hub_tag,
            python=f"{self.python_env}/bin/python",
        )
        env[DASK_ENV_VAR] = json.dumps(payload) if payload else ""
        env.update(self.course_env(self.job_course))
        return env

    def singleuser_command(self) -> list[str]:
        request = self.job_request
        profile = next(
            (p for p in load_profiles(self.profiles) if request and p.name == request.profile),
            None,
        )
        if profile is None or not profile.image:
            return [f"{self.python_env}/bin/factoryhub-singleuser", *self.get_args()]
        course = self.job_course
        return server_command(
            ApptainerSettings.from_config(self.apptainer),
            profile.image,
            self.home(),
            self.get_args(),
            gpus=request.gpus if request else 0,
            read_only=[course.materials_path] if course else [],
        )

    def job_script(self) -> str:
        subvars = self.get_req_subvars()
        subvars.update(
            job_name=self.job_name,
            log_dir=self.job_log_dir,
            profile=self.job_request.profile if self.job_request else "",
            extra_options=list(self.extra_sbatch_options),
            comment=self.hub_tag,
        )
        return render_job_script(subvars, self.singleuser_command())

    async def submit_batch_script(self) -> str:
        """Submit the job as the user. Never formats raw user_options (batchspawner does)."""
        script = self.job_script()
        self.log.debug("Submitting for %s:\n%s", self._log_name, script)
        self.job_id = await self.slurm.submit(
            self.user.name, script, self.get_env(), dirs=[self.job_log_dir]
        )
        self.log.info("Submitted job %s for %s", self.job_id, self._log_name)
        return self.job_id

    # ------------------------------------------------------------------ start

    async def check_ready_address(self, ip: str) -> str:
        """The node Slurm runs this server's job on, if ``ip`` is its address
        (``ready_address.ForeignAddress`` otherwise)."""
        return await check_ready_address(self.slurm, self.job_id, ip, self.node_addresses)

    def report_ready(self, ip: str, port: int, node: str = "") -> None:
        """Called by the server-ready API once JupyterLab listens."""
        self.ready_node = node
        self.ready_address = (ip, port)
        self.ready_event.set()

    def _log_path(self) -> str:
        return str(Path(self.job_log_dir) / f"{self.job_name}-{self.job_id}.log")

    async def _log_tail(self, lines: int = 15) -> str:
        """The last lines of this job's log as the user reads them: the hub never reads that
        path itself (the user controls it). "" where the hub cannot act as users (rest)."""
        if self.slurm_access != "local":
            return ""
        return await tail_as_user(
            self.user.name, self.home(), self._log_path(), self.user_command_prefix, lines
        )

    @property
    def poller(self) -> SlurmPoller:
        """This spawner's poller, its loop (re)started if it is not running."""
        self.slurm_poller.ensure_running()
        return self.slurm_poller

    async def _job_ended(self, job: JobInfo | None) -> None:
        """Called by the poller once Slurm has twice said the job is over."""
        self.last_end_message = end_message(self.job_id, job)
        if self._spawn_pending:
            self.ready_event.set()  # start() sees the end and reports it
            return
        self.log.warning("Server %s: %s", self._log_name, self.last_end_message)
        await self.poll_and_notify()

    async def start(self) -> tuple[str, int]:
        begun = time.monotonic()
        self._forget_job()
        self.ready_event = asyncio.Event()
        self.last_end_message = ""
        self.ip, self.port = "", 0
        if self.job_request is None:
            self._apply_user_options(self, self.user_options or {})
        course = self.job_course
        if course is not None:
            self._open_course_folder(course)
            await self.ensure_course_account(course)
        await self._submit()
        poller = self.poller
        poller.watch(self.job_id, self._job_ended)
        poller.poke()
        self.ip, self.port = await self._wait_until_ready(poller)
        profile = self.job_request.profile if self.job_request else ""
        metrics.SPAWN_SECONDS.labels(profile).observe(time.monotonic() - begun)
        self.log.info(
            "Job %s of %s serves at %s:%s", self.job_id, self._log_name, self.ip, self.port
        )
        return self.ip, self.port

    async def _submit(self) -> None:
        """Submit the job; Slurm's silence or refusal as the error the user sees."""
        try:
            await self.submit_batch_script()
        except SlurmUnavailable as e:
            raise web.HTTPError(
                503,
                "The cluster's scheduler (Slurm) did not answer, so your server was not "
                f"started. Try again in a few minutes. ({e})",
            ) from None
        except SlurmError as e:
            raise web.HTTPError(400, f"Slurm refused the job: {e}") from None

    async def _wait_until_ready(self, poller: SlurmPoller) -> tuple[str, int]:
        """The address the server reported; :class:`SlurmJobEnded` if the job ended first."""
        while self.ready_address is None:
            try:
                await asyncio.wait_for(self.ready_event.wait(), timeout=poller.interval)
            except TimeoutError:
                pass
            if poller.state(self.job_id) == "ended":
                job = poller.ended_job(self.job_id)
                what = job.state.lower() if job else "gone from the queue"
                job_id, log_path, tail = self.job_id, self._log_path(), await self._log_tail()
                self.clear_state()
                raise SlurmJobEnded(
                    f"Job {job_id} ended ({what}) before JupyterLab answered. "
                    f"Its log on the cluster: {log_path}",
                    tail,
                )
            self.current_job = poller.jobs.get(self.job_id, self.current_job)
        address = self.ready_address
        self.current_job = poller.jobs.get(self.job_id, self.current_job)
        return address

    async def progress(self) -> AsyncIterator[dict[str, int | str]]:
        """Pending reason, expected start, node: the job's queue state in words."""
        async for event in progress_events(self):
            yield event

    # ------------------------------------------------------------------ state, poll, stop

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.last_end_message:  # kept after the server ended, for the home page
            state["last_end_message"] = self.last_end_message
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.last_end_message = state.get("last_end_message", "")
        if self.job_id:  # a server from before a hub restart: watch its job again
            self.poller.watch(self.job_id, self._job_ended)

    def clear_state(self) -> None:
        """Forget the job (its id, as batchspawner does, and what was seen of it). The last
        end message and the last request stay, for the home page."""
        super().clear_state()
        self._forget_job()

    def _forget_job(self) -> None:
        """What was seen of the job: the poller's record, the server's ready call."""
        self.current_job = None
        self.ready_address = None
        self.ready_node = ""

    async def poll(self) -> int | None:
        """Read the shared poller: no Slurm query, no process. Unknown is not gone."""
        if not self.job_id:
            return 0 if not self.server else 1
        state = self.poller.state(self.job_id)
        job = self.poller.jobs.get(self.job_id)
        if job is not None and job.active:
            self.current_job = job
        if state != "ended":
            return None
        self.clear_state()
        return 1

    async def stop(self, now: bool = False) -> None:
        job_id = self.job_id
        if not job_id:
            return
        poller = self.poller
        poller.unwatch(job_id)
        try:
            await self.slurm.cancel(self.user.name, job_id)
        except SlurmUnavailable as e:
            # Nobody owns the job now: the poller cancels it as an orphan once Slurm answers.
            self.log.error("Slurm did not answer cancelling job %s; will retry: %s", job_id, e)
            poller.disown(job_id)
            return
        if now:
            return
        for _ in range(40):
            poller.poke()
            await asyncio.sleep(0.25)
            job = poller.jobs.get(job_id)
            if job is None or not job.active:
                return
        self.log.warning("Job %s of %s did not end within 10 s of scancel", job_id, self._log_name)
