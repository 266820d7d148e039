"""The "rest" Slurm access mode against the real slurmrestd (JWT) of the local Slurm.

The hub runs as an unprivileged user whose PATH holds no Slurm command, no runuser and no
sudo, and which cannot read the munge key: everything it does on Slurm goes through
slurmrestd with tokens it mints from its own copy of the cluster's JWT key. It spawns,
polls and stops servers; a user Slurm refuses gets Slurm's reason; report runs (the Reports
engine) go the same way (test_rest_reports.py).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from factoryhub.local import slurm as local_slurm
from factoryhub.local import slurmrestd
from tests.support.hub import REPO, VENV_BIN, RunningHub, proxy_command

from .hub_fixtures import write_site

pytestmark = pytest.mark.slurm

HUB_USER = "fhrest-hub"
PORTS = (18400, 18481, 18401)
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "sacct", "scontrol", "runuser", "sudo", "munge")


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _squeue(job_id: str) -> dict[str, str]:
    """The job as ``squeue --json`` lists it, ended too ({}: no longer listed)."""
    from .slurm_fixtures import queue_jobs

    for j in queue_jobs(ended=True):
        if str(j["job_id"]) == job_id:
            return {"state": j["job_state"], "user": j["user_name"], "name": j["name"],
                    "account": j["account"]}  # fmt: skip
    return {}


def _job_of(hub: RunningHub, name: str) -> str:
    with hub.client() as c:
        server = c.get(f"/hub/api/users/{name}").json()["servers"][""]
    return str(server["state"]["job_id"])


@pytest.fixture(scope="module")
def rest_hub(slurm: Any) -> Iterator[RunningHub]:
    """A hub in the rest access mode, run as ``fhrest-hub`` with no Slurm tools in reach."""
    assert slurmrestd.answers(), "the local slurmrestd does not answer"
    entry = _ensure_system_user(HUB_USER)
    root = Path(tempfile.mkdtemp(prefix="factoryhub-rest-", dir="/var/tmp"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir(mode=0o700)
    key = state / "slurm-jwt.key"
    shutil.copyfile(slurmrestd.KEY, key)
    key.chmod(0o400)
    # A bin directory with node only (the proxy is a node script): no Slurm command, no
    # runuser, no sudo can be found by the hub.
    tools = root / "bin"
    tools.mkdir()
    (tools / "node").symlink_to(shutil.which("node") or "/usr/bin/node")
    site = write_site(state / "factory.yaml", state, ports=PORTS)
    data = yaml.safe_load(site.read_text())
    data["slurm"]["access"] = "rest"
    data["slurm"]["rest"] = {"url": slurmrestd.URL, "key_file": str(key), "token_lifetime": 120}
    data["auth"]["unix_users"] = {"create": False}
    site.write_text(yaml.safe_dump(data))
    for path in (state, key, site):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    hub = RunningHub(
        state_dir=state,
        site_file=site,
        token=secrets.token_hex(32),
        log_path=REPO / "test-artifacts" / "hub-rest.log",
        url=f"http://127.0.0.1:{PORTS[0]}",
        run_as=HUB_USER,
        extra_env={
            "PATH": f"{VENV_BIN}:{tools}:{Path(proxy_command()).parent}",
            "HOME": str(state),
        },
    )
    hub.log_path.parent.mkdir(exist_ok=True)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_hub_has_no_way_to_slurm_but_slurmrestd(rest_hub: RunningHub) -> None:
    assert rest_hub.proc is not None
    status = Path(f"/proc/{rest_hub.proc.pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid) == pwd.getpwnam(HUB_USER).pw_uid != 0
    environ = Path(f"/proc/{rest_hub.proc.pid}/environ").read_bytes().split(b"\0")
    path = next(e for e in environ if e.startswith(b"PATH=")).decode()[5:]
    for tool in SLURM_TOOLS:
        assert shutil.which(tool, path=path) is None, f"{tool} is in the hub's PATH"
    assert not os.access("/etc/munge/munge.key", os.R_OK) or os.geteuid() == 0


def test_spawn_poll_and_stop_through_slurmrestd(rest_hub: RunningHub, unix_users: Any) -> None:
    (name,) = unix_users(1)
    r = rest_hub.spawn(name)
    assert r.status_code in (201, 202), r.text
    rest_hub.wait_ready(name, timeout=120)
    job_id = _job_of(rest_hub, name)
    job = _squeue(job_id)
    # submitted as the user (the token's user), with the script's #SBATCH header honoured
    assert job["user"] == name and job["state"] == "RUNNING", job
    assert job["name"] == f"factoryhub-server-{name}"
    assert job["account"] == unix_users.account
    # the server answers through the proxy
    with rest_hub.client() as c:
        assert c.get(f"/user/{name}/api/status").status_code == 200
    # the job's log went where the job made it (the hub could not make the folder)
    log = Path(pwd.getpwnam(name).pw_dir) / ".factoryhub" / "logs"
    deadline = time.monotonic() + 10
    while not list(log.glob(f"*-{job_id}.log")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (log_file,) = log.glob(f"*-{job_id}.log")
    assert log_file.stat().st_uid == pwd.getpwnam(name).pw_uid
    assert f"job {job_id}" in log_file.read_text()

    # polling: the job ends behind the hub's back; the poller (over REST) notices
    subprocess.run(["scancel", job_id], check=True)
    deadline = time.monotonic() + 60
    with rest_hub.client() as c:
        while time.monotonic() < deadline:
            model = c.get(f"/hub/api/users/{name}").json()
            if not model.get("servers") and not model.get("pending"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the hub did not notice the end:\n{rest_hub.log_tail()}")

    # stopping: the hub cancels the job as the user
    r = rest_hub.spawn(name)
    assert r.status_code in (201, 202), r.text
    rest_hub.wait_ready(name, timeout=120)
    job_id = _job_of(rest_hub, name)
    rest_hub.stop_server(name)
    deadline = time.monotonic() + 30
    while _squeue(job_id).get("state") in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _squeue(job_id).get("state", "CANCELLED").startswith("CANCELLED")
    restd_log = local_slurm.LOG_DIR / "slurmrestd.log"
    said = restd_log.read_text(errors="replace")
    assert "POST /slurm/v0.0.38/job/submit" in said
    assert f"DELETE /slurm/v0.0.38/job/{job_id}" in said


def test_a_refusal_reaches_the_user_in_slurms_words(rest_hub: RunningHub) -> None:
    name = "fhtest-noassoc"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    subprocess.run(
        ["sacctmgr", "-i", "delete", "user", f"name={name}"], capture_output=True, check=False
    )
    r = rest_hub.spawn(name)
    deadline = time.monotonic() + 30
    message = r.text
    with rest_hub.client() as c:
        while r.status_code == 202 and time.monotonic() < deadline:
            model = c.get(f"/hub/api/users/{name}").json()
            if not model.get("pending") and not model.get("servers"):
                break
            time.sleep(0.3)
        progress = c.get(f"/hub/api/users/{name}/server/progress", timeout=10).text
    message += progress + rest_hub.log_tail(200)
    assert "Invalid account" in message, message
    assert "Slurm refused the job submission" in message


def test_slurmrestd_down_is_unavailable_not_refused() -> None:
    import asyncio

    from factoryhub.spawners.slurm.client import SlurmUnavailable
    from factoryhub.spawners.slurm.rest import RestSlurmClient

    client = RestSlurmClient("http://127.0.0.1:6899", str(slurmrestd.KEY), timeout=2)
    with pytest.raises(SlurmUnavailable, match="cannot reach slurmrestd"):
        asyncio.run(client.query(["1"]))
    wrong = RestSlurmClient(slurmrestd.URL, str(slurmrestd.KEY))
    wrong.tokens._key = secrets.token_bytes(32)  # not the cluster's key
    # slurmctld drops such a token without a word: unknown (servers are kept), with the hint
    with pytest.raises(SlurmUnavailable, match=r"JWT key \(slurm.rest.key_file\)"):
        asyncio.run(wrong.query(["1"]))
    with pytest.raises(SlurmUnavailable, match="probably not the cluster's"):
        asyncio.run(wrong.submit("root", "#!/bin/bash\ntrue\n", {}))
    # without a token slurmrestd itself says no
    assert httpx.get(f"{slurmrestd.URL}/slurm/v0.0.38/ping", timeout=5).status_code == 401


REST_ACCOUNT = "fhtest-rest-lab"
REST_GROUP = "fhtest-rest-group"
IN_SLURM = "fhtest-rest-assoc"  # an association in REST_ACCOUNT, no Unix account anywhere
NOT_IN_SLURM = "fhtest-rest-none"  # no Slurm user record at all


def _rest_authenticator(tmp_path: Path) -> Any:
    """The authenticator as the hub configures it from a rest-mode site file (the site's
    projects plus one whose account is REST_ACCOUNT), against the real slurmrestd."""
    from factoryhub.hub.auth import FactoryOIDCAuthenticator
    from factoryhub.hub.hub_config import hub_settings
    from factoryhub.hub.site.loader import example_site_path, parse_site

    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    data = yaml.safe_load(example_site_path().read_text())
    data["hub"]["state_dir"] = str(tmp_path)
    data["auth"]["oidc"]["client_secret_file"] = str(secret)
    data["auth"]["unix_users"] = {"create": False}
    data["slurm"]["manage_associations"] = False
    data["slurm"]["access"] = "rest"
    data["slurm"]["rest"] = {"url": slurmrestd.URL, "key_file": str(slurmrestd.KEY)}
    data["projects"].append(
        {
            "name": REST_ACCOUNT,
            "display_name": "FH Rest Lab",
            "account": REST_ACCOUNT,
            "groups": [REST_GROUP],
            "profiles": ["cpu-small"],
        }
    )
    settings = hub_settings(parse_site(data), {})["FactoryOIDCAuthenticator"]
    assert settings["slurm_access"] == "rest"
    return FactoryOIDCAuthenticator(**settings)


def test_who_may_sign_in_is_slurms_word(
    slurm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19, item 1, with the real slurmrestd and Slurm's accounting: a name with an
    association in a project's account is accepted (no Unix account needed: this host's
    passwd is never asked), one Slurm does not know is refused saying what to ask for."""
    import asyncio

    from tornado import web

    from factoryhub.spawners.slurm import accounts

    assert slurmrestd.answers(), "the local slurmrestd does not answer"
    accounts.ensure_account(REST_ACCOUNT, "factoryhub rest-mode test")
    accounts.ensure_user_in_account(IN_SLURM, REST_ACCOUNT)
    subprocess.run(["sacctmgr", "-i", "delete", "user", f"name={NOT_IN_SLURM}"],
                   capture_output=True, check=False)  # fmt: skip
    auth = _rest_authenticator(tmp_path)

    def no_passwd(*args: Any) -> Any:
        raise AssertionError(f"the hub's passwd was read: {args}")

    async def sign_ins() -> None:  # one event loop: the client's connections live in it
        assert auth.user_info_to_username({"preferred_username": IN_SLURM}) == IN_SLURM
        await auth.provision(IN_SLURM, [REST_GROUP])
        with pytest.raises(web.HTTPError) as refused:
            await auth.provision(NOT_IN_SLURM, [REST_GROUP])
        assert refused.value.status_code == 403
        message = refused.value.log_message or ""
        assert f"Slurm accounting has no user {NOT_IN_SLURM}" in message, message
        assert "Ask the factory's operators" in message
        assert f"the account {REST_ACCOUNT}" in message
        # known to Slurm, but not in the account of the project the IdP puts them in
        with pytest.raises(web.HTTPError) as refused:
            await auth.provision(IN_SLURM, ["acme-ai"])
        assert refused.value.status_code == 403
        assert "not in the account of any of your projects" in (refused.value.log_message or "")

    monkeypatch.setattr(pwd, "getpwnam", no_passwd)
    monkeypatch.setattr(pwd, "getpwuid", no_passwd)
    try:
        asyncio.run(sign_ins())
    finally:
        monkeypatch.undo()
        accounts.remove_user_from_account(IN_SLURM, REST_ACCOUNT)
