"""Running the user's server inside a container image with Apptainer (compute nodes).

A profile may name an image (``profiles[].image``: a SIF file, or a ``docker://``,
``oras://`` or ``library://`` reference). Its server's job then runs::

    apptainer exec [--nv] --bind HOME[,BIND...] IMAGE <python_env>/bin/factoryhub-singleuser ...

``--nv`` (the host's NVIDIA driver libraries) when the server has GPUs; the user's home, the
site's ``spawner.apptainer.binds`` and the read-only extra paths the server needs (a course's
materials) are bound; the entry point is the image's own environment
(``spawner.apptainer.python_env``, where the images in ``images/`` install it). Everything else
of the job (Slurm options, the environment handed over with ``--export``) stays as it is:
Apptainer passes the job's environment into the container.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE = re.compile(r"^(/[!-~]+|(docker|oras|library)://[!-~]+)$")
BIND = re.compile(r"^(/[^:,\s]*)(:(/[^:,\s]*))?(:(ro|rw))?$")


class ApptainerError(ValueError):
    """An image or bind the spawner refuses to put on a command line."""


@dataclass(frozen=True)
class ApptainerSettings:
    command: str = "apptainer"
    binds: tuple[str, ...] = ()
    python_env: str = "/opt/factoryhub/venv"

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> ApptainerSettings:
        data = data or {}
        return cls(
            command=str(data.get("command") or "apptainer"),
            binds=tuple(data.get("binds") or ()),
            python_env=str(data.get("python_env") or "/opt/factoryhub/venv"),
        )

    def to_config(self) -> dict[str, Any]:
        return {"command": self.command, "binds": list(self.binds), "python_env": self.python_env}


def check_bind(spec: str) -> str:
    """``SRC[:DEST][:ro|rw]`` with absolute paths, no commas or spaces."""
    if not BIND.fullmatch(spec):
        raise ApptainerError(
            f"bind {spec!r}: expected /path, /path:/inside or /path:/inside:ro (absolute paths, "
            "no commas or spaces)"
        )
    return spec


def exec_prefix(
    settings: ApptainerSettings,
    image: str,
    home: str,
    gpus: int = 0,
    read_only: Sequence[str] = (),
) -> list[str]:
    """The words before the server's own command: ``apptainer exec ... IMAGE``."""
    if not IMAGE.fullmatch(image):
        raise ApptainerError(
            f"image {image!r}: expected an absolute path to a SIF file or a docker://, oras:// "
            "or library:// reference"
        )
    binds = [check_bind(home), *(check_bind(b) for b in settings.binds)]
    binds += [check_bind(f"{path}:{path}:ro") for path in read_only if path]
    words = [settings.command, "exec"]
    if gpus > 0:
        words.append("--nv")
    words += ["--bind", ",".join(dict.fromkeys(binds)), image]
    return words


def server_command(
    settings: ApptainerSettings,
    image: str,
    home: str,
    args: Sequence[str],
    gpus: int = 0,
    read_only: Sequence[str] = (),
) -> list[str]:
    """The whole command of a server in ``image``."""
    entry = f"{settings.python_env.rstrip('/')}/bin/factoryhub-singleuser"
    return [*exec_prefix(settings, image, home, gpus, read_only), entry, *args]
