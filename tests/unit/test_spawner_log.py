"""A failed server job's log: the hub's log gets only its path; the user's own view of the
failure adds its last lines, read as the user (never by the hub itself)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from factoryhub.spawners.job_log import SlurmJobEnded
from factoryhub.spawners.spawner import FactorySlurmSpawner


def fake_spawner(tmp_path: Path, access: str = "local") -> SimpleNamespace:
    log = tmp_path / "factoryhub-server-ada-7.log"
    as_user = tmp_path / "as-user"  # stands in for runuser: runs the command
    as_user.write_text('#!/bin/sh\nexec "$@"\n')
    as_user.chmod(0o755)
    return SimpleNamespace(
        slurm_access=access,
        user=SimpleNamespace(name="ada"),
        home=lambda: str(tmp_path),
        _log_path=lambda: str(log),
        user_command_prefix=[str(as_user)],
        log=log,
    )


async def test_the_tail_is_read_as_the_user_and_cleaned(tmp_path: Path) -> None:
    spawner = fake_spawner(tmp_path)
    spawner.log.write_bytes(b"".join(b"line %d\n" % i for i in range(30)) + b"\x1b[31mboom\n")
    tail = await FactorySlurmSpawner._log_tail(spawner, lines=3)
    assert tail == "Its last lines:\nline 28\nline 29\n\ufffd[31mboom"


async def test_an_unreadable_log_is_said_so(tmp_path: Path) -> None:
    spawner = fake_spawner(tmp_path)
    spawner.log.symlink_to("/dev/zero")
    tail = await FactorySlurmSpawner._log_tail(spawner)
    assert tail == "(its last lines could not be read as ada: ada cannot read it)"


async def test_no_tail_where_the_hub_cannot_act_as_users(tmp_path: Path) -> None:
    spawner = fake_spawner(tmp_path, access="rest")
    spawner.log.write_text("secret-looking text\n")
    assert await FactorySlurmSpawner._log_tail(spawner) == ""


def test_the_error_text_holds_no_log_content() -> None:
    error = SlurmJobEnded("Job 7 ended (failed). Its log on the cluster: /h/x.log", "Its last…")
    assert "Its last" not in str(error)
    assert error.jupyterhub_message.endswith("Its last…")
    assert not hasattr(SlurmJobEnded("Job 7 ended"), "jupyterhub_message")
