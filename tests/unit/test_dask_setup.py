"""Dask's configuration for user servers: from the site file to the YAML a job writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from factoryhub.hub.hub_config import hub_settings
from factoryhub.hub.site.loader import SiteError, example_site_path, parse_site
from factoryhub.spawners.dask_setup import (
    dask_comment,
    dask_config,
    dask_payload,
    write_dask_config,
)
from factoryhub.spawners.slurm.comments import parent_job


def example() -> dict[str, Any]:
    data = yaml.safe_load(example_site_path().read_text())
    # the OIDC client secret from the environment, not the local factory's root-only file
    del data["auth"]["oidc"]["client_secret_file"]
    return data


SECRET = {"FACTORYHUB_OIDC_CLIENT_SECRET": "x"}


def problems(data: dict[str, Any]) -> str:
    try:
        parse_site(data)
    except SiteError as e:
        return str(e)
    raise AssertionError("the site file was accepted")


def test_worker_settings_resolve_per_profile() -> None:
    site = parse_site(example())
    per_profile = hub_settings(site, SECRET)["FactorySlurmSpawner"]["dask_settings"]
    assert set(per_profile) == {p.name for p in site.profiles}
    assert per_profile["cpu-small"] == {
        "partition": "batch",
        "cores": 1,
        "memory_gb": 1,
        "processes": 1,
        "walltime": "01:00:00",
        "interface": "",
        "death_timeout": 60,
    }
    assert per_profile["cpu-large"]["cores"] == 2 and per_profile["cpu-large"]["memory_gb"] == 2


def test_defaults_without_a_dask_section() -> None:
    data = example()
    del data["dask"]
    site = parse_site(data)
    small = site.dask.worker_for("cpu-small", "interactive")
    assert small == {
        "partition": "interactive",  # the server's own partition
        "cores": 1,
        "memory_gb": 2,
        "processes": 1,
        "walltime": "01:00:00",
    }


def test_disabled_gives_no_settings() -> None:
    data = example()
    data["dask"]["enabled"] = False
    assert hub_settings(parse_site(data), SECRET)["FactorySlurmSpawner"]["dask_settings"] == {}


def test_bad_dask_values_are_named() -> None:
    data = example()
    data["dask"]["worker"]["partition"] = "nowhere"
    data["dask"]["profiles"] = [
        {"profile": "gpu-99", "worker": {"cores": 1}},
        {"profile": "cpu-large", "worker": {"cores": 2, "processes": 4}},
        {"profile": "cpu-large", "worker": {}},
    ]
    data["dask"]["interface"] = "eth0; reboot"
    data["dask"]["bogus"] = 1
    text = problems(data)
    for key in (
        "dask.worker.partition",
        "dask.profiles[0].profile",
        "dask.profiles[1].worker.processes",
        "dask.profiles[2].profile: profile 'cpu-large' is listed twice",
        "dask.interface",
        'dask: unknown key "bogus"',
    ):
        assert key in text, text


def payload(**over: Any) -> dict[str, Any]:
    settings = {
        "partition": "batch",
        "cores": 2,
        "memory_gb": 1.5,
        "processes": 1,
        "walltime": "00:30:00",
        "interface": "",
        "death_timeout": 60,
        **over,
    }
    out = dask_payload(
        settings,
        account="acme-ai",
        job_name="factoryhub-dask-ada",
        hub_tag="fh:abc",
        python="/v/bin/python",
    )
    assert out is not None
    return out


FOLDER = "/home/ada/.factoryhub/jobs/42/dask"


def test_dask_config_documents() -> None:
    docs = dask_config(payload(), job_id="42", home="/home/ada", interface="lo", folder=FOLDER)
    slurm = docs["jobqueue.yaml"]["jobqueue"]["slurm"]
    assert slurm["queue"] == "batch" and slurm["account"] == "acme-ai"
    assert slurm["cores"] == 2 and slurm["memory"] == "1536MiB" and slurm["interface"] == "lo"
    assert slurm["log-directory"] == "/home/ada/.factoryhub/dask-logs"
    assert slurm["job-extra-directives"] == ["--comment=fh:abc/dask-of/42"]
    assert slurm["name"] == "factoryhub-dask-ada"
    link = docs["distributed.yaml"]["distributed"]["dashboard"]["link"]
    assert link == "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
    assert docs["labextension.yaml"]["labextension"]["factory"]["class"] == "SLURMCluster"
    # the site's interface wins over the one found
    docs = dask_config(
        payload(interface="ib0"), job_id="42", home="/h", interface="lo", folder=FOLDER
    )
    assert docs["jobqueue.yaml"]["jobqueue"]["slurm"]["interface"] == "ib0"


def test_no_account_without_a_project() -> None:
    p = payload()
    p["account"] = ""
    slurm = dask_config(p, job_id="1", home="/h", interface="lo", folder=FOLDER)["jobqueue.yaml"][
        "jobqueue"
    ]
    assert "account" not in slurm["slurm"]


def test_written_where_dask_reads_it(tmp_path: Path) -> None:
    import dask.config

    env = {
        "FACTORYHUB_DASK": json.dumps(payload()),
        "SLURM_JOB_ID": "77",
        "HOME": str(tmp_path),
    }
    target = write_dask_config(env, ip="127.0.0.1")
    assert target == str(tmp_path / ".factoryhub" / "jobs" / "77" / "dask")
    config = dask.config.collect(paths=[target], env={})
    assert config["jobqueue"]["slurm"]["interface"] == "lo"
    assert config["jobqueue"]["slurm"]["account"] == "acme-ai"
    assert (tmp_path / ".factoryhub" / "dask-logs").is_dir()


def test_nothing_written_without_settings(tmp_path: Path) -> None:
    env = {"FACTORYHUB_DASK": "", "SLURM_JOB_ID": "77", "HOME": str(tmp_path)}
    assert write_dask_config(env, ip="127.0.0.1") is None
    assert not (tmp_path / ".factoryhub").exists()


def test_worker_comments_name_their_server() -> None:
    comment = dask_comment("fh:abc", "123")
    assert parent_job(comment, "fh:abc") == "123"
    assert parent_job(comment, "fh:other") is None
    assert parent_job("fh:abc", "fh:abc") is None
    assert parent_job("fh:abc/dask-of/12x", "fh:abc") is None


def test_dashboard_links_through_the_own_proxy_map_to_loopback() -> None:
    from factoryhub.spawners.singleuser.dask_dashboard import loopback_url

    base = "/user/ada/"
    assert loopback_url("/user/ada/proxy/8787/status", base) == "http://127.0.0.1:8787"
    assert (
        loopback_url("http://hub.example/user/ada/proxy/localhost:41000/status", base)
        == "http://127.0.0.1:41000"
    )
    assert loopback_url("/user/ada/proxy/8787/", base) == "http://127.0.0.1:8787"
    assert loopback_url("/user/bob/proxy/8787/status", base) is None  # not this server
    assert loopback_url("http://10.0.0.5:8787/status", base) is None
    assert loopback_url("/user/ada/proxy/evil.example:80/status", base) is None
    assert loopback_url("/user/ada/proxy/99999/status", base) is None


def test_never_written_through_a_link_someone_else_planted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)  # others may change it: its links are not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / ".factoryhub").symlink_to(elsewhere)
    env = {"FACTORYHUB_DASK": json.dumps(payload()), "SLURM_JOB_ID": "78", "HOME": str(home)}
    assert write_dask_config(env, ip="127.0.0.1") is None
    assert not any(elsewhere.iterdir())


def test_a_planted_link_at_a_config_file_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / ".factoryhub" / "jobs" / "79" / "dask"
    folder.mkdir(parents=True)
    (folder / "jobqueue.yaml").symlink_to(victim)
    env = {"FACTORYHUB_DASK": json.dumps(payload()), "SLURM_JOB_ID": "79", "HOME": str(tmp_path)}
    assert write_dask_config(env, ip="127.0.0.1") == str(folder)
    assert victim.read_text() == "keep"
    assert not (folder / "jobqueue.yaml").is_symlink()
    assert (folder / "jobqueue.yaml").stat().st_mode & 0o777 == 0o600


def test_scheduler_workers_and_clients_use_the_servers_tls_credentials() -> None:
    docs = dask_config(payload(), job_id="42", home="/home/ada", interface="lo", folder=FOLDER)
    cert, key = f"{FOLDER}/tls-cert.pem", f"{FOLDER}/tls-key.pem"
    tls = docs["distributed.yaml"]["distributed"]["comm"]["tls"]
    assert tls["ca-file"] == cert
    for role in ("scheduler", "worker", "client"):
        assert tls[role] == {"cert": cert, "key": key}
    slurm = docs["jobqueue.yaml"]["jobqueue"]["slurm"]
    assert slurm["scheduler-options"] == {"dashboard_address": "127.0.0.1:0", "protocol": "tls://"}
    args = slurm["worker-extra-args"]
    assert dict(zip(args[::2], args[1::2], strict=True)) == {
        "--protocol": "tls://",
        "--tls-ca-file": cert,
        "--tls-cert": cert,
        "--tls-key": key,
    }


def written(tmp_path: Path, job_id: str = "80") -> Path:
    env = {"FACTORYHUB_DASK": json.dumps(payload()), "SLURM_JOB_ID": job_id, "HOME": str(tmp_path)}
    target = write_dask_config(env, ip="127.0.0.1")
    assert target is not None
    return Path(target)


def test_each_server_job_gets_fresh_private_credentials(tmp_path: Path) -> None:
    first, second = written(tmp_path, "80"), written(tmp_path, "81")
    assert first.stat().st_mode & 0o777 == 0o700
    for folder in (first, second):
        key = (folder / "tls-key.pem").read_text()
        assert "-----BEGIN PRIVATE KEY-----" in key
        assert "-----BEGIN CERTIFICATE-----" in (folder / "tls-cert.pem").read_text()
        for name in ("tls-key.pem", "tls-cert.pem"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600
        for name in ("jobqueue.yaml", "distributed.yaml", "labextension.yaml"):
            assert "PRIVATE KEY" not in (folder / name).read_text()
    assert (first / "tls-key.pem").read_text() != (second / "tls-key.pem").read_text()


def test_an_existing_open_folder_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / ".factoryhub" / "jobs" / "82" / "dask"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    assert written(tmp_path, "82") == folder
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_zero_argument_cluster_listens_on_tls_only(tmp_path: Path) -> None:
    """SLURMCluster() from the written configuration (no Slurm needed until it scales): the
    scheduler speaks TLS, a worker's job script names the files but holds no key, and a
    client without the server's credentials (plain TCP, TLS with its own temporary ones) is
    refused."""
    import dask.config
    import pytest
    from dask_jobqueue import SLURMCluster
    from distributed import Client
    from distributed.security import Security

    folder = written(tmp_path)
    ours = dask.config.collect(paths=[str(folder)], env={})
    with dask.config.set(dask.config.merge(dask.config.config, ours)):
        cluster = SLURMCluster()
        try:
            address = cluster.scheduler_address
            assert address.startswith("tls://127.0.0.1:"), address
            script = cluster.job_script()
            assert "PRIVATE KEY" not in script
            assert f"--tls-key {folder}/tls-key.pem" in script
            with Client(cluster) as mine:
                assert mine.run_on_scheduler(lambda: 1) == 1
            plain = address.replace("tls://", "tcp://")
            for target, security in ((plain, None), (address, Security.temporary())):
                with pytest.raises(OSError):
                    Client(target, security=security, timeout=3)
        finally:
            cluster.close()


PREPARE = """
import json, os, sys
from factoryhub.spawners.singleuser.main import prepare_dask
prepare_dask(os.environ, "127.0.0.1")
import dask.config
from dask_jobqueue import SLURMCluster  # what the server's Dask sidebar does later
print(json.dumps([
    os.environ.get("DASK_CONFIG"),
    dask.config.get("jobqueue.slurm.scheduler-options", None),
    dask.config.get("distributed.comm.tls.ca-file", None),
]))
"""


def test_the_server_process_itself_reads_the_configuration(tmp_path: Path) -> None:
    """In the server's own process (the Dask sidebar's clusters), dask sees the written
    configuration although making the credentials imported it: DASK_CONFIG is set first."""
    import os
    import subprocess
    import sys

    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "FACTORYHUB_DASK": json.dumps(payload()),
        "SLURM_JOB_ID": "83",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", PREPARE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    folder = str(tmp_path / ".factoryhub" / "jobs" / "83" / "dask")
    assert json.loads(out.stdout.splitlines()[-1]) == [
        folder,
        {"dashboard_address": "127.0.0.1:0", "protocol": "tls://"},
        f"{folder}/tls-cert.pem",
    ]
    # no configuration written: DASK_CONFIG is not left pointing at nothing
    env["FACTORYHUB_DASK"] = ""
    out = subprocess.run(
        [sys.executable, "-c", PREPARE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])[0] is None
