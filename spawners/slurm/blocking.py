"""Slurm's commands run synchronously, as whoever runs this process.

For code that runs as the user inside their job (``factoryhub.helpers``: notebooks list,
submit and cancel their own jobs), for the local factory's tools (root, on the machine that
runs Slurm) and for tests. The commands and the reading of their answers are
:mod:`~.commands`', the same ones the hub's asynchronous clients use.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import TypeVar

from factoryhub.spawners.slurm.client import CommandResult, SlurmUnavailable
from factoryhub.spawners.slurm.commands import Command

__all__ = ["TIMEOUT_S", "run", "run_argv"]

T = TypeVar("T")
TIMEOUT_S = 30.0


def run_argv(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> CommandResult:
    """Run ``argv`` (``env``: None inherits this process's environment).
    :class:`SlurmUnavailable` when the program is missing or does not answer in time."""
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise SlurmUnavailable(f"{argv[0]} is not installed here") from e
    except subprocess.TimeoutExpired as e:
        raise SlurmUnavailable(f"{argv[0]} did not answer within {timeout:g} s") from e
    return CommandResult(done.returncode, done.stdout, done.stderr)


def run(
    command: Command[T], *, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S
) -> T:
    """Run ``command``; its answer (or :class:`SlurmUnavailable` / ``SlurmError``)."""
    return command.read(run_argv(command.argv, input=command.input, env=env, timeout=timeout))
