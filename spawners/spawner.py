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
import os
import pwd
from pathlib import Path
from typing import Any

from batchspawner import SlurmSpawner
from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web
from traitlets import Dict, Float, Instance, List, Unicode, default

from . import ready_api  # noqa: F401 - registers the server-ready API route
from .jobscript import render_job_script
from .options import JobRequest, OptionsError, validate_options
from .profiles import Profile, load_profiles, profiles_for
from .progress import describe
from .projects import Project, Usage, load_projects, projects_for
from .slurm_client import JobInfo, LocalSlurmClient, SlurmError, SlurmUnavailable

_form_env = Environment(
    loader=PackageLoader("factoryhub.spawners", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


class SlurmJobEnded(RuntimeError):
    """The job ended before JupyterLab answered."""


class FactorySlurmSpawner(SlurmSpawner):
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

    startup_poll_interval = Float(
        1.0,
        help="Seconds between queue queries while a server starts (readiness itself is pushed).",
    ).tag(config=True)

    reap_window = Float(
        900.0,
        help="After a submission Slurm did not answer, how long to keep looking for "
        "the job it may have created anyway, to cancel it.",
    ).tag(config=True)

    # Not batchspawner's `srun` prefix: the server is the batch step itself (one
    # step less to launch), started with `exec` so it receives Slurm's signals.
    req_srun = Unicode("").tag(config=True)

    slurm = Instance(LocalSlurmClient)

    @default("slurm")
    def _default_slurm(self) -> LocalSlurmClient:
        return LocalSlurmClient(self.user_command_prefix, self.slurm_command_timeout)

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
        """The user's Unix groups and JupyterHub groups."""
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
        return validate_options(
            raw, self.available_profiles(), self.user_projects(), self.project_usage()
        )

    # ------------------------------------------------------------------ the form

    def _render_options_form(self) -> str:
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

    job_request: JobRequest | None = None

    # ------------------------------------------------------------------ job script

    @property
    def job_name(self) -> str:
        name = f"{self.job_name_prefix}-server-{self.user.name}"
        return f"{name}-{self.name}" if self.name else name

    @property
    def job_log_dir(self) -> str:
        home = pwd.getpwnam(self.user.name).pw_dir
        return self.log_dir.format(home=home, username=self.user.name)

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["PATH"] = f"{self.python_env}/bin:/usr/local/bin:/usr/bin:/bin"
        env.pop("VIRTUAL_ENV", None)
        return env

    def singleuser_command(self) -> list[str]:
        return [f"{self.python_env}/bin/factoryhub-singleuser", *self.get_args()]

    def job_script(self) -> str:
        subvars = self.get_req_subvars()
        subvars.update(
            job_name=self.job_name,
            log_dir=self.job_log_dir,
            profile=self.job_request.profile if self.job_request else "",
            extra_options=list(self.extra_sbatch_options),
        )
        return render_job_script(subvars, self.singleuser_command())

    async def submit_batch_script(self) -> str:
        """Submit the job as the user. Never formats raw user_options (batchspawner does)."""
        script = self.job_script()
        made = await self.slurm.run_as(
            self.user.name, ["mkdir", "-p", "-m", "0700", self.job_log_dir]
        )
        if made.returncode != 0:
            raise RuntimeError(
                f"Could not create the log directory {self.job_log_dir}: {made.stderr.strip()}"
            )
        self.log.debug("Submitting for %s:\n%s", self._log_name, script)
        self.job_id = await self.slurm.submit(self.user.name, script, self.get_env())
        self.log.info("Submitted job %s for %s", self.job_id, self._log_name)
        return self.job_id

    # ------------------------------------------------------------------ start

    def report_ready(self, ip: str, port: int) -> None:
        """Called by the server-ready API once JupyterLab listens."""
        self._ready_address = (ip, port)
        event = getattr(self, "_ready_event", None)
        if event is not None:
            event.set()

    def _log_tail(self, lines: int = 15) -> str:
        path = Path(self.job_log_dir) / f"{self.job_name}-{self.job_id}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {path})"
        return f"Last lines of {path}:\n" + "\n".join(text)

    async def start(self) -> tuple[str, int]:
        self._ready_event = asyncio.Event()
        self._ready_address: tuple[str, int] | None = None
        self.current_job: JobInfo | None = None
        self.ip, self.port = "", 0
        if self.job_request is None:
            self._apply_user_options(self, self.user_options or {})
        try:
            await self.submit_batch_script()
        except SlurmUnavailable as e:
            self._reap_later(name=self.job_name)
            raise web.HTTPError(
                503,
                "The cluster's scheduler (Slurm) did not answer, so your server was not "
                f"started. Try again in a few minutes. ({e})",
            ) from None
        except SlurmError as e:
            raise web.HTTPError(400, f"Slurm refused the job: {e}") from None

        first = True
        while True:
            try:
                jobs = await self.slurm.query([self.job_id])
            except SlurmUnavailable as e:
                self.log.warning("Slurm did not answer about job %s: %s", self.job_id, e)
            else:
                job = jobs.get(self.job_id)
                if job is None or not job.active:
                    if self._ready_address is None:
                        state = job.state.lower() if job else "gone from the queue"
                        job_id = self.job_id
                        tail = self._log_tail()
                        self.clear_state()
                        raise SlurmJobEnded(
                            f"Job {job_id} ended ({state}) before JupyterLab answered.\n{tail}"
                        )
                self.current_job = job
            if self._ready_address is not None:
                break
            try:
                interval = 0.3 if first else self.startup_poll_interval
                await asyncio.wait_for(self._ready_event.wait(), timeout=interval)
            except TimeoutError:
                pass
            first = False
        self.ip, self.port = self._ready_address
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
                yield {"progress": 95, "message": "JupyterLab answers; connecting"}
                return
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ poll / stop

    async def poll(self) -> int | None:
        if not self.job_id:
            return 0 if not self.server else 1
        try:
            job = (await self.slurm.query([self.job_id])).get(self.job_id)
        except SlurmUnavailable as e:
            self.log.warning(
                "Slurm did not answer; keeping %s (job %s): %s", self._log_name, self.job_id, e
            )
            return None
        if job is not None and job.active:
            return None
        self.clear_state()
        return 1

    async def stop(self, now: bool = False) -> None:
        job_id = self.job_id
        if not job_id:
            return
        try:
            await self.slurm.cancel(self.user.name, job_id)
        except SlurmUnavailable as e:
            self.log.error("Slurm did not answer cancelling job %s; will retry: %s", job_id, e)
            self._reap_later(job_id=job_id)
            return
        if now:
            return
        for _ in range(40):
            try:
                job = (await self.slurm.query([job_id])).get(job_id)
            except SlurmUnavailable:
                return  # cancelled; confirming it must wait for Slurm
            if job is None or not job.active:
                return
            await asyncio.sleep(0.25)
        self.log.warning("Job %s of %s did not end within 10 s of scancel", job_id, self._log_name)

    # ------------------------------------------------------------------ no leftovers

    def _reap_later(self, *, job_id: str = "", name: str = "") -> None:
        """Cancel a job once Slurm answers again: a given id, or this user's jobs named
        ``name`` (a submission that may have gone through although sbatch gave up)."""
        task = asyncio.ensure_future(self._reap(job_id=job_id, name=name))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _reap(self, *, job_id: str, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reap_window
        delay = 2.0
        username = self.user.name
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                if job_id:
                    await self.slurm.cancel(username, job_id)
                    self.log.info("Cancelled job %s of %s now that Slurm answers", job_id, username)
                    return
                mine = [
                    j
                    for j in await self.slurm.jobs_named(name)
                    if j.name == name and j.user == username
                ]
            except SlurmUnavailable:
                continue
            for job in mine:
                if job.job_id != self.job_id:
                    await self.slurm.cancel(username, job.job_id)
                    self.log.warning(
                        "Cancelled job %s of %s: submitted while Slurm did not answer",
                        job.job_id,
                        username,
                    )
            return


_background: set[asyncio.Future[Any]] = set()
