"""Course materials: delivered into the participant's home and merged like nbgitpuller (new
files arrive, untouched files update, the participant's edits stay); a git mirror to read from."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryhub.spawners.courses import materials
from factoryhub.spawners.courses.materials import (
    STATE_FILE,
    MaterialsError,
    SyncReport,
    mirror_git,
    sync_materials,
)

NOTHING = {"added": [], "updated": [], "restored": [], "kept": [], "skipped": []}


@pytest.fixture(autouse=True)
def _plain_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git configuration (signing, hooks, default branch) in the tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def report_of(**lists: list[str]) -> dict[str, list[str]]:
    return NOTHING | lists


def state(home: Path) -> dict:
    return json.loads((home / STATE_FILE).read_text())


@pytest.fixture
def course(tmp_path: Path) -> tuple[Path, Path]:
    """A source with two files, already delivered once into an empty home."""
    source, home = tmp_path / "course", tmp_path / "home" / "course"
    write(source, "intro.ipynb", "intro v1")
    write(source, "lab/exercise.py", "exercise v1")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(added=["intro.ipynb", "lab/exercise.py"])
    return source, home


def test_first_sync_adds_everything_and_records_it(tmp_path: Path) -> None:
    source, home = tmp_path / "course", tmp_path / "home" / "course"
    write(source, "intro.ipynb", "intro")
    write(source, "lab/data/seed.csv", "a,b\n1,2\n")
    for ignored in (".git/config", "__pycache__/x.pyc", "lab/.ipynb_checkpoints/a.ipynb"):
        write(source, ignored, "not course material")
    write(source, STATE_FILE, "{}")  # a source's own state file is never delivered
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(added=["intro.ipynb", "lab/data/seed.csv"])
    assert report.summary() == "2 new"
    assert (home / "lab/data/seed.csv").read_text() == "a,b\n1,2\n"
    assert not (home / ".git").exists() and not (home / "__pycache__").exists()
    recorded = state(home)
    assert recorded["files"] == {
        "intro.ipynb": hashlib.sha256(b"intro").hexdigest(),
        "lab/data/seed.csv": hashlib.sha256(b"a,b\n1,2\n").hexdigest(),
    }
    assert recorded["synced_at"] and recorded["source"] == str(source)
    assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []


def test_update_merges_like_nbgitpuller(course: tuple[Path, Path]) -> None:
    source, home = course
    (home / "intro.ipynb").write_text("my notes")  # the participant's edit
    write(home, "lab/answers.py", "my answers")  # the participant's own file
    write(home, "lab/same.txt", "same")  # their own, identical to what the course adds
    write(source, "intro.ipynb", "intro v2")
    write(source, "lab/exercise.py", "exercise v2")
    write(source, "lab/answers.py", "the course's answers")
    write(source, "lab/same.txt", "same")
    write(source, "lab/new.ipynb", "new")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(
        added=["lab/new.ipynb"],
        updated=["lab/exercise.py"],
        kept=["intro.ipynb", "lab/answers.py"],
    )
    assert report.summary() == "1 new, 1 updated, 2 kept (your edits)"
    assert (home / "intro.ipynb").read_text() == "my notes"
    assert (home / "lab/answers.py").read_text() == "my answers"
    assert (home / "lab/exercise.py").read_text() == "exercise v2"
    # The identical file counts as delivered: a later version of it updates it.
    write(source, "lab/same.txt", "same v2")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(
        updated=["lab/same.txt"], kept=["intro.ipynb", "lab/answers.py"]
    )
    assert (home / "intro.ipynb").read_text() == "my notes"


def test_deleted_file_is_restored_and_upstream_removal_deletes_nothing(
    course: tuple[Path, Path],
) -> None:
    source, home = course
    (home / "intro.ipynb").unlink()
    (source / "lab/exercise.py").unlink()
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(restored=["intro.ipynb"])
    assert report.summary() == "1 restored"
    assert (home / "intro.ipynb").read_text() == "intro v1"
    assert (home / "lab/exercise.py").read_text() == "exercise v1"
    assert "lab/exercise.py" in state(home)["files"]


def test_second_run_reports_nothing(course: tuple[Path, Path]) -> None:
    source, home = course
    before = state(home)["files"]
    report = sync_materials(source, home)
    assert report.to_dict() == NOTHING and report.summary() == "up to date"
    assert state(home)["files"] == before


def test_symlinks_in_the_target_are_never_written_through(
    course: tuple[Path, Path], tmp_path: Path
) -> None:
    source, home = course
    outside = tmp_path / "elsewhere"
    secret = write(outside, "secret.txt", "not yours")
    (home / "intro.ipynb").unlink()
    (home / "intro.ipynb").symlink_to(secret)  # a file that is a symlink
    (home / "new.txt").symlink_to(outside / "created.txt")  # a dangling one
    write(source, "new.txt", "new")
    (home / "lab/exercise.py").unlink()
    (home / "lab").rmdir()
    (home / "lab").symlink_to(outside, target_is_directory=True)  # a parent directory
    write(source, "lab/exercise.py", "exercise v2")
    write(source, "lab/deeper/more.py", "more")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(
        skipped=["intro.ipynb", "lab/deeper/more.py", "lab/exercise.py", "new.txt"]
    )
    assert report.summary() == "4 skipped"
    assert secret.read_text() == "not yours"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (home / "intro.ipynb").is_symlink() and (home / "lab").is_symlink()


def test_symlinks_and_special_files_in_the_source_are_skipped(tmp_path: Path) -> None:
    source, home = tmp_path / "course", tmp_path / "home"
    secret = write(tmp_path / "private", "key", "secret")
    write(source, "real.txt", "real")
    (source / "link.txt").symlink_to(secret)
    (source / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    os.mkfifo(source / "pipe")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(
        added=["real.txt"], skipped=["link.txt", "linked-dir", "pipe"]
    )
    assert sorted(p.name for p in home.iterdir()) == [STATE_FILE, "real.txt"]


def test_executable_bit_is_kept_other_files_get_normal_permissions(tmp_path: Path) -> None:
    source, home = tmp_path / "course", tmp_path / "home"
    write(source, "run.sh", "#!/bin/sh\n").chmod(0o700)
    write(source, "notes.md", "notes").chmod(0o600)
    with umask(0o022):
        sync_materials(source, home)
    assert stat.S_IMODE((home / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((home / "notes.md").stat().st_mode) == 0o644
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def test_too_large_files_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(materials, "MAX_FILE_BYTES", 10)
    source, home = tmp_path / "course", tmp_path / "home"
    write(source, "small.txt", "small")
    write(source, "big.bin", "x" * 11)
    assert sync_materials(source, home).to_dict() == report_of(
        added=["small.txt"], skipped=["big.bin"]
    )
    assert not (home / "big.bin").exists()


def test_a_damaged_state_file_keeps_every_file_and_is_rewritten(course: tuple[Path, Path]) -> None:
    source, home = course
    (home / STATE_FILE).write_text("{not json")
    write(source, "intro.ipynb", "intro v2")
    report = sync_materials(source, home)
    assert report.to_dict() == report_of(kept=["intro.ipynb"])  # no record: edits are assumed
    assert (home / "intro.ipynb").read_text() == "intro v1"
    assert set(state(home)["files"]) == {"lab/exercise.py"}


def test_a_missing_source_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(MaterialsError, match=r"course materials at .*/nowhere"):
        sync_materials(tmp_path / "nowhere", tmp_path / "home")


def test_report_helpers_and_command_line(
    course: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    report = SyncReport(added=["b", "a"], kept=["c"], skipped=["d"])
    assert report.to_dict()["added"] == ["a", "b"]
    assert report.summary() == "2 new, 1 kept (your edits), 1 skipped"
    source, home = course
    write(source, "extra.txt", "extra")
    assert materials.main(["sync", str(source), str(home)]) == 0
    assert json.loads(capsys.readouterr().out) == report_of(added=["extra.txt"])
    assert materials.main(["sync", str(source / "missing"), str(home)]) == 1
    assert "missing" in capsys.readouterr().err


# --- the git mirror -----------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Course", "-c", "user.email=course@example.org", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit(origin: Path, files: dict[str, str], message: str = "update") -> str:
    for relative, text in files.items():
        write(origin, relative, text)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", message)
    return git(origin, "rev-parse", "HEAD").strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    return origin


def test_mirror_clones_then_fetches_new_commits(origin: Path, tmp_path: Path) -> None:
    first = commit(origin, {"intro.ipynb": "v1"})
    dest = tmp_path / "mirror" / "course"
    assert mirror_git(str(origin), dest) == first
    assert (dest / "intro.ipynb").read_text() == "v1"
    (dest / "intro.ipynb").write_text("local change")  # both undone by the next mirror
    write(dest, "stray/file.txt", "stray")
    second = commit(origin, {"intro.ipynb": "v2", "lab/new.py": "new"})
    assert mirror_git(f"file://{origin}", dest) == second  # the URL may change its spelling
    assert (dest / "intro.ipynb").read_text() == "v2"
    assert (dest / "lab/new.py").read_text() == "new"
    assert not (dest / "stray").exists()
    # What the mirror holds is what participants receive (without .git).
    report = sync_materials(dest, tmp_path / "home")
    assert report.added == ["intro.ipynb", "lab/new.py"]


def test_mirror_checks_out_a_tag_a_branch_or_a_commit(origin: Path, tmp_path: Path) -> None:
    first = commit(origin, {"intro.ipynb": "v1"})
    git(origin, "tag", "v1")
    second = commit(origin, {"intro.ipynb": "v2"})
    git(origin, "branch", "next")
    third = commit(origin, {"intro.ipynb": "v3"})
    dest = tmp_path / "mirror"
    assert mirror_git(str(origin), dest, ref="v1") == first
    assert (dest / "intro.ipynb").read_text() == "v1"
    assert mirror_git(str(origin), dest, ref="next") == second
    assert mirror_git(str(origin), dest, ref=first[:12]) == first
    assert mirror_git(str(origin), dest) == third
    with pytest.raises(MaterialsError, match="no-such-branch is not a branch, tag or commit"):
        mirror_git(str(origin), dest, ref="no-such-branch")


def test_mirror_of_a_bad_url_says_what_git_said(tmp_path: Path) -> None:
    with pytest.raises(MaterialsError, match=r"git clone failed: .*does not exist"):
        mirror_git(str(tmp_path / "no-such-repo"), tmp_path / "mirror")


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("--upload-pack=touch /tmp/pwned", ""),
        ("-u", ""),
        ("ext::sh -c touch% /tmp/pwned", ""),
        ("https://example.org/repo\n", ""),
        ("/srv/course", "--orphan"),
        ("/srv/course", "main\x00"),
    ],
)
def test_mirror_refuses_option_like_or_control_arguments(
    url: str, ref: str, tmp_path: Path
) -> None:
    with pytest.raises(MaterialsError, match="refusing the git"):
        mirror_git(url, tmp_path / "mirror", ref=ref)
    assert not (tmp_path / "mirror").exists()


def test_the_checkout_is_world_readable(origin: Path, tmp_path: Path) -> None:
    commit(origin, {"lab/data/seed.csv": "a,b", "run.sh": "#!/bin/sh\n"})
    git(origin, "update-index", "--chmod=+x", "run.sh")
    git(origin, "commit", "-q", "-m", "executable")
    dest = tmp_path / "mirror"
    with umask(0o077):  # a root service's strict umask
        mirror_git(str(origin), dest)
    for path in [dest, dest / "lab", dest / "lab/data"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o055 == 0o055, path
    assert stat.S_IMODE((dest / "lab/data/seed.csv").stat().st_mode) & 0o044 == 0o044
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) & 0o055 == 0o055


def test_a_git_call_past_its_time_limit_ends_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git that leaves a child behind (a background sleep holding its output) is ended
    with that child at the time limit, and the call returns then, not when the child ends."""
    pid_file = tmp_path / "child.pid"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\nsleep 30 & echo $! > {pid_file}; wait\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    begun = time.monotonic()
    with pytest.raises(MaterialsError, match="took over 1 s"):
        materials._git(["fetch"], None, 1.0)
    assert time.monotonic() - begun < 10, "the call waited for the child"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z":
                break  # killed, waiting for init to reap it
        time.sleep(0.05)
    else:
        raise AssertionError("the child outlived the time limit")
