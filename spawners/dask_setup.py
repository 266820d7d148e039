"""Dask's own configuration for a user's server: ``SLURMCluster()`` with no arguments.

The hub decides (from the site file and the user's project) what worker jobs look like
and hands that to the job as ``FACTORYHUB_DASK`` (JSON). Inside the job,
``factoryhub-singleuser`` fills in what only the job knows (its id, the user's home, the
network interface) and writes ``jobqueue.yaml``, ``distributed.yaml`` and
``labextension.yaml`` into a directory of its own, then points ``DASK_CONFIG`` at it.
Dask reads that directory after the system's and the user's files, so these settings win
over a stale ``~/.config/dask``; arguments to ``SLURMCluster(...)`` and ``DASK_*``
environment variables still override them.

Worker jobs carry ``--comment=<hub tag>/dask-of/<server job id>``: the hub's shared poller
cancels them as soon as that server job has ended, whatever ended it.

Clusters are private: each server job makes its own temporary credentials
(``distributed.security.Security.temporary()``: a self-signed key and certificate, also the
only CA) and writes them, 0600 in the 0700 configuration folder, beside the YAML. Dask's own
TLS keys (``distributed.comm.tls.*``) point every role at them, the scheduler listens on
``tls://`` (``scheduler-options``) and worker jobs get the paths (never the key) on their
command line (``worker-extra-args``). Scheduler, workers and clients verify each other
against that one certificate, so only processes that can read the user's file can connect.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factoryhub.spawners import user_files
from factoryhub.spawners.slurm.comments import dask_comment

ENV_VAR = "FACTORYHUB_DASK"
CERT_FILE, KEY_FILE = "tls-cert.pem", "tls-key.pem"
DASHBOARD_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"


def dask_payload(
    settings: Mapping[str, Any] | None,
    *,
    account: str,
    job_name: str,
    hub_tag: str,
    python: str,
) -> dict[str, Any] | None:
    """What the hub hands the server job (None: no Dask configuration for this profile).
    ``settings`` are the site file's resolved worker settings for the server's profile."""
    if not settings:
        return None
    return {
        "partition": settings["partition"],
        "cores": int(settings["cores"]),
        "memory_gb": float(settings["memory_gb"]),
        "processes": int(settings["processes"]),
        "walltime": str(settings["walltime"]),
        "interface": str(settings.get("interface", "")),
        "death_timeout": int(settings.get("death_timeout", 60)),
        "account": account,
        "job_name": job_name,
        "hub_tag": hub_tag,
        "python": python,
    }


def _memory(gb: float) -> str:
    """dask-jobqueue's memory string; whole GiB when it can, MiB otherwise."""
    mib = round(gb * 1024)
    return f"{mib // 1024}GiB" if mib % 1024 == 0 else f"{mib}MiB"


def tls_paths(folder: str) -> tuple[str, str]:
    """The server job's certificate and key, in its configuration folder."""
    return f"{folder}/{CERT_FILE}", f"{folder}/{KEY_FILE}"


def tls_config(folder: str) -> dict[str, Any]:
    """``distributed.comm.tls``: the one temporary certificate is the CA and every role's."""
    cert, key = tls_paths(folder)
    return {
        "ca-file": cert,
        **{role: {"cert": cert, "key": key} for role in ("scheduler", "worker", "client")},
    }


def worker_tls_args(folder: str) -> list[str]:
    """What a worker job's ``dask worker`` gets: paths only, never the key itself."""
    cert, key = tls_paths(folder)
    return ["--protocol", "tls://", "--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]


def temporary_credentials() -> dict[str, str]:
    """A fresh key and self-signed certificate (PEM) by file name, from ``distributed``."""
    from distributed.security import Security

    security = Security.temporary()
    return {CERT_FILE: security.tls_scheduler_cert, KEY_FILE: security.tls_scheduler_key}


def dask_config(
    payload: Mapping[str, Any], *, job_id: str, home: str, interface: str, folder: str
) -> dict[str, dict[str, Any]]:
    """The three YAML documents (by file name) for a server job whose configuration folder
    (holding its TLS credentials) is ``folder``."""
    slurm: dict[str, Any] = {
        "name": payload["job_name"],
        "cores": payload["cores"],
        "memory": _memory(payload["memory_gb"]),
        "processes": payload["processes"],
        "queue": payload["partition"],
        "walltime": payload["walltime"],
        "interface": payload.get("interface") or interface,
        "death-timeout": payload["death_timeout"],
        "python": payload["python"],
        "log-directory": f"{home}/.factoryhub/dask-logs",
        "job-extra-directives": [f"--comment={dask_comment(payload['hub_tag'], job_id)}"],
        "worker-extra-args": worker_tls_args(folder),
        # The scheduler runs in the user's kernel and speaks TLS only; its dashboard listens
        # on loopback only and is reached through the user's own server (jupyter-server-proxy).
        "scheduler-options": {"dashboard_address": "127.0.0.1:0", "protocol": "tls://"},
    }
    if payload.get("account"):
        slurm["account"] = payload["account"]
    return {
        "jobqueue.yaml": {"jobqueue": {"slurm": slurm}},
        "distributed.yaml": {
            "distributed": {
                "dashboard": {"link": DASHBOARD_LINK},
                "comm": {"tls": tls_config(folder)},
            }
        },
        "labextension.yaml": {
            "labextension": {
                "factory": {
                    "module": "dask_jobqueue",
                    "class": "SLURMCluster",
                    "args": [],
                    "kwargs": {},
                },
                "default": {"workers": None, "adapt": None},
            }
        },
    }


def interface_of(ip: str) -> str:
    """The network interface holding ``ip`` ("" when none does)."""
    import psutil  # a dependency of distributed; imported here, only inside jobs

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == ip for a in addresses):
            return name
    return ""


def config_dir(environ: Mapping[str, str]) -> Path | None:
    """Where the job's Dask configuration goes (None: no Dask configuration for this job)."""
    job_id = environ.get("SLURM_JOB_ID", "")
    if not environ.get(ENV_VAR) or not job_id.isdigit():
        return None
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".factoryhub" / "jobs" / job_id / "dask"


def write_dask_config(environ: Mapping[str, str], *, ip: str) -> str | None:
    """Write the job's Dask configuration and TLS credentials (as the user, inside the job;
    through :mod:`user_files`, never through a link); return the directory (None: nothing to
    do). Making the credentials imports ``dask``, which reads ``DASK_CONFIG`` only once: set
    it to :func:`config_dir` before calling this in a process that goes on to use Dask."""
    target = config_dir(environ)
    if target is None:
        return None
    import yaml

    payload = json.loads(environ[ENV_VAR])
    job_id, home = target.parts[-2], str(target.parents[3])
    documents = dask_config(
        payload, job_id=job_id, home=home, interface=interface_of(ip), folder=str(target)
    )
    texts = {name: yaml.safe_dump(doc, sort_keys=False) for name, doc in documents.items()}
    texts.update(temporary_credentials())
    try:
        _write(Path(home).absolute(), target.parts[-4:], texts)
    except OSError as e:  # a full home, or a link there that is not the user's own
        print(f"factoryhub: no Dask configuration written into {target}: {e}", file=sys.stderr)
        return None
    _prune(target.parent.parent, keep=target.parent)
    return str(target)


def _write(home: Path, folder: tuple[str, ...], texts: Mapping[str, str]) -> None:
    home_fd = user_files.open_dir(home)
    try:
        os.close(user_files.open_subdir(home_fd, (".factoryhub", "dask-logs"), create=0o700))
        dir_fd = user_files.open_subdir(home_fd, folder, create=0o700)
        try:
            _private(dir_fd)
            for name, text in texts.items():
                user_files.write_replace(dir_fd, name, io.BytesIO(text.encode()), 0o600)
        finally:
            os.close(dir_fd)
    finally:
        os.close(home_fd)


def _private(dir_fd: int) -> None:
    """The folder holding the key is the user's own and 0700, whatever was there before."""
    if os.fstat(dir_fd).st_uid != os.getuid():
        raise PermissionError(f"the Dask configuration folder is not owned by uid {os.getuid()}")
    os.fchmod(dir_fd, 0o700)


def _prune(jobs: Path, keep: Path, days: float = 7) -> None:
    """Forget the configuration of server jobs older than ``days`` (best effort; links are
    never followed, ``rmtree`` itself works through directory descriptors)."""
    import shutil
    import time

    cutoff = time.time() - days * 86400
    for old in jobs.iterdir():
        try:
            info = old.lstat()
            if old != keep and stat.S_ISDIR(info.st_mode) and info.st_mtime < cutoff:
                shutil.rmtree(old)
        except OSError:
            continue
