"""The safe file module: root never follows a path a user controls; template notebooks land
in the user's home and the user's edits are never overwritten."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import pytest

from factoryhub.spawners import user_files
from factoryhub.spawners.user_files import (
    UnsafePath,
    UserFileError,
    copy_new_files,
    open_dir,
    read_tail_as_user,
    read_user_file,
    read_user_file_async,
    write_new,
)

ME = os.geteuid()


def user_folder(path: Path) -> Path:
    """A folder someone else may change (mode 0777): nothing in it is followed."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def test_a_regular_file_of_its_owner_is_read(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "log.txt").write_bytes(b"line 1\nline 2\n")
    assert read_user_file(home / "log.txt", ME) == b"line 1\nline 2\n"


def test_a_symlink_to_a_secret_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the operator's token")
    secret.chmod(0o600)
    home = user_folder(tmp_path / "home")
    (home / "job.log").symlink_to(secret)
    with pytest.raises(UnsafePath, match="symbolic link"):
        read_user_file(home / "job.log", None)


def test_a_directory_component_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "job.log").write_text("not the user's")
    home = user_folder(tmp_path / "home")
    (home / "logs").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="folder a user controls"):
        read_user_file(home / "logs" / "job.log", ME)
    # the same link made by root in a folder only root may change: the operator's own
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o755)
    (trusted / "logs").symlink_to(elsewhere)
    assert read_user_file(trusted / "logs" / "job.log", ME) == b"not the user's"


def test_a_link_followed_in_a_trusted_folder_cannot_lead_through_a_user_link(
    tmp_path: Path,
) -> None:
    home = user_folder(tmp_path / "home")
    (home / "logs").symlink_to("/etc")
    trusted = tmp_path / "trusted"
    trusted.mkdir(mode=0o755)
    (trusted / "home").symlink_to(home)
    with pytest.raises(UnsafePath):
        read_user_file(trusted / "home" / "logs" / "hostname", None)


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    os.mkfifo(home / "job.log")
    begun = time.monotonic()
    with pytest.raises(UnsafePath, match="not a regular file"):
        read_user_file(home / "job.log", ME)
    assert time.monotonic() - begun < 1


def test_dev_zero_is_refused_as_root_and_as_the_user(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "job.log").symlink_to("/dev/zero")
    with pytest.raises(UnsafePath):
        read_user_file(home / "job.log", None)
    with pytest.raises(UnsafePath, match="not a regular file"):
        read_user_file("/dev/zero", None)
    begun = time.monotonic()
    with pytest.raises(UserFileError, match="cannot read it"):
        asyncio.run(read_tail_as_user("me", str(home), str(home / "job.log"), prefix=()))
    assert time.monotonic() - begun < 1


def test_reading_as_the_user_is_capped(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "job.log").write_bytes(b"x" * 100_000 + b"the end\n")
    data = asyncio.run(
        read_tail_as_user("me", str(home), str(home / "job.log"), max_bytes=4096, prefix=())
    )
    assert len(data) == 4096 and data.endswith(b"the end\n")


def test_a_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "job.log").write_text("hard link to somebody else's file")
    with pytest.raises(UnsafePath, match="not a file of its user"):
        read_user_file(home / "job.log", ME + 1)


def test_size_cap(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "big.log").write_bytes(b"a" * 5000 + b"the end")
    with pytest.raises(UnsafePath, match="larger than 1000 bytes"):
        read_user_file(home / "big.log", ME, max_bytes=1000)
    tail = read_user_file(home / "big.log", ME, max_bytes=1000, tail=True)
    assert len(tail) == 1000 and tail.endswith(b"the end")


def test_reads_run_in_a_thread(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    (home / "out.html").write_text("<p>ok</p>")

    async def both() -> tuple[bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        data = await read_user_file_async(home / "out.html", ME)
        task.cancel()
        return data, ticks

    data, ticks = asyncio.run(both())
    assert data == b"<p>ok</p>" and ticks > 0


def test_reading_as_the_user_is_refused_on_a_fifo_and_times_out(tmp_path: Path) -> None:
    home = user_folder(tmp_path / "home")
    os.mkfifo(home / "job.log")
    with pytest.raises(UserFileError, match="cannot read it"):
        asyncio.run(read_tail_as_user("me", str(home), str(home / "job.log"), prefix=()))
    slow = tmp_path / "slow"  # stands in for a read that hangs
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    begun = time.monotonic()
    with pytest.raises(UserFileError, match=r"no answer within 0\.5 s"):
        asyncio.run(
            read_tail_as_user("me", str(home), "/etc/hostname", time_limit=0.5, prefix=(str(slow),))
        )
    assert time.monotonic() - begun < 3


def test_reading_as_the_user_gets_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the hub's secret")
    out = tmp_path / "env.txt"
    wrapper = tmp_path / "as-user"  # stands in for runuser: records the environment, runs tail
    wrapper.write_text(f'#!/bin/sh\nenv > {out}\nexec "$@"\n')
    wrapper.chmod(0o755)
    with pytest.raises(UserFileError, match="cannot read it"):
        asyncio.run(read_tail_as_user("ada", "/home/ada", "/nonexistent", prefix=(str(wrapper),)))
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "JUPYTERHUB_API_TOKEN" not in env
    assert env["HOME"] == "/home/ada" and env["USER"] == "ada"
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"


def test_control_characters_are_not_passed_on() -> None:
    assert user_files.last_lines(b"a\x1b[31mred\nb\tc\n", 5) == "a\ufffd[31mred\nb\tc"


def test_writes_never_go_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    home = user_folder(tmp_path / "home")
    (home / "new.txt").symlink_to(victim)
    fd = open_dir(home)
    try:
        assert write_new(fd, "new.txt", io.BytesIO(b"overwritten")) is False
        assert write_new(fd, "other.txt", io.BytesIO(b"fresh")) is True
    finally:
        os.close(fd)
    assert victim.read_text() == "keep"
    assert (home / "other.txt").read_text() == "fresh"


def test_new_files_arrive_and_edits_stay(tmp_path: Path) -> None:
    source, home = tmp_path / "templates", tmp_path / "home"
    (source / "data-prep" / "data").mkdir(parents=True)
    (source / "__pycache__").mkdir()
    (source / "__init__.py").write_text("")
    (source / "__pycache__" / "x.pyc").write_bytes(b"")
    (source / "data-prep" / "a.ipynb").write_text("template v1")
    (source / "data-prep" / "data" / "seed.txt").write_text("seed")
    copied = copy_new_files(source, home)
    assert sorted(p.relative_to(home).as_posix() for p in copied) == [
        "data-prep/a.ipynb",
        "data-prep/data/seed.txt",
    ]
    (home / "data-prep" / "a.ipynb").write_text("my edits")
    (source / "data-prep" / "a.ipynb").write_text("template v2")
    (source / "data-prep" / "b.ipynb").write_text("new template")
    copied = copy_new_files(source, home)
    assert [p.name for p in copied] == ["b.ipynb"]
    assert (home / "data-prep" / "a.ipynb").read_text() == "my edits"


def test_templates_are_not_copied_through_a_foreign_link(tmp_path: Path) -> None:
    source = tmp_path / "templates"
    (source / "training").mkdir(parents=True)
    (source / "training" / "t.ipynb").write_text("template")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = user_folder(tmp_path / "home")
    (home / "training").symlink_to(elsewhere)
    with pytest.raises(UnsafePath):
        copy_new_files(source, home)
    assert not any(elsewhere.iterdir())
