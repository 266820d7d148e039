"""The Reports service's pure parts: access rules, the catalog, the site section, the command
line's values, and how runs are followed (with a scripted Slurm client: the real one is in
tests/integration/test_reports.py)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from factoryhub.hub.reports.access import Access, Person
from factoryhub.hub.reports.app import schedule_json
from factoryhub.hub.reports.catalog import Catalog, describe
from factoryhub.hub.reports.cli import CliError, parse_values
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.outputs import OutputMissing, log_tail, read_owned
from factoryhub.hub.reports.scheduling import sync_site_reports
from factoryhub.hub.reports.store import RunStore
from factoryhub.hub.service_web import Refused
from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import Site, SiteError, parse_site
from factoryhub.hub.site.reports import AccessRule
from factoryhub.spawners.slurm.client import JobInfo, SlurmClient, SlurmError, SlurmUnavailable

ME = pwd.getpwuid(os.getuid()).pw_name  # a runner whose outputs the test's user owns
STAFF = Person("stan", frozenset({"factory-staff"}))
RESEARCHER = Person("ravi", frozenset({"climate-lab"}))
ADMIN = Person("ada", frozenset(), admin=True)
RULES = [
    AccessRule(
        allow=("run", "schedule", "see_all"), groups=("factory-staff",), users=(), reports=("*",)
    ),
    AccessRule(allow=("run",), groups=("climate-lab",), users=(), reports=("model-evaluation",)),
]


def test_access_follows_the_rules() -> None:
    access = Access(RULES)
    assert access.may(STAFF, "schedule", "usage")
    assert access.may(RESEARCHER, "run", "model-evaluation")
    assert not access.may(RESEARCHER, "run", "usage")
    assert not access.may(RESEARCHER, "schedule", "model-evaluation")
    assert access.may(ADMIN, "see_all", "anything")
    assert access.reports_for(RESEARCHER, ["usage", "model-evaluation"]) == ["model-evaluation"]
    # own runs always; others' only with see_all
    assert access.may_see_run(RESEARCHER, "ravi", "usage")
    assert not access.may_see_run(RESEARCHER, "stan", "model-evaluation")
    assert access.may_see_run(STAFF, "ravi", "model-evaluation")
    assert "ask the factory's staff" in access.refusal("schedule", "usage")
    with pytest.raises(ValueError):
        access.may(STAFF, "delete", "usage")


def notebook(path: Path, title: str, params: str) -> Path:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n\nWhat it shows.\n"]},
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": [params],
            "outputs": [],
            "execution_count": None,
        },
    ]
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.write_text(
        json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def test_the_catalog_reads_titles_and_parameters_and_sees_changes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    nb = notebook(first / "usage.ipynb", "Factory usage", "days = 30\naccounts = []")
    notebook(second / "usage.ipynb", "Hidden", "x = 1")  # the first folder wins
    notebook(second / "bad name!.ipynb", "Bad", "x = 1")  # not a report name
    catalog = Catalog([first, second, tmp_path / "missing"])
    (report,) = catalog.reports()
    assert (report.name, report.title, report.description) == (
        "usage",
        "Factory usage",
        "What it shows.",
    )
    assert [(p.name, p.type, p.default) for p in report.parameters] == [
        ("days", "int", 30),
        ("accounts", "list", []),
    ]
    notebook(nb, "Factory usage", "days = 7")
    os.utime(nb, (1, 1))  # a different mtime, whatever the clock's resolution
    usage = catalog.get("usage")
    assert usage is not None and [p.default for p in usage.parameters] == [7]
    assert catalog.get("nothing") is None
    assert describe(tmp_path / "none.ipynb") == ("none", "")


def example() -> dict[str, Any]:
    data = yaml.safe_load(site.example_site_path().read_text())
    data["auth"]["type"] = "local"
    del data["auth"]["oidc"]
    return data


def test_the_site_section_names_what_is_wrong() -> None:
    data = example()
    data["reports"]["job"]["partition"] = "gpu"
    data["reports"]["service_project"] = "nope"
    data["reports"]["access"][0]["allow"] = ["run", "delete"]
    with pytest.raises(SiteError) as e:
        parse_site(data)
    text = str(e.value)
    assert "reports.job.partition" in text and "reports.service_project" in text
    assert "reports.access[0].allow[1]" in text
    settings = parse_site(example()).reports
    assert settings.partition == "batch" and settings.service_user == "factoryhub-reports"
    assert settings.output_dir_for("/home/u", "u") == "/home/u/.factoryhub/reports"


def test_the_command_line_values() -> None:
    assert parse_values(["n=3", "label=a = b", "empty="]) == {
        "n": "3",
        "label": "a = b",
        "empty": "",
    }
    with pytest.raises(CliError):
        parse_values(["n"])


async def test_outputs_are_read_only_from_the_users_own_files(tmp_path: Path) -> None:
    mine = tmp_path / "out.html"
    mine.write_text("<p>ok</p>")
    assert await read_owned(mine, os.getuid()) == b"<p>ok</p>"
    link = tmp_path / "link.html"
    link.symlink_to(mine)
    with pytest.raises(OutputMissing):
        await read_owned(link, os.getuid())
    with pytest.raises(OutputMissing):
        await read_owned(mine, os.getuid() + 1)  # somebody else's file
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o777)
    runs.chmod(0o777)  # a folder the user controls: a link in it is not followed
    (runs / "run-1").symlink_to(tmp_path)
    with pytest.raises(OutputMissing, match="symbolic link"):
        await read_owned(runs / "run-1" / "out.html", os.getuid())
    os.mkfifo(tmp_path / "fifo.log")  # never blocks the service
    with pytest.raises(OutputMissing, match="not a regular file"):
        await read_owned(tmp_path / "fifo.log", os.getuid())
    (tmp_path / "big.log").write_bytes(b"x" * 3000 + b"\nlast line\n")
    with pytest.raises(OutputMissing, match="larger than"):
        await read_owned(tmp_path / "big.log", os.getuid(), max_bytes=1000)
    assert await log_tail(tmp_path / "big.log", os.getuid(), lines=1) == "last line"


def engine_on(
    parsed: Site, store: RunStore, catalog: Catalog, slurm: object, lookup: Any = None
) -> ReportEngine:
    """The engine on a fake Slurm: the fakes answer only the calls these tests make, not the
    whole SlurmClient protocol (hence the cast)."""
    return ReportEngine(parsed, store, catalog, cast(SlurmClient, slurm), "tag", lookup)


class ScriptedSlurm:
    """Answers ``query`` from a script: a dict of jobs, or an exception."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.accounted = "COMPLETED"

    async def query(self, ids: Any) -> dict[str, JobInfo]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def accounted_state(self, job_id: str) -> str:
        return self.accounted

    def home(self, username: str) -> str:
        return pwd.getpwnam(username).pw_dir


def test_a_run_ends_only_when_slurm_says_so_twice(tmp_path: Path) -> None:
    data = example()
    data["hub"]["state_dir"] = str(tmp_path)
    data["reports"]["output_dir"] = str(tmp_path / "{username}")
    store = RunStore(tmp_path / "runs.sqlite")
    slurm = ScriptedSlurm()
    engine = engine_on(parse_site(data), store, Catalog([]), slurm)
    run = store.add_run("usage", "root", {}, project="factory-ops", account="factory-ops")
    store.set_job(run.id, "42")
    running = {"42": JobInfo("42", "RUNNING")}
    slurm.answers = [
        running,
        SlurmUnavailable("controller down"),  # no answer: nothing changes
        {},  # not listed once: could be a hiccup
        running,
        {},
        {},  # not listed twice: accounting says how it ended
    ]
    statuses = []
    for _ in slurm.answers[:]:
        asyncio.run(engine.follow())
        statuses.append(store.run(run.id).status)
    assert statuses == ["running", "running", "running", "running", "running", "failed"]
    # no executed notebook although the job completed: failed, and said so
    assert "without an executed notebook" in store.run(run.id).error


class NamedJobs:
    """Answers ``jobs_named`` with a fixed queue."""

    def __init__(self, jobs: list[JobInfo]) -> None:
        self.jobs = jobs

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        return [j for j in self.jobs if j.name.startswith(prefix)]

    def home(self, username: str) -> str:
        return pwd.getpwnam(username).pw_dir


def test_a_run_adopts_only_its_own_users_job_of_its_name(tmp_path: Path) -> None:
    """A job's name is its user's: another user's job named like a run's is not the run's."""
    data = example()
    data["hub"]["state_dir"] = str(tmp_path)
    store = RunStore(tmp_path / "runs.sqlite")
    forged = store.add_run("usage", "root", {}, project="factory-ops", account="factory-ops")
    real = store.add_run("usage", "root", {}, project="factory-ops", account="factory-ops")
    prefix = parse_site(data).slurm.job_name_prefix
    slurm = NamedJobs(
        [
            JobInfo("7", "RUNNING", name=f"{prefix}-report-{forged.id}", user="sofia"),
            JobInfo("8", "RUNNING", name=f"{prefix}-report-{real.id}", user="root"),
        ]
    )
    engine = engine_on(parse_site(data), store, Catalog([]), slurm)
    asyncio.run(engine.recover())
    assert store.run(forged.id).status == "failed" and store.run(forged.id).job_id == ""
    assert store.run(real.id).job_id == "8"


# ------------------------------------------------------- issue 17: follow, limits, schedules


class FakeSlurm(ScriptedSlurm):
    """Submits (numbering jobs), answers every query with ``states``, homes under ``root``."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.states: dict[str, str] = {}
        self.submitted: list[tuple[str, str]] = []  # (user, script)

    async def submit(self, user: str, script: str, env: Any, **kw: Any) -> str:
        self.submitted.append((user, script))
        return str(100 + len(self.submitted))

    async def query(self, ids: Any) -> dict[str, JobInfo]:
        return {i: JobInfo(i, self.states[i]) for i in ids if i in self.states}

    def home(self, username: str) -> str:
        if username == "gone":
            raise SlurmError("no such user")
        if username == "root":
            return str(self.root)
        home = self.root / "home" / username
        home.mkdir(parents=True, exist_ok=True)
        return str(home)


def make_engine(
    tmp_path: Path, lookup: Any = None, **reports: Any
) -> tuple[ReportEngine, RunStore, FakeSlurm]:
    data = example()
    data["hub"]["state_dir"] = str(tmp_path)
    data["reports"]["output_dir"] = str(tmp_path / "{username}")
    data["reports"].update(reports)
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    notebook(folder / "usage.ipynb", "Usage", "days = 30")
    notebook(folder / "ev.ipynb", "Evaluation", 'data = ""  # type: path  a data folder\nn = 1')
    store = RunStore(tmp_path / "runs.sqlite")
    slurm = FakeSlurm(tmp_path)
    engine = engine_on(parse_site(data), store, Catalog([folder]), slurm, lookup)
    return engine, store, slurm


def test_one_runs_bad_outputs_fail_that_run_and_the_others_are_followed(tmp_path: Path) -> None:
    engine, store, slurm = make_engine(tmp_path)
    good_nb = json.dumps({"cells": [{"metadata": {}, "outputs": []}]}).encode()
    big = b'{"cells": [], "x": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    outputs = {
        "list": b"[]",
        "cells": b'{"cells": [1]}',
        "deep": b"[" * 10_000 + b"]" * 10_000,
        "big": big,
        "good": good_nb,
        "gone": good_nb,  # its user is gone: its paths cannot even be made
    }
    runs = {}
    for kind, data in outputs.items():
        run = store.add_run("usage", ME, {}, run_as="gone" if kind == "gone" else ME)
        store.set_job(run.id, str(run.id))
        slurm.states[str(run.id)] = "COMPLETED"
        out = tmp_path / ME / f"run-{run.id}"  # the runner's own files: no root needed
        out.mkdir(parents=True)
        (out / "usage.ipynb").write_bytes(data)
        runs[kind] = run.id
    asyncio.run(engine.follow())
    ended = {kind: store.run(i) for kind, i in runs.items()}
    assert ended["good"].status == "succeeded"
    assert {k: r.status for k, r in ended.items() if k != "good"} == dict.fromkeys(
        ["list", "cells", "deep", "big", "gone"], "failed"
    )
    assert "not a notebook" in ended["list"].error
    assert "cell 0 is not an object" in ended["cells"].error
    assert "nested deeper than" in ended["deep"].error
    assert "larger than" in ended["big"].error
    assert "could not read how the run ended (Refused)" in ended["gone"].error
    assert store.unfinished() == []


def test_limits_refuse_naming_the_limit_and_its_value(tmp_path: Path) -> None:
    limits = {"concurrent_runs_per_person": 2, "runs_per_hour": 3, "schedules_per_person": 1}
    engine, store, slurm = make_engine(tmp_path, limits=limits)
    first = asyncio.run(engine.run_now(STAFF, "usage", {}))
    asyncio.run(engine.run_now(STAFF, "usage", {}))
    with pytest.raises(Refused) as e:
        asyncio.run(engine.run_now(STAFF, "usage", {}))
    assert e.value.status == 429
    assert "reports.limits.concurrent_runs_per_person is 2" in e.value.message
    other_staff = Person("sam", frozenset({"factory-staff"}))
    asyncio.run(engine.run_now(other_staff, "usage", {}))  # limits are per person
    store.move(first.id, "failed", error="ended")
    asyncio.run(engine.run_now(STAFF, "usage", {}))  # one slot free again
    store.move(first.id + 1, "failed", error="ended")
    with pytest.raises(Refused) as e:
        asyncio.run(engine.run_now(STAFF, "usage", {}))
    assert "reports.limits.runs_per_hour is 3" in e.value.message
    assert len(slurm.submitted) == 4
    engine.add_schedule(STAFF, "usage", "0 6 * * 1", {})
    with pytest.raises(Refused) as e:
        engine.add_schedule(STAFF, "usage", "0 7 * * 1", {})
    assert e.value.status == 429 and "reports.limits.schedules_per_person is 1" in e.value.message


def test_a_path_parameter_outside_the_runners_folders_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    engine, _, slurm = make_engine(tmp_path)
    with pytest.raises(Refused) as e:
        asyncio.run(engine.run_now(STAFF, "ev", {"data": "/etc"}))
    assert e.value.status == 400 and set(e.value.problems) == {"data"}
    assert "the path parameter data" in e.value.message and slurm.submitted == []
    home = Path(slurm.home("stan"))
    (home / "set").mkdir()
    run = asyncio.run(engine.run_now(STAFF, "ev", {"data": "~/set"}))
    assert run.parameters["data"] == f"{home}/set"
    with pytest.raises(Refused) as e:
        engine.add_schedule(STAFF, "ev", "0 6 * * 1", {"data": "/root"})
    assert set(e.value.problems) == {"data"}


def test_a_schedule_runs_as_its_owner_and_pauses_when_they_lose_access(tmp_path: Path) -> None:
    who: dict[str, Person | None] = {"stan": STAFF}

    async def lookup(name: str) -> Person | None:
        return who.get(name)

    engine, store, slurm = make_engine(tmp_path, lookup)
    made = engine.add_schedule(STAFF, "usage", "*/5 * * * *", {"days": 2})
    assert made.project == "factory-ops" and not made.site
    now = datetime.now().astimezone()
    (run,) = asyncio.run(engine.fire_due(now + timedelta(minutes=6)))
    assert (run.user, run.run_as, run.account) == ("stan", "stan", "factory-ops")
    assert slurm.submitted[-1][0] == "stan" and run.parameters == {"days": 2}
    who["stan"] = Person("stan", frozenset({"climate-lab"}))  # no longer staff
    assert asyncio.run(engine.fire_due(now + timedelta(minutes=11))) == []
    paused = store.schedule(made.id).paused
    assert "may no longer schedule the report 'usage'" in paused
    assert schedule_json(store.schedule(made.id))["paused"] == paused
    who["stan"] = None
    assert asyncio.run(engine.fire_due(now + timedelta(minutes=16))) == []
    assert "no longer a user" in store.schedule(made.id).paused
    who["stan"] = STAFF  # back: fires again, as the owner
    (again,) = asyncio.run(engine.fire_due(now + timedelta(minutes=21)))
    assert again.run_as == "stan" and store.schedule(made.id).paused == ""
    assert len(slurm.submitted) == 2


def test_only_site_reports_run_as_the_service_user(tmp_path: Path) -> None:
    site_reports = [
        {"report": "usage", "schedule": "0 6 * * *", "parameters": [{"name": "days", "value": 3}]}
    ]
    engine, store, slurm = make_engine(tmp_path, None, site_reports=site_reports)
    sync_site_reports(engine)
    sync_site_reports(engine)  # again: nothing doubled
    (s,) = store.schedules()
    assert s.site and s.user == "factoryhub-reports" and s.project == "factory-ops"
    later = datetime.now().astimezone() + timedelta(days=1, minutes=1)
    (run,) = asyncio.run(engine.fire_due(later))
    assert run.run_as == "factoryhub-reports" and run.parameters == {"days": 3}
    assert slurm.submitted[-1][0] == "factoryhub-reports"
    with pytest.raises(Refused) as e:
        engine.delete_schedule(ADMIN, s.id)
    assert e.value.status == 403 and "reports.site_reports" in e.value.message
    # a person's schedule never does, even with a service user set
    mine = engine.add_schedule(STAFF, "usage", "0 6 * * *", {})
    assert not mine.site and mine.user == "stan"
    # the site file changed: the old site schedule goes, the new one comes
    engine2, _, _ = make_engine(tmp_path, None, site_reports=[])
    sync_site_reports(engine2)
    assert [x.id for x in store.schedules()] == [mine.id]
