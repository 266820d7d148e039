"""FactorySlurmSpawner: each user's JupyterLab as a Slurm job.

Built on batchspawner's SlurmSpawner (its ``req_*`` traits are what reaches the job
script), with these differences:

- the options form is rendered from the site's profiles and validated on the server
  (form and REST API alike); only validated values become ``req_*`` values;
- the job script is rendered by :mod:`jobscript`, never from raw user options;
- the server reports its address once it listens (:mod:`server_ready`), so the
  spawn is ready as soon as JupyterLab answers;
- Slurm not answering is *unknown*, never *gone*: a server is kept, a submission is
  reported as failed, and a job that may have been created meanwhile is cancelled
  when Slurm answers again.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

from batchspawner import SlurmSpawner
from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import CaselessStrEnum, Dict, Float, List, Unicode, default

from factoryhub.spawners import (
    metrics,
    ready_api,  # noqa: F401 - registers the server-ready API route
)
from factoryhub.spawners.apptainer import ApptainerSettings, server_command
from factoryhub.spawners.courses.servers import (
    COURSE_FOLDER_VAR,
    COURSE_MATERIALS_VAR,
    CourseServers,
)
from factoryhub.spawners.dask_setup import ENV_VAR as DASK_ENV_VAR
from factoryhub.spawners.dask_setup import dask_payload
from factoryhub.spawners.jobscript import render_job_script
from factoryhub.spawners.model.courses import Course
from factoryhub.spawners.model.profiles import Profile, load_profiles, profiles_for
from factoryhub.spawners.model.projects import Project, Usage, load_projects, projects_for
from factoryhub.spawners.options import (
    JobRequest,
    OptionsError,
    validate_course_options,
    validate_options,
)
from factoryhub.spawners.progress import describe
from factoryhub.spawners.ready_address import check_ready_address
from factoryhub.spawners.slurm.access import ACCESS_MODES, SlurmClient, make_client
from factoryhub.spawners.slurm.local import JobInfo, SlurmError, SlurmUnavailable
from factoryhub.spawners.slurm.poller import SlurmPoller, end_message, shared_poller
from factoryhub.spawners.user_files import last_lines, read_tail_as_user

_form_env = Environment(
    loader=PackageLoader("factoryhub.spawners", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


class SlurmJobEnded(RuntimeError):
    """The job ended before JupyterLab answered.

    Its text (which the hub's log gets) names the job's log but holds nothing of it; only the
    user's own view of the failure (JupyterHub's ``jupyterhub_message``) adds the log's last
    lines, read as the user.
    """

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        if tail:
            self.jupyterhub_message = f"{message}\n{tail}"


class FactorySlurmSpawner(CourseServers, SlurmSpawner):
    """Start JupyterLab as a Slurm job of the user, from a validated profile."""

    profiles = List(
        Dict(),
        help="""Resource profiles users choose from (set from the site file).

        Each is a dict with name, display_name, description, partition, cpus,
        memory_gb {default,min,max}, gpus {default,min,max}, walltime {default,max},
        allowed_groups, allowed_users.
        """,
    ).tag(config=True)

    projects = List(
        Dict(),
        help="""Projects (set from the site file): name, display_name, description, account,
        groups, profiles, max_servers, max_gpus_per_user. Empty: no projects, no --account.
        A user belongs to a project when one of their groups (JupyterHub groups, synced from
        the identity provider, or Unix groups) is among the project's groups.
        """,
    ).tag(config=True)

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

    last_end_message = ""

    # Not batchspawner's `srun` prefix: the server is the batch step itself (one
    # step less to launch), started with `exec` so it receives Slurm's signals.
    req_srun = Unicode("").tag(config=True)

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

    # ------------------------------------------------------------------ profiles

    def user_groups(self) -> set[str]:
        """The user's Unix groups (when this host knows the user) and JupyterHub groups."""
        names = {g.name for g in getattr(self.user, "groups", [])}
        try:
            entry = pwd.getpwnam(self.user.name)
        except KeyError:
            return names
        for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return names

    def available_profiles(self) -> tuple[Profile, ...]:
        return profiles_for(load_profiles(self.profiles), self.user.name, self.user_groups())

    def user_projects(self) -> tuple[Project, ...] | None:
        """The user's projects; None when the site has no projects at all."""
        if not self.projects:
            return None
        return projects_for(load_projects(self.projects), self.user_groups())

    def project_usage(self) -> dict[str, Usage]:
        """Servers and GPUs the user holds per project, this server excepted."""
        usage: dict[str, Usage] = {}
        for spawner in getattr(self.user, "spawners", {}).values():
            if spawner is self or not spawner.active:
                continue
            options = spawner.user_options or {}
            project = options.get("project")
            if isinstance(project, str):
                used = usage.get(project, Usage())
                gpus = options.get("gpus") if isinstance(options.get("gpus"), int) else 0
                usage[project] = Usage(used.servers + 1, used.gpus + gpus)
        return usage

    def validate_user_options(self, raw: Any) -> JobRequest:
        """The checked request; also keeps the server's course (``job_course``, None for
        other servers) as it was read for the check."""
        course = self.job_course = self.course()
        if course is not None:
            groups = self.user_groups()
            member = course.is_participant(self.user.name, groups) or course.is_trainer(
                self.user.name, groups
            )
            profile = next(
                (p for p in load_profiles(self.profiles) if p.name == course.profile), None
            )
            return validate_course_options(raw, course, profile, member)
        if self.name and self.courses:
            names = ", ".join(sorted(c["name"] for c in self.courses))
            raise OptionsError(
                "options",
                f"there is no course called {self.name!r} (courses: {names}). Named servers "
                "on this factory are course servers; use your default server for your own work",
            )
        return validate_options(
            raw, self.available_profiles(), self.user_projects(), self.project_usage()
        )

    # ------------------------------------------------------------------ the form

    def _render_options_form(self) -> str:
        if self.name and self.courses:
            return ""  # a course server: pinned, so the spawn starts at once (or says why not)
        profiles = [p.to_form() for p in self.available_profiles()]
        projects = self.user_projects()
        if projects is not None:
            usable = {name for p in projects for name in p.profiles}
            profiles = [p for p in profiles if p["name"] in usable]
        previous = self.orm_spawner.user_options if self.orm_spawner else None
        return _form_env.get_template("form.html.j2").render(
            profiles=profiles,
            projects=[p.to_form() for p in projects] if projects is not None else None,
            previous=previous or {},
        )

    def run_options_from_form(self, form_data: dict[str, list[str]]) -> dict[str, Any]:
        # Raised errors re-render the form with the message (JupyterHub's SpawnHandler).
        fields = {k: v for k, v in form_data.items() if k != "_xsrf"}
        return self.validate_user_options(fields).to_user_options()

    @staticmethod
    def _apply_user_options(spawner: FactorySlurmSpawner, user_options: Any) -> None:
        """Validate the options (REST API posts skip the form) and set the req_* traits."""
        try:
            request = spawner.validate_user_options(user_options)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        spawner.job_request = request
        spawner.req_partition = request.partition
        spawner.req_nprocs = str(request.cpus)
        spawner.req_memory = f"{request.memory_gb}G"
        spawner.req_runtime = request.walltime
        spawner.req_gres = f"gpu:{request.gpus}" if request.gpus else ""
        spawner.req_account = request.account
        course = spawner.job_course  # read by validate_user_options just now
        spawner.req_reservation = course.reservation if course else ""

    job_request: JobRequest | None = None
    job_course: Course | None = None

    # ------------------------------------------------------------------ job script

    @property
    def job_name(self) -> str:
        name = f"{self.job_name_prefix}-server-{self.user.name}"
        return f"{name}-{self.name}" if self.name else name

    @property
    def job_log_dir(self) -> str:
        return self.log_dir.format(home=self.home(), username=self.user.name)

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
        course = self.job_course
        if course is not None and course.materials_path:
            env[COURSE_MATERIALS_VAR] = course.materials_path
            env[COURSE_FOLDER_VAR] = self.course_folder_path(course)
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
        self._ready_node = node
        self._ready_address = (ip, port)
        event = getattr(self, "_ready_event", None)
        if event is not None:
            event.set()

    def _log_path(self) -> str:
        return str(Path(self.job_log_dir) / f"{self.job_name}-{self.job_id}.log")

    async def _log_tail(self, lines: int = 15) -> str:
        """The last lines of this job's log as the user reads them: the hub never reads that
        path itself (the user controls it). "" where the hub cannot act as users (rest)."""
        if self.slurm_access != "local":
            return ""
        try:
            data = await read_tail_as_user(
                self.user.name, self.home(), self._log_path(), prefix=self.user_command_prefix
            )
        except OSError as e:
            return f"(its last lines could not be read as {self.user.name}: {e.strerror})"
        except SlurmError:
            return ""
        return "Its last lines:\n" + last_lines(data, lines)

    @property
    def poller(self) -> SlurmPoller:
        """This hub's shared poller (one Slurm query per interval for all servers)."""
        return shared_poller(
            self.hub_tag,
            lambda: SlurmPoller(
                self.slurm,
                name_prefix=f"{self.job_name_prefix}-",
                tag=self.hub_tag,
                interval=self.slurm_poll_interval,
                orphan_grace=self.orphan_grace,
            ),
        )

    async def _job_ended(self, job: JobInfo | None) -> None:
        """Called by the poller once Slurm has twice said the job is over."""
        job_id = self.job_id
        self.last_end_message = end_message(job_id, job)
        if self._spawn_pending:
            self._ready_event.set()  # start() sees the end and reports it
            return
        self.log.warning("Server %s: %s", self._log_name, self.last_end_message)
        await self.poll_and_notify()

    async def start(self) -> tuple[str, int]:
        begun = time.monotonic()
        self._ready_event = asyncio.Event()
        self._ready_address: tuple[str, int] | None = None
        self._ready_node = ""
        self.current_job: JobInfo | None = None
        self.last_end_message = ""
        self.ip, self.port = "", 0
        if self.job_request is None:
            self._apply_user_options(self, self.user_options or {})
        course = self.job_course
        if course is not None:
            self._open_course_folder(course)
            await self.ensure_course_account(course)
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
        poller = self.poller
        poller.watch(self.job_id, self._job_ended)
        poller.poke()
        while self._ready_address is None:
            try:
                await asyncio.wait_for(self._ready_event.wait(), timeout=poller.interval)
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
        self.ip, self.port = self._ready_address
        self.current_job = poller.jobs.get(self.job_id, self.current_job)
        profile = self.job_request.profile if self.job_request else ""
        metrics.SPAWN_SECONDS.labels(profile).observe(time.monotonic() - begun)
        self.log.info(
            "Job %s of %s serves at %s:%s", self.job_id, self._log_name, self.ip, self.port
        )
        return self.ip, self.port

    async def progress(self):  # type: ignore[override]
        last = None
        while True:
            job_id = self.job_id
            if job_id:
                partition = self.job_request.partition if self.job_request else ""
                percent, message = describe(getattr(self, "current_job", None), job_id, partition)
                if message != last:
                    yield {"progress": percent, "message": message}
                    last = message
            if getattr(self, "_ready_address", None) is not None:
                # JupyterLab can answer before the poller has seen the job run: say where
                # it runs anyway (the node the server itself reported).
                if job_id and not (last or "").startswith(f"Job {job_id} is running"):
                    node = getattr(self, "_ready_node", "") or "its node"
                    yield {
                        "progress": 70,
                        "message": f"Job {job_id} is running on {node}: JupyterLab started",
                    }
                yield {"progress": 95, "message": "JupyterLab answers; connecting"}
                return
            # Wake at once when the server reports in: the hub stops reading progress as
            # soon as the spawn completes, so these last messages must not wait a tick.
            event = getattr(self, "_ready_event", None)
            if event is not None and not event.is_set():
                try:
                    await asyncio.wait_for(event.wait(), timeout=0.5)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ poll / stop

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
