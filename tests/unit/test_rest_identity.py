"""Who exists is Slurm's word in the "rest" access mode (issue 19, item 1).

The hub then runs in a pod whose passwd and group files know nobody but the image's system
accounts. So in that mode the authenticator, the spawner (its environment, the user's
groups and options) and the services (homes, uids) must never ask them: here they run with
``pwd`` and ``grp`` patched to fail the test, against a slurmrestd that answers with the
documents Slurm 22.05's slurmrestd gave (``/slurmdb/v0.0.38/user/<name>``). A grep-style
test keeps ``pwd.``/``grp.`` out of the rest-mode code paths; the real slurmrestd and Slurm
accounting are in tests/integration/test_rest_mode.py.
"""

from __future__ import annotations

import ast
import grp
import os
import pwd
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from jupyterhub.objects import Hub
from tornado import web

from factoryhub.hub.auth import FactoryOIDCAuthenticator
from factoryhub.hub.courses import collect as collecting
from factoryhub.hub.courses.desk import CourseDesk
from factoryhub.hub.reports.engine import unix_account
from factoryhub.hub.service_web import Refused
from factoryhub.hub.site.loader import example_site_path, load_site
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.slurm import commands
from factoryhub.spawners.slurm.client import CommandResult, SlurmUnavailable, SlurmUser
from factoryhub.spawners.slurm.local import LocalSlurmClient
from factoryhub.spawners.slurm.rest import RestSlurmClient, user_record
from factoryhub.spawners.spawner import FactorySlurmSpawner

REPO = Path(__file__).resolve().parents[2]
HOME = "/shared/home/{username}"
SITE = load_site(example_site_path())
PROJECTS = [p.to_config() for p in SITE.projects]  # acme-ai, climate-lab, factory-ops

# ---------------------------------------------------------------------- what slurmrestd said

META = {"plugin": {"type": "openapi/dbv0.0.38", "name": "Slurm OpenAPI DB v0.0.38"}}


def user_answer(name: str, *accounts: str, **extra: Any) -> dict[str, Any]:
    """slurmrestd 22.05's answer to GET /slurmdb/v0.0.38/user/<name> (its fields, no uid)."""
    return {
        "meta": META,
        "errors": [],
        "users": [
            {
                "administrator_level": "None",
                "associations": [
                    {"account": a, "cluster": "factoryhub", "partition": None, "user": name}
                    for a in accounts
                ],
                "coordinators": [],
                "default": {"account": accounts[0] if accounts else "", "wckey": ""},
                "flags": [],
                "name": name,
                **extra,
            }
        ],
    }


NOTHING_FOUND = {  # what it answers (HTTP 500) for a name Slurm's accounting does not know
    "meta": META,
    "errors": [
        {
            "description": "Nothing found",
            "error_number": 9003,
            "error": "Nothing found with query",
            "source": "slurmdb_users_get",
        }
    ],
    "users": [],
}

DOWN = {
    "meta": META,
    "errors": [{"error_number": 1007, "error": "Unable to contact slurm controller"}],
}

USERS = {
    "sofia": user_answer("sofia", "acme-ai"),
    "ravi": user_answer("ravi", "some-other-account"),
    "olduid": user_answer("olduid", "acme-ai", uid=42),  # a Slurm whose record has a uid
}


def rest_client(tmp_path: Path, users: dict[str, Any] | None = None) -> RestSlurmClient:
    """A REST client whose slurmrestd knows ``users`` (None: Slurm does not answer)."""
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    client = RestSlurmClient("http://slurmrestd:6820", str(key), home=HOME)
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["X-SLURM-USER-NAME"])
        if users is None:
            return httpx.Response(500, json=DOWN)
        name = request.url.path.rsplit("/", 1)[-1]
        assert request.url.path == f"/slurmdb/v0.0.38/user/{name}"
        if name in users:
            return httpx.Response(200, json=users[name])
        return httpx.Response(500, json=NOTHING_FOUND)

    client._http = httpx.AsyncClient(base_url=client.url, transport=httpx.MockTransport(answer))
    client.asked = asked  # type: ignore[attr-defined]  # the callers' names, for the test
    return client


@pytest.fixture
def no_passwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's databases: asking them fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the hub's passwd or group database was read: {args}")

    for name in ("getpwnam", "getpwuid", "getpwall"):
        monkeypatch.setattr(pwd, name, refuse)
    for name in ("getgrnam", "getgrgid", "getgrall"):
        monkeypatch.setattr(grp, name, refuse)
    monkeypatch.setattr(os, "getgrouplist", refuse)


# ---------------------------------------------------------------------- the Slurm client


def test_a_user_record_is_read_without_a_uid_as_slurm_22_05_gives_none() -> None:
    sofia = user_record(user_answer("sofia", "acme-ai", "climate-lab"), "sofia", "/h/sofia")
    assert sofia == SlurmUser("sofia", "/h/sofia", frozenset({"acme-ai", "climate-lab"}), "acme-ai")
    assert sofia.uid is None
    assert user_record(user_answer("sofia", "acme-ai", uid=1234), "sofia", "/h").uid == 1234
    assert user_record(user_answer("ravi", "acme-ai"), "sofia", "/h") is None
    assert user_record(user_answer("sofia", "acme-ai", flags=["DELETED"]), "sofia", "/h") is None
    with pytest.raises(SlurmUnavailable):
        user_record({"meta": META, "errors": []}, "sofia", "/h")


async def test_the_rest_client_asks_slurms_accounting_as_the_query_user(
    tmp_path: Path, no_passwd: None
) -> None:
    client = rest_client(tmp_path, USERS)
    sofia = await client.user("sofia")
    assert sofia is not None and sofia.accounts == {"acme-ai"}
    assert sofia.home == "/shared/home/sofia"  # slurm.rest.home, no lookup
    assert await client.user("nobody-here") is None  # slurmdbd's "Nothing found"
    assert await client.user("../jobs") is None  # never a path of slurmrestd's
    assert client.asked == ["root", "root"]  # type: ignore[attr-defined]
    with pytest.raises(SlurmUnavailable):
        await rest_client(tmp_path, None).user("sofia")


def test_sacctmgrs_associations_are_read_once_for_the_local_client() -> None:
    command = commands.associations("ada")
    assert command.argv[:5] == ("sacctmgr", "-n", "-P", "show", "association")
    assert "user=ada" in command.argv
    said = CommandResult(0, "ada|climate-lab\nada|factory-ops\nbob|acme-ai\n", "")
    assert command.read(said) == {"climate-lab", "factory-ops"}
    assert command.read(CommandResult(0, "", "")) == frozenset()  # Slurm does not know ada
    down = "sacctmgr: error: Problem talking to the database: Connection refused"
    with pytest.raises(SlurmUnavailable):
        command.read(CommandResult(1, "", down))
    with pytest.raises(ValueError):
        commands.associations("-ada")


async def test_the_local_client_keeps_passwd_semantics() -> None:
    class Answering(LocalSlurmClient):
        async def _run(self, argv: Any, *, input: Any = None, env: Any = None) -> CommandResult:
            assert argv[0] == "sacctmgr" and "user=root" in argv
            return CommandResult(0, "root|root\nroot|factory-ops\n", "")

    client = Answering()
    root = await client.user("root")
    assert root == SlurmUser(
        "root", pwd.getpwnam("root").pw_dir, frozenset({"root", "factory-ops"}), uid=0
    )
    assert await client.user("fh-no-such-user") is None  # no passwd entry: not asked of Slurm


# ---------------------------------------------------------------------- the authenticator


def authenticator(client: RestSlurmClient) -> FactoryOIDCAuthenticator:
    return FactoryOIDCAuthenticator(
        slurm_access="rest",
        slurm_client=client,
        projects=PROJECTS,
        reserved_usernames=["root", "daemon"],
        issuer="http://127.0.0.1:9",
    )


async def test_a_person_with_an_association_in_a_projects_account_signs_in(
    tmp_path: Path, no_passwd: None
) -> None:
    auth = authenticator(rest_client(tmp_path, USERS))
    assert auth.user_info_to_username({"preferred_username": "sofia"}) == "sofia"
    await auth.provision("sofia", ["acme-ai"])
    await auth.provision("ravi", [])  # in no project: signs in, the home page says how to join


async def test_a_person_slurm_does_not_know_is_told_what_to_ask_the_operators(
    tmp_path: Path, no_passwd: None
) -> None:
    auth = authenticator(rest_client(tmp_path, USERS))
    with pytest.raises(web.HTTPError) as info:
        await auth.provision("nadia", ["acme-ai"])
    message = info.value.log_message or ""
    assert info.value.status_code == 403
    assert "Slurm accounting has no user nadia" in message
    assert "Ask the factory's operators" in message and "the account acme-ai" in message
    assert "sacctmgr add user nadia" in message


async def test_an_association_outside_the_persons_projects_is_not_enough(
    tmp_path: Path, no_passwd: None
) -> None:
    auth = authenticator(rest_client(tmp_path, USERS))
    with pytest.raises(web.HTTPError) as info:
        await auth.provision("ravi", ["acme-ai", "climate-lab"])
    message = info.value.log_message or ""
    assert info.value.status_code == 403
    assert "not in the account of any of your projects" in message
    assert "one of the accounts acme-ai, climate-lab" in message


async def test_reserved_names_and_system_uids_hold_in_the_rest_mode(
    tmp_path: Path, no_passwd: None
) -> None:
    auth = authenticator(rest_client(tmp_path, USERS))
    with pytest.raises(web.HTTPError) as info:
        auth.user_info_to_username({"preferred_username": "root"})
    assert info.value.status_code == 403 and "reserved" in (info.value.log_message or "")
    with pytest.raises(web.HTTPError) as info:  # a uid from Slurm's record, where it has one
        await auth.provision("olduid", ["acme-ai"])
    assert info.value.status_code == 403 and "uid 42" in (info.value.log_message or "")


async def test_slurm_not_answering_at_sign_in_is_a_503_not_a_refusal(
    tmp_path: Path, no_passwd: None
) -> None:
    auth = authenticator(rest_client(tmp_path, None))
    with pytest.raises(web.HTTPError) as info:
        await auth.provision("sofia", ["acme-ai"])
    assert info.value.status_code == 503 and "try again" in (info.value.log_message or "")


# ---------------------------------------------------------------------- the spawner


def spawner(client: RestSlurmClient, groups: list[str]) -> Any:
    user = SimpleNamespace(
        name="sofia",
        groups=[SimpleNamespace(name=g) for g in groups],
        spawners={},
        url="/user/sofia/",
    )
    made = FactorySlurmSpawner(
        user=user,
        hub=Hub(),
        slurm=client,
        slurm_access="rest",
        profiles=[p.to_config() for p in SITE.profiles],
        projects=PROJECTS,
    )
    user.spawners[""] = made
    return made


def test_the_rest_spawner_takes_home_from_the_client_and_groups_from_the_idp(
    tmp_path: Path, no_passwd: None
) -> None:
    s = spawner(rest_client(tmp_path, USERS), ["acme-ai"])
    assert s.user_groups() == {"acme-ai"}
    assert [p.name for p in s.user_projects()] == ["acme-ai"]
    # gpu-1 is for the IdP group gpu-users, not hers
    assert [p.name for p in s.available_profiles()] == ["cpu-small", "cpu-large"]
    assert 'value="cpu-large"' in s._render_options_form()
    request = s.validate_user_options({"profile": "cpu-small", "project": "acme-ai"})
    s._apply_user_options(s, request.to_user_options())
    assert s.req_account == "acme-ai" and s.req_homedir == "/shared/home/sofia"
    env = s.get_env()
    assert env["USER"] == "sofia" and env["HOME"] == "/shared/home/sofia"
    assert "SHELL" not in env  # the compute node's passwd decides (the hub's knows nobody)
    assert s.job_log_dir == "/shared/home/sofia/.factoryhub/logs"


# ---------------------------------------------------------------------- the services


def rest_site() -> Any:
    from dataclasses import replace

    return replace(SITE, slurm=replace(SITE.slurm, access="rest"))


def test_the_services_take_homes_from_the_slurm_client(tmp_path: Path, no_passwd: None) -> None:
    client = rest_client(tmp_path, USERS)
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", token="t")  # never asked here
    desk = CourseDesk(rest_site(), CourseStore(tmp_path / "c.sqlite"), hub, client)  # type: ignore[arg-type]
    assert desk.home("sofia") == "/shared/home/sofia"
    account = unix_account("sofia", client, "rest")
    assert (account.uid, account.home) == (-1, "/shared/home/sofia")  # outputs not read here
    argv, env = collecting._as("sofia", ["python", "-m", "x", "pack", "/f"], "/shared/home/sofia")
    assert argv[:4] == ["runuser", "-u", "sofia", "--"] and env["HOME"] == "/shared/home/sofia"


async def test_collecting_is_refused_in_the_rest_mode_saying_what_to_do(
    tmp_path: Path, no_passwd: None
) -> None:
    """Collecting runs as each person (runuser): the pod cannot, so it says so, clearly."""
    client = rest_client(tmp_path, USERS)
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", token="t")
    desk = CourseDesk(rest_site(), CourseStore(tmp_path / "c.sqlite"), hub, client)  # type: ignore[arg-type]
    (course, *_) = SITE.courses.courses
    with pytest.raises(Refused) as refused:
        await desk.collect(course, "tara")
    assert refused.value.status == 409
    assert "File > Download" in refused.value.message and "rest" in refused.value.message
    local = CourseDesk(SITE, CourseStore(tmp_path / "l.sqlite"), hub, client)  # type: ignore[arg-type]
    assert local.collect_refused() == ""


# ---------------------------------------------------------------------- the code itself

# Modules only the rest mode runs: no pwd or grp at all.
REST_ONLY = [
    "spawners/slurm/rest.py",
    "spawners/slurm/tokens.py",
    "spawners/slurm/job_json.py",
    "spawners/slurm/sbatch_options.py",
    "spawners/slurm/access.py",
    "spawners/slurm/client.py",
    "hub/courses/collect.py",
]
# Modules both modes run: pwd/grp only inside these functions, which only the local mode
# calls (the rest path of each caller is run above with pwd and grp patched to fail).
LOCAL_ONLY_FUNCTIONS = {
    "hub/auth.py": set(),
    "spawners/spawner.py": set(),  # batchspawner's UserEnvMixin: user_env's local branch
    "spawners/choices.py": {"unix_groups"},
    "spawners/system_accounts.py": {"lookup_uid"},
    "hub/courses/desk.py": {"home_of"},
    "hub/reports/engine.py": {"host_uid"},
    "spawners/slurm/local.py": {"home", "user"},
}


def _database_uses(path: Path) -> list[tuple[str, str]]:
    """(enclosing function, 'pwd.x'/'grp.x') for each use of pwd or grp in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, str]] = []

    def walk(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if (
                isinstance(child, ast.Attribute)
                and isinstance(child.value, ast.Name)
                and child.value.id in ("pwd", "grp")
            ):
                found.append((function, f"{child.value.id}.{child.attr}"))
            if isinstance(child, ast.Import | ast.ImportFrom):
                names = [a.name for a in child.names]
                module = getattr(child, "module", None)
                if module in ("pwd", "grp") or {"pwd", "grp"} & set(names):
                    found.append((function or "<module>", "import"))
            walk(child, inner)

    walk(tree, "")
    return found


@pytest.mark.parametrize("module", REST_ONLY)
def test_rest_only_modules_never_name_pwd_or_grp(module: str) -> None:
    assert _database_uses(REPO / module) == []


@pytest.mark.parametrize("module", sorted(LOCAL_ONLY_FUNCTIONS))
def test_shared_modules_read_passwd_only_in_their_local_only_functions(module: str) -> None:
    uses = [(f, what) for f, what in _database_uses(REPO / module) if what != "import"]
    outside = [u for u in uses if u[0] not in LOCAL_ONLY_FUNCTIONS[module]]
    assert outside == [], f"{module}: pwd/grp outside its local-only functions: {outside}"
