"""State and logs are private: the local factory's hub.log, started.json, hub.pid and admin
token, the Reports' and Courses' SQLite stores: 0600 files in 0700 folders, also where an
earlier version left them world-readable."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryhub.hub.reports.store import RunStore
from factoryhub.local import pids, processes
from factoryhub.spawners.courses.store import CourseStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(path: Path) -> None:
    assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
    assert mode(path.parent) == 0o700, f"{path.parent}: {oct(mode(path.parent))}"


@pytest.fixture
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    local = tmp_path / "state" / "local"
    local.mkdir(parents=True, mode=0o755)
    local.chmod(0o755)  # as an earlier version left it
    monkeypatch.setattr(pids, "LOCAL_DIR", local)
    monkeypatch.setattr(pids, "STARTED_FILE", local / "started.json")
    monkeypatch.setattr(processes, "ADMIN_TOKEN_FILE", local / "admin-api-token")
    old = os.umask(0o022)
    yield local
    os.umask(old)


def test_started_json_is_private(local_dir: Path) -> None:
    pids.record_started("hub", 1234)
    assert_private(local_dir / "started.json")
    assert pids.load_started() == {"hub": 1234}
    assert not list(local_dir.glob("*.tmp")) and not list(local_dir.glob(".*.tmp"))


def test_hub_log_is_private_even_when_it_was_not(local_dir: Path) -> None:
    log = local_dir / "hub.log"
    log.write_text("old lines\n")
    log.chmod(0o644)  # as an earlier version left it
    fd = pids.open_private_log(log)
    os.write(fd, b"new line\n")
    os.close(fd)
    assert_private(log)
    assert log.read_text() == "old lines\nnew line\n"


def test_pid_file_and_admin_token_are_private(local_dir: Path) -> None:
    pids.write_private(local_dir / "hub.pid", "42\n")
    assert_private(local_dir / "hub.pid")
    assert pids.read_pidfile(local_dir / "hub.pid") == 42
    assert_private(processes.ensure_admin_token())


def test_a_link_at_the_log_is_not_followed(local_dir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (local_dir / "hub.log").symlink_to(victim)
    with pytest.raises(OSError):
        pids.open_private_log(local_dir / "hub.log")
    assert victim.read_text() == "keep"


def test_reports_store_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "hub" / "reports"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    old = os.umask(0o022)
    try:
        store = RunStore(folder / "runs.sqlite")
        store.add_run("usage", "ada", {}, project="p", account="a")
    finally:
        os.umask(old)
    assert_private(folder / "runs.sqlite")


def test_course_store_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = CourseStore(tmp_path / "hub" / "courses" / "courses.sqlite")
        store.save_edits("intro", {"description": "x"}, "trainer")
    finally:
        os.umask(old)
    assert_private(tmp_path / "hub" / "courses" / "courses.sqlite")
