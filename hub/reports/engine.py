"""What the Reports service does, apart from its pages: start a run as a Slurm job, follow
its job to the end, fire schedules, cancel, and pick up where it left off after a restart.

One ``squeue`` per tick follows every unfinished run. A run whose job Slurm no longer lists
is finished from Slurm accounting (``sacct``) after two ticks in a row, never from one
missing answer; when Slurm does not answer at all, runs stay as they are. Following is per
run: whatever goes wrong with one run (its outputs unreadable, malformed, huge) fails that
run with the reason, and the others are followed on.
"""

from __future__ import annotations

import logging
import pwd
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from factoryhub.hub.reports import limits, runner, schedules, scheduling, uploads
from factoryhub.hub.reports.access import Access, Person
from factoryhub.hub.reports.catalog import Catalog, Report
from factoryhub.hub.reports.outputs import (
    NOTEBOOK_MAX_BYTES,
    OutputMissing,
    is_owned_file,
    log_tail,
    read_owned,
)
from factoryhub.hub.reports.parameters import ParameterError, validate
from factoryhub.hub.reports.paths import confine
from factoryhub.hub.reports.store import FINAL, Run, RunStore, Schedule
from factoryhub.hub.service_web import Refused
from factoryhub.hub.site.model import Site
from factoryhub.spawners.model.projects import Project
from factoryhub.spawners.slurm.client import SlurmClient, SlurmError, SlurmUnavailable
from factoryhub.spawners.user_files import last_lines

log = logging.getLogger("factoryhub.reports")

ENDED_BADLY = {
    "TIMEOUT": "The job reached its time limit ({walltime}). Ask the factory's staff for a "
    "longer reports.job.walltime, or give the report less to do.",
    "OUT_OF_MEMORY": "The job ran out of memory ({memory_gb} GB). Give the report less to "
    "do, or ask the factory's staff for more reports.job.memory_gb.",
    "NODE_FAIL": "The node the job ran on failed. Re-run it.",
    "BOOT_FAIL": "The node the job was given did not start. Re-run it.",
    "PREEMPTED": "The job was preempted by a job of higher priority. Re-run it.",
    "DEADLINE": "The job reached its deadline before it could finish. Re-run it.",
}
MISSES_TO_END = 2


@dataclass(frozen=True)
class UnixAccount:
    name: str
    uid: int
    home: str


def host_uid(name: str) -> int:
    """The uid of ``name`` in this host's user database, -1 when it has none (the "local"
    access mode only: the service then runs on a submit host)."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


def unix_account(name: str, client: SlurmClient, access: str = "local") -> UnixAccount:
    """The user a run runs as, with the home the Slurm client knows. The uid is -1 in the
    "rest" access mode, whose service never reads this host's passwd (the pod's knows
    nobody, and Slurm 22.05's user record has no uid): outputs cannot be read here."""
    try:
        home = client.home(name)
    except SlurmError:
        raise Refused(409, f"There is no Unix user {name!r} on the factory to run as.") from None
    return UnixAccount(name, host_uid(name) if access == "local" else -1, home)


class ReportEngine:
    def __init__(
        self,
        site: Site,
        store: RunStore,
        catalog: Catalog,
        client: SlurmClient,
        hub_tag: str,
        lookup: scheduling.OwnerLookup | None = None,
        service_url: str = "",
    ) -> None:
        self.site = site
        self.lookup = lookup  # who a schedule's owner is now (the hub's API)
        self.settings = site.reports
        self.store = store
        self.catalog = catalog
        self.client = client
        self.hub_tag = hub_tag
        self.access = Access(self.settings.access)
        self._misses: dict[int, int] = {}
        # rest access mode: the jobs send their outputs to the service (see .uploads)
        self.uploads: uploads.OutputStore | None = None
        if site.slurm.access == "rest":
            self.uploads = uploads.OutputStore(Path(site.hub.state_dir) / "reports" / "outputs")
        self.upload_base = (self.settings.upload_url or service_url).rstrip("/")

    def upload_url(self, run_id: int) -> str:
        """Where run ``run_id``'s job sends its outputs (the rest access mode)."""
        return f"{self.upload_base}/api/runs/{int(run_id)}/upload"

    # ------------------------------------------------------------------ who and where

    def projects_of(self, person: Person) -> list[Project]:
        return [p for p in self.site.projects if person.groups.intersection(p.groups)]

    def pick_project(self, person: Person, name: str) -> Project:
        mine = self.projects_of(person)
        if not mine:
            raise Refused(
                403,
                "You are in no project, so no Slurm account can pay for a report run. "
                "Ask the factory's staff to add you to a project.",
            )
        if not name and len(mine) == 1:
            return mine[0]
        for p in mine:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in mine)
        raise Refused(400, f"Choose the project that pays for the run: one of {names}.")

    def job_name(self, run_id: int) -> str:
        return f"{self.site.slurm.job_name_prefix}-report-{run_id}"

    def paths(self, run: Run) -> tuple[UnixAccount, runner.RunPaths]:
        account = unix_account(run.run_as, self.client, self.site.slurm.access)
        root = self.settings.output_dir_for(account.home, account.name)
        return account, runner.RunPaths.for_run(root, run.id, run.report)

    # ------------------------------------------------------------------ starting runs

    def check_run(
        self, person: Person, report_name: str, values: Mapping[str, Any], action: str = "run"
    ) -> dict[str, Any]:
        """The report's validated parameters, or :class:`Refused` (unknown report, no right,
        bad values)."""
        report = self.catalog.get(report_name)
        if report is None or not self.access.reports_for(person, [report_name]):
            raise Refused(404, f"There is no report called {report_name!r} you may use.")
        if not self.access.may(person, action, report_name):
            raise Refused(403, self.access.refusal(action, report_name))
        return self._checked(report, values, person.name)

    def checked_values(self, report_name: str, values: Mapping[str, Any], run_as: str) -> dict:
        """``values`` checked again for a schedule's run as ``run_as`` (the notebook may have
        changed, and paths are checked when the run starts)."""
        report = self.catalog.get(report_name)
        if report is None:
            raise Refused(404, f"There is no report called {report_name!r} any more.")
        return self._checked(report, values, run_as)

    def _checked(self, report: Report, values: Mapping[str, Any], run_as: str) -> dict[str, Any]:
        try:
            checked = validate(report.parameters, values)
            if any(p.type == "path" and checked.get(p.name) for p in report.parameters):
                home = unix_account(run_as, self.client, self.site.slurm.access).home
                checked = confine(report.parameters, checked, home, self.settings.path_folders)
            return checked
        except ParameterError as e:
            raise Refused(400, f"Some values do not fit the report: {e}", e.problems) from None

    async def run_now(
        self, person: Person, report_name: str, values: Mapping[str, Any], project: str = ""
    ) -> Run:
        checked = self.check_run(person, report_name, values)
        chosen = self.pick_project(person, project)
        limits.check_run(self.store, self.settings.limits, person.name)
        run = self.store.add_run(
            report_name, person.name, checked, project=chosen.name, account=chosen.account
        )
        return await self.submit(run)

    async def rerun(self, person: Person, run_id: int) -> Run:
        old = self.visible_run(person, run_id)
        return await self.run_now(person, old.report, old.parameters, old.project)

    async def submit(self, run: Run) -> Run:
        """Write the run's parameters into its output folder (as the user who runs it) and
        submit its job. A refusal or an outage fails the run with Slurm's message."""
        report = self.catalog.get(run.report)
        try:
            if report is None:
                raise SlurmError(f"the report notebook {run.report!r} is gone")
            account, paths = self.paths(run)
            script = runner.render_script(
                run_id=run.id,
                report=run.report,
                notebook=report.path,
                paths=paths,
                python=str(Path(self.site.spawner.python_env) / "bin" / "python"),
                partition=self.settings.partition,
                walltime=self.settings.walltime,
                cpus=self.settings.cpus,
                memory_gb=self.settings.memory_gb,
                account=run.account,
                job_name=self.job_name(run.id),
                comment=f"{self.hub_tag}/report/{run.id}",
                upload=self.uploads is not None,
            )
            job_id = await self.client.submit(
                account.name,
                script,
                self._job_env(account, run.id),
                # the parent is the user's reports folder: only they may list their runs
                dirs=[str(paths.out_dir.parent), str(paths.out_dir)],
                files={str(paths.parameters): runner.parameters_json(run.parameters)},
            )
        except (SlurmError, SlurmUnavailable, Refused) as e:
            message = e.message if isinstance(e, Refused) else str(e)
            log.warning("report run %s not submitted: %s", run.id, message)
            self.store.move(run.id, "failed", error=f"Not submitted: {message}")
            if isinstance(e, SlurmUnavailable):
                raise Refused(503, f"{message}. Nothing was started; try again shortly.") from e
            raise Refused(409, f"The run could not be submitted: {message}") from e
        log.info("report run %s (%s of %s) is Slurm job %s", run.id, run.report, run.user, job_id)
        return self.store.set_job(run.id, job_id)

    def _job_env(self, account: UnixAccount, run_id: int) -> dict[str, str]:
        """The job's environment; in the rest access mode with the run's upload URL and a
        fresh upload token (only its digest is kept), never in the script's text."""
        venv_bin = str(Path(self.site.spawner.python_env) / "bin")
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": account.home,
            "USER": account.name,
            "LOGNAME": account.name,
            "LANG": "C.UTF-8",
        }
        if self.uploads is not None:
            token, digest = uploads.new_token()
            self.store.set_upload_token(run_id, digest)
            env[uploads.TOKEN_ENV] = token
            env[uploads.URL_ENV] = self.upload_url(run_id)
        return env

    # ------------------------------------------------------------------ seeing and cancelling

    def visible_run(self, person: Person, run_id: int) -> Run:
        try:
            run = self.store.run(run_id)
        except ValueError:
            raise Refused(404, f"There is no run {run_id}.") from None
        if not self.access.may_see_run(person, run.user, run.report):
            raise Refused(404, f"There is no run {run_id}.")
        return run

    def visible_runs(self, person: Person, report: str = "", limit: int = 200) -> list[Run]:
        runs = self.store.runs(limit=2000)
        seen = [
            r
            for r in runs
            if (not report or r.report == report)
            and self.access.may_see_run(person, r.user, r.report)
        ]
        return seen[:limit]

    async def cancel(self, person: Person, run_id: int) -> Run:
        run = self.visible_run(person, run_id)
        if run.user != person.name and not person.admin:
            raise Refused(403, "Only who started a run (or a hub admin) can cancel it.")
        if run.status in FINAL:
            return run
        if run.job_id:
            try:
                await self.client.cancel(run.run_as, run.job_id)
            except SlurmUnavailable as e:
                raise Refused(503, f"{e}. The run goes on; try again shortly.") from e
        return self.store.move(run.id, "cancelled", error=f"Cancelled by {person.name}.")

    # ------------------------------------------------------------------ following jobs

    async def recover(self) -> None:
        """On start: runs that never got their job id (the service stopped between the two)
        adopt their job if Slurm has it, or fail with a message; the rest is ``follow``'s."""
        orphans = [r for r in self.store.unfinished() if not r.job_id]
        if not orphans:
            return
        jobs = await self.client.jobs_named(f"{self.site.slurm.job_name_prefix}-report-", "all")
        # a job's name is its user's choice: only the run's own user's job is the run's
        by_name = {(j.name, j.user): j for j in jobs}
        for run in orphans:
            job = by_name.get((self.job_name(run.id), run.run_as))
            if job is not None:
                log.info("report run %s adopts job %s", run.id, job.job_id)
                self.store.set_job(run.id, job.job_id)
            else:
                self.store.move(
                    run.id,
                    "failed",
                    error="The service stopped before the job was submitted. Re-run it.",
                )

    async def follow(self) -> None:
        """One look at every unfinished run's job; moves runs whose state changed."""
        runs = [r for r in self.store.unfinished() if r.job_id]
        if not runs:
            return
        try:
            jobs = await self.client.query([r.job_id for r in runs])
        except SlurmUnavailable as e:
            log.warning("report runs not followed this time: %s", e)
            return
        for run in runs:
            try:
                await self._follow_one(run, jobs.get(run.job_id))
            except Exception as e:  # this run's trouble, never the others'
                log.exception("report run %s could not be followed", run.id)
                self._fail_unfollowable(run, e)

    def _fail_unfollowable(self, run: Run, error: Exception) -> None:
        self._misses.pop(run.id, None)
        reason = f"The service could not read how the run ended ({type(error).__name__})."
        try:
            self.store.move(run.id, "failed", error=reason)
        except Exception:
            log.exception("report run %s could not be marked failed", run.id)

    async def _follow_one(self, run: Run, job: Any) -> None:
        if job is not None and job.active:
            self._misses.pop(run.id, None)
            if job.running and run.status == "queued":
                self.store.move(run.id, "running")
            return
        if job is not None:
            await self.finish(run, job.state)
            return
        self._misses[run.id] = self._misses.get(run.id, 0) + 1
        if self._misses[run.id] >= MISSES_TO_END:
            try:
                state = await self.client.accounted_state(run.job_id)
            except (SlurmUnavailable, SlurmError) as e:
                log.warning("run %s: job %s not listed, sacct: %s", run.id, run.job_id, e)
                state = ""
            await self.finish(run, state)

    async def finish(self, run: Run, state: str) -> Run:
        """Record how ``run`` ended: its job's final ``state`` and what its outputs say."""
        self._misses.pop(run.id, None)
        if self.uploads is not None:
            return await self._finish_uploaded(self.store.run(run.id), state, self.uploads)
        account, paths = self.paths(run)
        outcome = runner.read_outcome_bytes(await self._read_notebook(paths.executed, account.uid))
        has_html = await is_owned_file(paths.html, account.uid)
        fields: dict[str, Any] = {
            "notebook_path": str(paths.executed) if outcome.executed else "",
            "html_path": str(paths.html) if has_html else "",
        }

        async def tail() -> str:
            return await log_tail(paths.out_dir / f"slurm-{run.job_id}.log", account.uid)

        return await self._record_end(run, state, outcome, fields, tail)

    async def _finish_uploaded(self, run: Run, state: str, kept: uploads.OutputStore) -> Run:
        """``finish`` in the rest access mode: the outputs are those the job sent."""
        if run.status in FINAL:  # a refused upload already failed it
            return run
        outcome = runner.read_outcome_bytes(kept.read(run.id, "notebook"))
        fields: dict[str, Any] = {
            "notebook_path": str(kept.path(run.id, "notebook")) if outcome.executed else "",
            "html_path": str(kept.path(run.id, "html")) if kept.has(run.id, "html") else "",
        }
        if not kept.has(run.id, "status") and state in ("COMPLETED", "FAILED", ""):
            error = (
                f"The job ended ({state or 'state unknown'}) without sending its outputs to "
                f"the Reports service at {self.upload_url(run.id)}. Its Slurm log in the "
                "run's folder in your home says why; the service's address for jobs is "
                "reports.upload_url."
            )
            return self.store.move(run.id, "failed", error=error, **fields)

        async def tail() -> str:
            return last_lines(kept.read(run.id, "log") or b"", 15)

        return await self._record_end(run, state, outcome, fields, tail)

    async def _record_end(
        self,
        run: Run,
        state: str,
        outcome: runner.Outcome,
        fields: dict[str, Any],
        tail: Callable[[], Awaitable[str]],
    ) -> Run:
        """Move the ended ``run`` by its job's ``state`` and its notebook's ``outcome``;
        ``tail``: the job log's last lines, read only when they are needed."""
        if state.startswith("CANCELLED"):
            return self.store.move(run.id, "cancelled", error="The job was cancelled.", **fields)
        if state in ENDED_BADLY:
            error = ENDED_BADLY[state].format(
                walltime=self.settings.walltime, memory_gb=self.settings.memory_gb
            )
            return self.store.move(run.id, "failed", error=error, **fields)
        if outcome.executed and not outcome.failed and state in ("COMPLETED", ""):
            return self.store.move(run.id, "succeeded", **fields)
        error = outcome.error if outcome.executed else ""
        if not error and outcome.error != runner.NO_NOTEBOOK:
            error = f"The job ended ({state or 'state unknown'}), but {outcome.error}."
        if not error:
            lines = await tail()
            error = f"The job ended ({state or 'state unknown'}) without an executed notebook."
            error += f"\n{lines}" if lines else ""
        return self.store.move(
            run.id, "failed", error=error, failed_cell=outcome.failed_cell, **fields
        )

    @staticmethod
    async def _read_notebook(path: Path, uid: int) -> bytes | runner.TooLarge | None:
        """The executed notebook's bytes; :class:`runner.TooLarge` when it is over the bound."""
        try:
            return await read_owned(path, uid, NOTEBOOK_MAX_BYTES)
        except OutputMissing as e:
            if "larger than" in str(e):
                return runner.TooLarge(NOTEBOOK_MAX_BYTES)
            return None

    async def output(self, run: Run, kind: str) -> bytes:
        """The executed notebook (``ipynb``), its HTML (``html``) or the job's log (``log``)."""
        if self.uploads is not None:
            data = self.uploads.read(run.id, {"ipynb": "notebook"}.get(kind, kind))
            if data is None:
                raise Refused(404, f"Run {run.id} has no {kind} output: the job sent none.")
            return data
        account, paths = self.paths(run)
        path = {
            "ipynb": paths.executed,
            "html": paths.html,
            "log": paths.out_dir / f"slurm-{run.job_id}.log",
        }[kind]
        try:
            return await read_owned(path, account.uid)
        except OutputMissing as e:
            raise Refused(404, f"Run {run.id} has no {kind} output: {e}") from None

    # ------------------------------------------------------------------ schedules

    def min_interval(self) -> timedelta:
        return timedelta(minutes=self.settings.min_interval_minutes)

    def add_schedule(
        self,
        person: Person,
        report_name: str,
        cron: str,
        values: Mapping[str, Any],
        project: str = "",
        now: datetime | None = None,
    ) -> Schedule:
        """A schedule of ``person``'s: its runs are their jobs, paid by their ``project``."""
        checked = self.check_run(person, report_name, values, action="schedule")
        now = now or datetime.now().astimezone()
        try:
            expression = schedules.check(cron, now, self.min_interval())
        except schedules.ScheduleError as e:
            raise Refused(400, str(e), {"cron": str(e)}) from None
        chosen = self.pick_project(person, project)
        limits.check_schedule(self.store, self.settings.limits, person.name)
        return self.store.add_schedule(report_name, person.name, expression, checked, chosen.name)

    def visible_schedules(self, person: Person) -> list[Schedule]:
        return [
            s
            for s in self.store.schedules()
            if s.user == person.name or self.access.may(person, "see_all", s.report)
        ]

    def delete_schedule(self, person: Person, schedule_id: int) -> None:
        try:
            schedule = self.store.schedule(schedule_id)
        except ValueError:
            raise Refused(404, f"There is no schedule {schedule_id}.") from None
        if schedule.site:
            raise Refused(
                403, "A site report's schedule is the site file's (reports.site_reports)."
            )
        if schedule.user != person.name and not person.admin:
            raise Refused(403, "Only who made a schedule (or a hub admin) can remove it.")
        self.store.delete_schedule(schedule_id)

    async def fire_due(self, now: datetime | None = None) -> list[Run]:
        """Start a run of every due schedule (see :mod:`.scheduling`)."""
        return await scheduling.fire_due(self, self.lookup, now)

    async def tick(self) -> None:
        await self.fire_due()
        await self.follow()
