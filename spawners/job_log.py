"""A server job's log, when the job ended before JupyterLab answered.

The log lies in the user's home, on a path the user controls, so the hub never opens it: it
is read as the user (:func:`~.user_files.read_tail_as_user`), and only the user's own view of
the failure holds its lines; the hub's log gets the path alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from factoryhub.spawners.slurm.client import SlurmError
from factoryhub.spawners.user_files import last_lines, read_tail_as_user


class SlurmJobEnded(RuntimeError):
    """The job ended before JupyterLab answered.

    Its text (which the hub's log gets) names the job's log but holds nothing of it; only the
    user's own view of the failure (JupyterHub's ``jupyterhub_message``) adds the log's last
    lines, read as the user.
    """

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        if tail:
            self.jupyterhub_message = f"{message}\n{tail}"


async def tail_as_user(
    username: str, home: str, path: str, prefix: Sequence[str], lines: int = 15
) -> str:
    """The last ``lines`` of the log at ``path``, read as ``username`` through ``prefix``
    (``runuser``), cleaned for display; or why they could not be read."""
    try:
        data = await read_tail_as_user(username, home, path, prefix=prefix)
    except OSError as e:
        return f"(its last lines could not be read as {username}: {e.strerror})"
    except SlurmError:
        return ""
    return "Its last lines:\n" + last_lines(data, lines)
