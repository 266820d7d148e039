"""The OIDC hub: factoryhub's hub signing people in with the real local provider, with
projects mapped to real Slurm accounts (slurmdbd), and a browser-like sign-in helper."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import yaml

from factoryhub.local import slurm as local_slurm
from factoryhub.spawners.slurm import accounts as slurm_accounts
from tests.support.hub import RunningHub, site_for

from .hub_fixtures import OIDC_HUB_PORTS
from .idp_fixtures import RunningIdp

# The test users of idp_fixtures: fhtest-oidc is in project fhtest-lab; fhtest-oidc-two in
# fhtest-lab and acme-ai; fhtest-oidc-nogroups in none.
REPORTS_PORT = 18101
REPORTS_USER = "fhtest-reports"  # runs the oidc hub's scheduled reports
REPORT_NOTEBOOKS = Path(__file__).parent / "report_notebooks"
# fhtest-oidc may do everything with every report; acme-ai members (fhtest-oidc-two) may only
# run "quick"; fhtest-oidc-nogroups may do nothing.
REPORTS_ACCESS = [
    {"users": ["fhtest-oidc"], "allow": ["run", "schedule", "see_all"]},
    {"groups": ["acme-ai"], "reports": ["quick"], "allow": ["run"]},
]

REPORTS_LIMITS = {"concurrent_runs_per_person": 6, "schedules_per_person": 2, "runs_per_hour": 200}
# a site report (the only kind that runs as REPORTS_USER), due once a year: never in a test
SITE_REPORT = {
    "report": "quick",
    "schedule": "0 3 1 1 *",
    "parameters": [{"name": "label", "value": "site"}],
}

# The test course: fhtest-trainer teaches it (group fhtest-trainers); fhtest-pupil-a and -b
# take it by IdP group, fhtest-pupil-c by name; fhtest-oidc neither teaches nor takes it.
# Its materials are a git repository (COURSE_REPO, made by the fixture).
COURSE = "fhtest-course"
COURSE_TRAINER = "fhtest-trainer"
COURSE_PUPILS = ["fhtest-pupil-a", "fhtest-pupil-b", "fhtest-pupil-c"]
COURSES_PORT = 18102
COURSE_FILES = {
    "01-welcome.ipynb": "welcome, version 1",
    "notes/reading.md": "reading list, version 1",
}


def notebook_text(text: str) -> str:
    """A small valid notebook whose one markdown cell says ``text``."""
    return json.dumps(
        {
            "cells": [{"cell_type": "markdown", "id": "c1", "metadata": {}, "source": [text]}],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=FH Test",
            "-c",
            "user.email=t@example.org",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_course_files(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(notebook_text(text) if name.endswith(".ipynb") else text + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def reset_course_homes() -> None:
    """Remove what earlier test sessions left of the test course in its people's homes (the
    Unix users and their homes outlive a session)."""
    import pwd

    for name in [COURSE_TRAINER, *COURSE_PUPILS]:
        try:
            home = Path(pwd.getpwnam(name).pw_dir)
        except KeyError:
            continue
        shutil.rmtree(home / "courses" / COURSE, ignore_errors=True)
        shutil.rmtree(home / "collected" / COURSE, ignore_errors=True)


def course_site(repo: Path, cache: Path) -> dict[str, Any]:
    today = datetime.date.today()
    return {
        "enabled": True,
        "port": COURSES_PORT,
        "materials_cache": str(cache),
        "start_timeout": 300,
        "list": [
            {
                "name": COURSE,
                "display_name": "FH Test Course",
                "description": "The tests' course.",
                "trainers": {"groups": ["fhtest-trainers"]},
                "participants": {"groups": ["fhtest-course-group"], "users": ["fhtest-pupil-c"]},
                "start": (today - datetime.timedelta(days=1)).isoformat(),
                "end": (today + datetime.timedelta(days=30)).isoformat(),
                "profile": "cpu-small",
                "project": "fhtest-lab",
                "materials": {"git": str(repo)},
            }
        ],
    }


TEST_PROJECT = {
    "name": "fhtest-lab",
    "display_name": "FH Test Lab",
    "account": "fhtest-lab",
    "groups": ["fhtest-project"],
    "profiles": ["cpu-small"],
}


def cancel_jobs_of(usernames: list[str]) -> None:
    from factoryhub.local import slurm as local_slurm

    for name in usernames:
        local_slurm.cancel_user_jobs(name)


def reports_folder() -> Path:
    """The test report notebooks, where every test user can read them (pytest's own
    temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="factoryhub-test-reports-"))
    folder.chmod(0o755)
    for notebook in REPORT_NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, folder / notebook.name)
        (folder / notebook.name).chmod(0o644)
    return folder


def reports_site(folder: Path) -> dict[str, Any]:
    return {
        "enabled": True,
        "port": REPORTS_PORT,
        "folders": [str(folder)],
        "job": {"partition": "batch", "walltime": "00:10:00"},
        "min_interval_minutes": 1,
        "poll_interval": 1,
        "service_user": REPORTS_USER,
        "service_project": TEST_PROJECT["name"],
        "access": REPORTS_ACCESS,
        "limits": REPORTS_LIMITS,
        "site_reports": [SITE_REPORT],
    }


def course_materials() -> tuple[Path, Path]:
    """The course's materials: a git repository, and the cache the Courses service mirrors
    it into (every participant can read it)."""
    repo = Path(tempfile.mkdtemp(prefix="factoryhub-test-course-repo-"))
    git(repo, "init", "-q", "-b", "main")
    commit_course_files(repo, COURSE_FILES, "first materials")
    cache = Path(tempfile.mkdtemp(prefix="factoryhub-test-course-cache-"))
    cache.chmod(0o755)
    return repo, cache


def oidc_site(state: Path, idp: RunningIdp, folders: dict[str, Path]) -> Path:
    """The OIDC hub's site file: the test IdP, the test project (its Slurm account made
    here) before the example's, the reports and the course; ``folders``: the reports'
    folder and the course's repository and cache."""
    secret_file = state / "client-secret"
    secret_file.write_text(idp.client_secret)
    secret_file.chmod(0o600)
    site = site_for(state, OIDC_HUB_PORTS)
    site["auth"]["oidc"].update(
        issuer=idp.issuer, client_id=idp.client_id, client_secret_file=str(secret_file)
    )
    site["projects"] = [TEST_PROJECT, *site["projects"]]
    for project in site["projects"]:
        slurm_accounts.ensure_account(project["account"], project["display_name"])
    local_slurm.create_unix_user(REPORTS_USER)
    slurm_accounts.ensure_user_in_account(REPORTS_USER, TEST_PROJECT["account"])
    site["reports"] = reports_site(folders["reports"])
    site["courses"] = course_site(folders["course_repo"], folders["course_cache"])
    site_file = state / "factory.yaml"
    site_file.write_text(yaml.safe_dump(site))
    return site_file


@pytest.fixture(scope="session")
def oidc_hub(
    slurm: Any, idp: RunningIdp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningHub]:
    state = tmp_path_factory.mktemp("oidc-hub-state")
    state.chmod(0o700)
    course_repo, course_cache = course_materials()
    folders = {
        "reports": reports_folder(),
        "course_repo": course_repo,
        "course_cache": course_cache,
    }
    hub = RunningHub(
        state_dir=state,
        site_file=oidc_site(state, idp, folders),
        token=secrets.token_hex(32),
        log_path=RunningHub.artifacts() / "oidc-hub.log",
        url=f"http://127.0.0.1:{OIDC_HUB_PORTS[0]}",
    )
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        cancel_jobs_of(
            [
                "fhtest-oidc",
                "fhtest-oidc-two",
                "fhtest-oidc-nogroups",
                REPORTS_USER,
                COURSE_TRAINER,
                *COURSE_PUPILS,
            ]
        )
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def hub_sign_in(
    hub: RunningHub, username: str, password: str
) -> tuple[httpx.Client, httpx.Response]:
    """Sign in as a browser would: the hub sends us to the provider's login page, we fill it
    in, the provider sends us back. Returns the client (with the hub's cookies) and the last
    page."""
    client = httpx.Client(timeout=30, follow_redirects=True)
    page = client.get(f"{hub.url}/hub/oauth_login", params={"next": "/hub/spawn"})
    assert 'name="password"' in page.text, (page.status_code, page.text[:300])
    action = re.search(r'<form[^>]*\baction="([^"]+)"', page.text)
    assert action
    landed = client.post(
        urljoin(str(page.url), action.group(1).replace("&amp;", "&")),
        data={"username": username, "password": password},
    )
    return client, landed


@contextlib.contextmanager
def signed_in(
    hub: RunningHub, username: str, password: str
) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """``hub_sign_in`` whose client is closed at the end of the ``with``."""
    client, page = hub_sign_in(hub, username, password)
    try:
        yield client, page
    finally:
        client.close()
