"""The Slurm package's contract: both clients are :class:`SlurmClient`s (same methods, same
signatures), the sans-IO commands build the argv and read the answers every runner shares,
the synchronous runner, the one poller factory, and the package's dependency direction."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
from datetime import datetime
from pathlib import Path

import pytest

from factoryhub.spawners.slurm import blocking, commands, poller
from factoryhub.spawners.slurm.access import make_client
from factoryhub.spawners.slurm.client import (
    CommandResult,
    SlurmClient,
    SlurmError,
    SlurmUnavailable,
)
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.slurm.poller import PollerSettings, poller_for
from factoryhub.spawners.slurm.rest import RestSlurmClient

REPO = Path(__file__).resolve().parents[2]
SLURM_PACKAGE = REPO / "spawners" / "slurm"

# Checked by a type checker too: both clients can stand where a SlurmClient is asked for.
_LOCAL: SlurmClient = LocalSlurmClient()
_REST: SlurmClient = RestSlurmClient("http://slurmrestd:6820", "/nonexistent/key")


def _protocol_methods() -> list[str]:
    return [
        name
        for name, value in vars(SlurmClient).items()
        if callable(value) and not name.startswith("_")
    ]


@pytest.mark.parametrize("client", [_LOCAL, _REST], ids=["local", "rest"])
def test_both_clients_are_slurm_clients_with_the_protocols_signatures(client: object) -> None:
    assert isinstance(client, SlurmClient)
    methods = _protocol_methods()
    assert {"submit", "query", "jobs_named", "cancel", "accounted_state", "show", "home"} <= set(
        methods
    )
    for name in methods:
        declared = inspect.signature(getattr(SlurmClient, name))
        actual = inspect.signature(getattr(type(client), name))
        assert list(actual.parameters) == list(declared.parameters), name
        assert inspect.iscoroutinefunction(getattr(type(client), name)) == (
            inspect.iscoroutinefunction(getattr(SlurmClient, name))
        ), name


def test_no_client_runs_arbitrary_commands_as_a_user() -> None:
    for client in (LocalSlurmClient, RestSlurmClient):
        assert not hasattr(client, "run_as")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module)
    return found


def test_the_slurm_package_depends_on_nothing_of_the_spawner_but_the_model_and_user_env() -> None:
    allowed = (
        "factoryhub.spawners.slurm",
        "factoryhub.spawners.model",
        "factoryhub.spawners.user_env",
    )
    wrong = {
        f"{path.name}: {module}"
        for path in sorted(SLURM_PACKAGE.glob("*.py"))
        for module in _imports(path)
        if module.startswith("factoryhub")
        and not any(module == a or module.startswith(f"{a}.") for a in allowed)
    }
    assert not wrong, wrong


def _command_lines(path: Path) -> list[list[str]]:
    """The list and tuple literals of ``path`` that start with a string (argv, mostly)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.List, ast.Tuple)) or not node.elts:
            continue
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append([str(e.value) for e in node.elts if isinstance(e, ast.Constant)])
    return found


def test_no_slurm_text_is_read() -> None:
    """squeue, sacct and sinfo run with --json everywhere; scontrol shows (reservations:
    no JSON in 22.05) only in the commands module."""
    folders = ("spawners", "helpers", "hub", "local", "tests/integration")
    offenders = []
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for argv in _command_lines(path):
                name = argv[0]
                if name in ("squeue", "sacct", "sinfo") and "--json" not in argv:
                    offenders.append(f"{path.relative_to(REPO)}: {argv}")
                elif name == "scontrol" and "show" in argv and path.name != "commands.py":
                    offenders.append(f"{path.relative_to(REPO)}: {argv}")
    assert not offenders, offenders


# ------------------------------------------------------------------ commands


def _result(returncode: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(returncode, stdout, stderr)


def test_the_commands_argv() -> None:
    assert commands.jobs().argv == ("squeue", "--json", "--states=all")
    assert commands.queue().argv == commands.jobs().argv
    assert commands.submit("#!/bin/sh\n", ["--wrap=x"]).argv == ("sbatch", "--parsable", "--wrap=x")
    assert commands.submit("#!/bin/sh\n").input == "#!/bin/sh\n"
    assert commands.cancel("12").argv == ("scancel", "12")
    assert commands.cancel("12_3").argv == ("scancel", "12_3")
    assert commands.final_state("12").argv == ("sacct", "--json", "--jobs=12")
    assert commands.nodes().argv == ("sinfo", "--json")
    assert commands.reservations("course").argv[-2:] == ("reservation", "course")
    usage = commands.usage(datetime(2026, 11, 1), datetime(2026, 11, 2), ["a"]).argv
    assert usage[:4] == ("sacct", "--json", "--allusers", "--allocations")
    assert usage[-1] == "--accounts=a"
    for bad in ("", "12;rm", "-1", "1 2", "abc"):
        with pytest.raises(ValueError):
            commands.cancel(bad)
    with pytest.raises(ValueError):
        commands.final_state("--all")
    with pytest.raises(ValueError):
        commands.reservations("--all")


def test_the_submission_answer() -> None:
    read = commands.submit("").read
    assert read(_result(stdout="42\n")) == "42"
    assert read(_result(stdout="Submitted\n43;cluster\n")) == "43"
    with pytest.raises(SlurmError, match="without a job id"):
        read(_result(stdout="\n"))
    with pytest.raises(SlurmError, match="Invalid account"):
        read(_result(1, stderr="sbatch: error: Invalid account or account/partition"))
    with pytest.raises(SlurmUnavailable):
        read(_result(1, stderr="sbatch: error: Unable to contact slurm controller"))


def test_cancelling_a_job_already_gone_is_no_error() -> None:
    read = commands.cancel("9").read
    assert read(_result(1, stderr="scancel: error: Invalid job id specified")) is None
    with pytest.raises(SlurmError):
        read(_result(1, stderr="scancel: error: Access/permission denied"))


def test_queue_answers_are_read_by_the_one_json_parser() -> None:
    job = {"job_id": 5, "job_state": "RUNNING", "name": "n", "user_name": "u", "resv_name": "r",
           "cpus": 2, "memory_per_node": 1024}  # fmt: skip
    answer = _result(stdout=json.dumps({"meta": {}, "errors": [], "jobs": [job]}))
    assert [j.job_id for j in commands.jobs().read(answer)] == ["5"]
    assert commands.job_state("5").read(answer) == "RUNNING"
    assert commands.job_state("6").read(answer) == ""
    assert commands.reservation_jobs_of("r").read(answer) == [("RUNNING", 2, "1024M")]
    with pytest.raises(SlurmUnavailable):
        commands.jobs().read(_result(stdout='{"jobs": [{"job_id": 5'))


def test_reservations_are_read_from_scontrol_and_none_is_no_error() -> None:
    read = commands.reservations("r").read
    line = "ReservationName=r StartTime=2026-11-23T09:00:00 Nodes=vm CoreCnt=4 State=ACTIVE"
    assert read(_result(stdout=line + "\n")) == [
        {"ReservationName": "r", "StartTime": "2026-11-23T09:00:00", "Nodes": "vm",
         "CoreCnt": "4", "State": "ACTIVE"}
    ]  # fmt: skip
    assert read(_result(1, stdout="Reservation r not found\n")) == []
    assert read(_result(stdout="No reservations in the system\n")) == []


def test_the_blocking_runner(tmp_path: Path) -> None:
    echo = commands.Command(("sh", "-c", "cat; echo 7"), "echo", lambda r: r.stdout, "6\n")
    assert blocking.run(echo) == "6\n7\n"
    env = commands.Command(("sh", "-c", "echo $X"), "env", lambda r: r.stdout.strip())
    assert blocking.run(env, env={"X": "only", "PATH": "/usr/bin:/bin"}) == "only"
    with pytest.raises(SlurmUnavailable, match="not installed"):
        blocking.run(commands.Command((str(tmp_path / "nothing"),), "x", lambda r: r))
    slow = commands.Command(("sleep", "5"), "slow", lambda r: r)
    with pytest.raises(SlurmUnavailable, match="did not answer"):
        blocking.run(slow, timeout=0.2)


# ------------------------------------------------------------------ the one poller factory


class SpawnerSettings:
    """Stands for a spawner: the traits PollerSettings reads."""

    hub_tag = "factoryhub:contract-test"
    job_name_prefix = "factoryhub"
    slurm_poll_interval = 3600.0
    orphan_grace = 3600.0
    slurm_access = "local"
    slurm_rest: dict[str, str] = {}
    user_command_prefix = ["sudo", "-u", "{username}"]
    slurm_command_timeout = 7.0


async def test_one_poller_per_hub_built_from_the_spawners_settings() -> None:
    settings = PollerSettings.of(SpawnerSettings())
    try:
        first = poller_for(settings)
        assert poller_for(settings, slurm=_REST) is first  # the first one made stays
        assert first.tag == settings.hub_tag and first.name_prefix == "factoryhub-"
        assert first.interval == 3600.0 and first.orphan_grace == 3600.0
        client = first.slurm
        assert isinstance(client, LocalSlurmClient)
        # the command prefix and time-out reach the client (the hub's start used to drop them)
        assert client.user_prefix == ("sudo", "-u", "{username}")
        assert client.command_timeout == 7.0
    finally:
        made = poller._pollers.pop(settings.hub_tag)
        assert made._task is not None
        made._task.cancel()
        await asyncio.gather(made._task, return_exceptions=True)


def test_the_settings_make_the_client_of_their_access_mode() -> None:
    settings = PollerSettings.of(SpawnerSettings())
    assert isinstance(settings.client(), type(make_client()))
