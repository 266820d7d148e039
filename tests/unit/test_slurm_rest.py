"""The "rest" access mode's pure parts: #SBATCH → job properties, tokens, the job's prologue,
the site's access checks and the hub settings it leads to. slurmrestd itself is exercised in
tests/integration/test_rest_mode.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml

from factoryhub.hub.hub_config import hub_settings
from factoryhub.hub.site.loader import SiteError, example_site_path, parse_site
from factoryhub.spawners.jobscript import render_job_script
from factoryhub.spawners.slurm.access import make_client
from factoryhub.spawners.slurm.client import SlurmUnavailable
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.slurm.rest import RestSlurmClient, job_info, prologue
from factoryhub.spawners.slurm.sbatch_options import UnsupportedOption, job_properties
from factoryhub.spawners.slurm.tokens import JwtKeyError, TokenCache, mint, read_key


def _script(**extra: object) -> str:
    subvars = {
        "job_name": "factoryhub-server-ada",
        "comment": "factoryhub:hub",
        "log_dir": "/home/ada/.factoryhub/logs",
        "homedir": "/home/ada",
        "keepvars": "PATH,JUPYTERHUB_API_TOKEN",
        "partition": "interactive",
        "runtime": "1-02:30:00",
        "nprocs": "4",
        "memory": "8G",
        "gres": "gpu:1",
        "account": "acme-ai",
        "qos": "",
        "reservation": "course-day",
        "extra_options": ["--oversubscribe"],
        "username": "ada",
        "profile": "gpu",
    }
    subvars.update(extra)
    return render_job_script(subvars, ["/opt/venv/bin/factoryhub-singleuser", "--debug"])


def test_the_job_script_header_becomes_job_properties() -> None:
    job = job_properties(_script())
    assert job == {
        "name": "factoryhub-server-ada",
        "comment": "factoryhub:hub",
        "standard_output": "/home/ada/.factoryhub/logs/factoryhub-server-ada-%j.log",
        "current_working_directory": "/home/ada",
        "partition": "interactive",
        "time_limit": 26 * 60 + 30,
        "nodes": [1, 1],
        "tasks": 1,
        "requeue": False,  # a server whose node fails ends (NODE_FAIL), never restarts
        "cpus_per_task": 4,
        "memory_per_node": 8192,
        "gres": "gpu:1",
        "account": "acme-ai",
        "reservation": "course-day",
        "oversubscribe": True,
    }


def header(*options: str) -> str:
    return "#!/bin/bash\n" + "".join(f"#SBATCH --{o}\n" for o in options) + "hostname\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30", 30), ("1:30", 2), ("02:00:00", 120), ("2-00", 2880), ("1-01:01", 1501),
     ("0-00:00:01", 1)],
)  # fmt: skip
def test_slurm_times_become_minutes(text: str, expected: int) -> None:
    """Every form Slurm reads (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S), rounded up."""
    assert job_properties(header(f"time={text}"))["time_limit"] == expected


def test_memory_sizes_become_megabytes() -> None:
    sizes = ("512", "512M", "2G", "1T", "2048K")
    got = [job_properties(header(f"mem={v}"))["memory_per_node"] for v in sizes]
    assert got == [512, 512, 2048, 1024 * 1024, 2]
    with pytest.raises(UnsupportedOption, match="--mem=lots"):
        job_properties(header("mem=lots"))


def test_an_unknown_option_is_refused_by_name_not_dropped() -> None:
    with pytest.raises(UnsupportedOption, match="--exclude"):
        job_properties(_script(extra_options=["--exclude=node1"]))


def test_directives_after_the_first_command_are_not_options() -> None:
    job = job_properties("#!/bin/bash\n#SBATCH --job-name=a\necho hi\n#SBATCH --account=x\n")
    assert job == {"name": "a"}


def test_tokens_carry_the_user_and_expire(tmp_path: Path) -> None:
    key = os.urandom(32)
    token = mint(key, "ada", 600, now=1_000_000)
    claims = jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sun": "ada", "iat": 1_000_000, "exp": 1_000_600}
    path = tmp_path / "jwt.key"
    path.write_bytes(key)
    path.chmod(0o600)
    cache = TokenCache(str(path), lifetime=600)
    first = cache.token("ada")
    assert cache.token("ada") == first  # reused while more than half its life is left
    assert jwt.decode(cache.token("bob"), key, algorithms=["HS256"])["sun"] == "bob"


def test_a_key_others_may_read_or_a_missing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt.key"
    with pytest.raises(JwtKeyError, match="does not exist"):
        read_key(path)
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(JwtKeyError, match="readable by others"):
        read_key(path)
    path.chmod(0o400)
    assert len(read_key(path)) == 32


def test_the_prologue_makes_folders_and_files_as_the_job(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "run-1"
    params = out / "parameters.json"
    text = prologue(
        [str(tmp_path / "runs"), str(out)],
        {str(params): '{"label": "it\'s $HOME"}'},
        str(out / "slurm-%j.log"),
    )
    script = f"#!/bin/bash\n{text}echo done\n"
    subprocess.run(
        ["bash", "-c", script], env={"SLURM_JOB_ID": "77", "PATH": "/usr/bin:/bin"}, check=True
    )
    assert params.read_text() == '{"label": "it\'s $HOME"}'
    assert params.stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    assert (out / "slurm-77.log").read_text() == "done\n"


def test_jobs_from_the_rest_api_read_like_squeue() -> None:
    info = job_info(
        {"job_id": 12, "job_state": "PENDING", "state_reason": "Resources", "start_time": 0,
         "name": "factoryhub-server-ada", "user_name": "ada", "comment": "t", "nodes": ""}
    )  # fmt: skip
    assert (info.job_id, info.pending, info.reason, info.start_time) == (
        "12",
        True,
        "Resources",
        "",
    )
    assert job_info({"job_id": 3, "job_state": "RUNNING", "state_reason": "None"}).reason == ""


def _site(**slurm: object) -> dict:
    data = yaml.safe_load(example_site_path().read_text())
    data["slurm"].update(slurm)
    return data


def test_the_rest_mode_needs_its_settings_and_refuses_host_only_features() -> None:
    with pytest.raises(SiteError) as e:
        parse_site(_site(access="rest"))
    assert (
        "slurm.rest: expected a mapping, got nothing (the key is missing; required when "
        'slurm.access is "rest")' in str(e.value)
    )
    data = _site(access="rest", rest={"url": "http://slurmrestd:6820"}, manage_associations=True)
    with pytest.raises(SiteError) as e:
        parse_site(data)
    text = str(e.value)
    assert "slurm.manage_associations" in text and "auth.unix_users.create" in text
    with pytest.raises(SiteError, match=r"slurm\.rest\.url"):
        parse_site(_site(access="rest", rest={"url": "http://x:6820/slurm/v0.0.38"}))


def test_hub_settings_in_the_rest_mode(tmp_path: Path) -> None:
    data = _site(access="rest", rest={"url": "http://slurmrestd:6820"}, manage_associations=False)
    data["auth"]["unix_users"]["create"] = False
    data["hub"].update(state_dir=str(tmp_path), external_proxy=True, services_host="fh-hub")
    (tmp_path / "client-secret").write_text("s3cret\n")
    data["auth"]["oidc"]["client_secret_file"] = str(tmp_path / "client-secret")
    site = parse_site(data)
    env = {"FACTORYHUB_DB_URL": "postgresql://hub@db/hub"}
    settings = hub_settings(site, env)
    spawner = settings["FactorySlurmSpawner"]
    assert spawner["slurm_access"] == "rest"
    assert spawner["slurm_rest"]["url"] == "http://slurmrestd:6820"
    assert spawner["slurm_rest"]["key_file"] == "/etc/factoryhub/slurm-jwt/jwt_hs256.key"
    assert settings["JupyterHub"]["db_url"] == "postgresql://hub@db/hub"
    assert settings["ConfigurableHTTPProxy"]["should_start"] is False
    # the proxy pod reaches the hub by its Service name; compute nodes by connect_url
    assert settings["JupyterHub"]["hub_connect_url"] == "http://fh-hub:8081"
    assert "hub_connect_url" not in settings["Spawner"]
    data["hub"]["connect_url"] = "http://hub-api.cluster:30081"
    spawner_side = hub_settings(parse_site(data), env)["Spawner"]
    assert spawner_side["hub_connect_url"] == "http://hub-api.cluster:30081"
    urls = {s["name"]: s.get("url") for s in settings["JupyterHub"]["services"]}
    assert urls["reports"] == "http://fh-hub:10101"
    client = make_client(spawner["slurm_access"], spawner["slurm_rest"])
    assert isinstance(client, RestSlurmClient) and client.home("ada") == "/home/ada"
    assert isinstance(make_client(), LocalSlurmClient)


def _rest_client(tmp_path: Path, answers: dict[str, Any]) -> RestSlurmClient:
    """A REST client whose slurmrestd answers ``answers[path]`` (a JSON document)."""
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    client = RestSlurmClient("http://slurmrestd:6820", str(key))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[request.url.path])

    client._http = httpx.AsyncClient(base_url=client.url, transport=httpx.MockTransport(answer))
    return client


async def test_the_rest_mode_reads_jobs_with_the_one_parser(tmp_path: Path) -> None:
    forged = "\x1f".join(["150", "COMPLETED", "None", "vm"])
    jobs = {
        "errors": [],
        "jobs": [
            {"job_id": 150, "job_state": "RUNNING", "name": "factoryhub-server-ravi",
             "user_name": "ravi"},
            {"job_id": 151, "job_state": "RUNNING", "name": f"factoryhub-x\n{forged}",
             "comment": f"x\n{forged}", "user_name": "sofia"},
        ],
    }  # fmt: skip
    nothing = {"errors": [{"error": "Nothing found with query", "error_number": 9003}]}
    client = _rest_client(
        tmp_path, {"/slurm/v0.0.38/jobs": jobs, "/slurmdb/v0.0.38/job/9": nothing}
    )
    found = await client.query(["150", "151"])
    assert (found["150"].state, found["150"].user) == ("RUNNING", "ravi")
    assert found["151"].comment == f"x\n{forged}"
    assert [j.job_id for j in await client.jobs_named("factoryhub-")] == ["150", "151"]
    assert await client.accounted_state("9") == ""


async def test_the_rest_mode_takes_a_job_without_state_for_no_answer(tmp_path: Path) -> None:
    jobs = {"errors": [], "jobs": [{"job_id": 150, "name": "factoryhub-server-ravi"}]}
    client = _rest_client(tmp_path, {"/slurm/v0.0.38/jobs": jobs})
    with pytest.raises(SlurmUnavailable):
        await client.query(["150"])
