"""``factoryhub-singleuser``: starts JupyterLab inside the Slurm job.

Runs on the compute node as the user. It picks the address the hub reaches this
node by (the local end of a route towards the hub's API) and a free port there, so
the server listens only where the hub needs it, not on every interface. It then
runs ``jupyterhub-singleuser`` in this process with the ``server_ready`` extension,
which tells the hub the address once the server is listening. Before that it writes the
job's Dask configuration (see ``dask_setup``), copies new template notebooks into the
user's home (``user_files``) and, on a course server, merges the course's materials into the
course folder (``materials``).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from factoryhub.spawners.courses.servers import COURSE_FOLDER_VAR, COURSE_MATERIALS_VAR
from factoryhub.spawners.dask_setup import config_dir, write_dask_config
from factoryhub.spawners.user_files import copy_templates

READY_EXTENSION = "factoryhub.spawners.singleuser.ready"

# Optional imports the user server does without. jsonschema imports rfc3987_syntax, when
# installed, only to check the "iri" formats, which no Jupyter event schema uses; building
# its grammar takes ~0.9 s of every server start on a 2-core node. jsonschema treats the
# module as optional (an ImportError skips those two checks), and kernels are separate
# processes, so notebooks still have it.
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def address_towards(host: str, port: int) -> str:
    """The local IP address used to reach ``host`` (no packet is sent)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return probe.getsockname()[0]


def free_port(ip: str) -> int:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def sync_course_materials(environ: dict[str, str] | os._Environ[str]) -> None:
    """A course server brings its course's materials into the participant's home (new and
    untouched files; the participant's edits stay). Never keeps the server from starting."""
    source, target = environ.get(COURSE_MATERIALS_VAR), environ.get(COURSE_FOLDER_VAR)
    if not source or not target:
        return
    from factoryhub.spawners.courses.materials import MaterialsError, sync_materials

    try:
        report = sync_materials(Path(source), Path(target))
    except (OSError, MaterialsError) as e:
        print(f"factoryhub: could not bring the course materials to {target}: {e}", file=sys.stderr)
        return
    print(f"factoryhub: course materials in {target}: {report.summary()}", file=sys.stderr)


def prepare_dask(environ: os._Environ[str], ip: str) -> None:
    """``SLURMCluster()`` with no arguments, in the server and in its kernels: the job's Dask
    configuration and TLS credentials, and ``DASK_CONFIG`` pointing there. Making the
    credentials imports dask, which takes its list of folders from ``DASK_CONFIG`` once, at
    import: so that is set first, and dask's configuration is read again once the files are
    written (dask-labextension imports dask in this process later anyway)."""
    folder = config_dir(environ)
    if folder is None:
        return
    environ["DASK_CONFIG"] = str(folder)
    if write_dask_config(environ, ip=ip) is None:
        del environ["DASK_CONFIG"]
    dask_config = sys.modules.get("dask.config")
    if dask_config is not None:  # imported before the files were there: read them now
        dask_config.refresh()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    api = urlparse(os.environ["JUPYTERHUB_API_URL"])
    ip = address_towards(api.hostname or "127.0.0.1", api.port or 80)
    port = free_port(ip)
    host = f"[{ip}]" if ":" in ip else ip
    service = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    os.environ["JUPYTERHUB_SERVICE_URL"] = urlunparse(service._replace(netloc=f"{host}:{port}"))
    try:
        copy_templates(Path(os.environ.get("HOME") or Path.home()))
    except OSError as e:  # a full or read-only home must not keep the server from starting
        print(f"factoryhub: could not copy the template notebooks: {e}", file=sys.stderr)
    sync_course_materials(os.environ)
    prepare_dask(os.environ, ip)

    for name in SKIPPED_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # import → ImportError

    from jupyterhub.singleuser import main as singleuser_main

    sys.argv = [
        "jupyterhub-singleuser",
        "--ServerApp.jpserver_extensions",
        f"{READY_EXTENSION}=True",
        *args,
    ]
    singleuser_main()


if __name__ == "__main__":
    main()
