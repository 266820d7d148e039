"""The Reports service's pure parts: access rules, the catalog, the site section, the command
line's values, and how runs are followed (with a scripted Slurm client: the real one is in
tests/integration/test_reports.py)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest
import yaml

from factoryhub.hub import site
from factoryhub.hub.reports.access import Access, Person
from factoryhub.hub.reports.catalog import Catalog, describe
from factoryhub.hub.reports.cli import CliError, parse_values
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.outputs import OutputMissing, log_tail, read_owned
from factoryhub.hub.reports.store import RunStore
from factoryhub.hub.site import SiteError, parse_site
from factoryhub.hub.site_reports import AccessRule
from factoryhub.spawners.slurm_client import JobInfo, SlurmUnavailable

STAFF = Person("stan", frozenset({"factory-staff"}))
RESEARCHER = Person("ravi", frozenset({"climate-lab"}))
ADMIN = Person("ada", frozenset(), admin=True)
RULES = [
    AccessRule(allow=("run", "schedule", "see_all"), groups=("factory-staff",)),
    AccessRule(allow=("run",), groups=("climate-lab",), reports=("model-evaluation",)),
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
    assert [p.default for p in catalog.get("usage").parameters] == [7]  # type: ignore[union-attr]
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
    engine = ReportEngine(parse_site(data), store, Catalog([]), slurm, "tag")  # type: ignore[arg-type]
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
    engine = ReportEngine(parse_site(data), store, Catalog([]), slurm, "tag")  # type: ignore[arg-type]
    asyncio.run(engine.recover())
    assert store.run(forged.id).status == "failed" and store.run(forged.id).job_id == ""
    assert store.run(real.id).job_id == "8"
