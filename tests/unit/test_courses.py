"""Courses: the site section, the course model (who, when, edits), the store of trainers'
edits, a course server's pinned request, the hub configuration they become, the capacity
arithmetic and the hub home page's list."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import os
import tarfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from factoryhub.hub.courses import capacity as cap
from factoryhub.hub.courses.collect import pack, unpack
from factoryhub.hub.courses.home import courses_for_home
from factoryhub.hub.courses.roster import participants, server_state
from factoryhub.hub.hub_config import hub_settings
from factoryhub.hub.services import trainer_role
from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import SiteError, parse_site
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import Course, course_groups, hub_group, load_courses
from factoryhub.spawners.model.slurm_units import memory_mb
from factoryhub.spawners.options import OptionsError, validate_course_options
from factoryhub.spawners.slurm.commands import parse_show_line

TODAY = date.today()


def example() -> dict[str, Any]:
    data = yaml.safe_load(site.example_site_path().read_text())
    data["auth"]["type"] = "local"
    del data["auth"]["oidc"]
    return data


def course_entry(**changes: Any) -> dict[str, Any]:
    entry = copy.deepcopy(example()["courses"]["list"][0])
    entry.update(changes)
    return entry


def with_course(**changes: Any) -> dict[str, Any]:
    data = example()
    data["courses"]["list"] = [course_entry(**changes)]
    return data


def lines(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SiteError) as caught:
        parse_site(data)
    return str(caught.value).splitlines()


def a_course(**changes: Any) -> Course:
    base: dict[str, Any] = {
        "name": "intro",
        "display_name": "Intro",
        "profile": "cpu-small",
        "project": "factory-ops",
        "account": "factory-ops",
        "start": TODAY - timedelta(days=1),
        "end": TODAY + timedelta(days=1),
        "description": "",
        "trainer_users": (),
        "trainer_groups": ("trainers",),
        "participant_users": ("ann",),
        "participant_groups": ("cohort",),
        "reservation": "",
        "materials_path": "",
        "materials_git": "",
        "materials_ref": "",
    }
    base.update(changes)
    return Course(**base)


# --------------------------------------------------------------------------- the site file


def test_the_example_course_loads_with_its_projects_account_and_builtin_materials() -> None:
    (course,) = site.load_site(site.example_site_path()).courses.courses
    assert (course.name, course.profile, course.account) == ("intro-ai", "cpu-small", "factory-ops")
    assert course.trainer_groups == ("trainers",) and "sofia" in course.participant_users
    assert Path(course.materials_path).is_dir()
    assert (Path(course.materials_path) / "README.md").is_file()


def test_unquoted_days_are_read_as_text_and_checked() -> None:
    text = site.example_site_path().read_text().replace('"2026-01-05"', "2026-01-05")
    data = site._StrictLoader(text).get_single_data()
    assert data["courses"]["list"][0]["start"] == "2026-01-05"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"profile": "huge"}, "courses.list[0].profile: expected one of the profiles"),
        ({"project": "nope"}, "courses.list[0].project: expected one of the projects"),
        ({"start": "2026-02-30"}, "courses.list[0].start: '2026-02-30' is not a day"),
        ({"start": "5 May"}, "courses.list[0].start: expected a day written YYYY-MM-DD"),
        ({"end": "2025-01-01"}, "courses.list[0].end: the course ends (2025-01-01) before"),
        ({"trainers": {}}, "courses.list[0].trainers: expected at least one of users and groups"),
        (
            {"materials": {"builtin": "intro-ai", "path": "/srv/x"}},
            "courses.list[0].materials: give one of builtin, path and git, not builtin and path",
        ),
        ({"materials": {"builtin": "nope"}}, "courses.list[0].materials.builtin: expected one of"),
        ({"materials": {"ref": "main"}}, "courses.list[0].materials.ref: a ref needs git"),
        ({"materials": {"git": "-oProxy"}}, "courses.list[0].materials.git: expected a git"),
        ({"reservation": "a b"}, "courses.list[0].reservation: expected a Slurm reservation"),
        ({"name": "Intro AI"}, "courses.list[0].name: expected 1 to 32 lowercase"),
        ({"colour": "red"}, 'courses.list[0]: unknown key "colour" (allowed: name,'),
    ],
)
def test_a_bad_course_names_its_key(changes: dict[str, Any], expected: str) -> None:
    found = lines(with_course(**changes))
    assert any(expected in line for line in found), found


def test_course_names_are_unique() -> None:
    data = example()
    data["courses"]["list"] = [course_entry(), course_entry()]
    assert any("courses.list[1].name: 'intro-ai' is already" in line for line in lines(data))


def test_git_materials_are_read_from_the_services_checkout() -> None:
    data = with_course(materials={"git": "https://git.example.org/intro.git", "ref": "v1"})
    data["courses"]["materials_cache"] = "/srv/materials"
    (course,) = parse_site(data).courses.courses
    assert course.materials_path == "/srv/materials/intro-ai"
    assert (course.materials_git, course.materials_ref) == (
        "https://git.example.org/intro.git",
        "v1",
    )


# --------------------------------------------------------------------------- the model


def test_who_takes_and_who_teaches() -> None:
    c = a_course()
    assert c.is_participant("ann", []) and c.is_participant("bob", ["cohort"])
    assert not c.is_participant("eve", ["trainers"]) and c.is_trainer("eve", ["trainers"])
    assert course_groups([c], "bob", ["cohort"]) == {hub_group("intro")} == {"course:intro"}
    assert course_groups([c], "eve", ["x"]) == set()


def test_open_on_its_days_only_with_messages_that_say_when() -> None:
    now = datetime.now().astimezone()
    assert a_course().is_open(now) and a_course().closed_message(now) == ""
    later = a_course(start=TODAY + timedelta(days=3), end=TODAY + timedelta(days=4))
    assert not later.is_open(now) and "opens on" in later.closed_message(now)
    ended = a_course(start=TODAY - timedelta(days=4), end=TODAY - timedelta(days=1))
    assert not ended.is_open(now) and "ended on" in ended.closed_message(now)
    # the last day is included up to midnight
    today_only = a_course(start=TODAY, end=TODAY)
    assert today_only.is_open(now.replace(hour=23, minute=59))


def test_edits_apply_to_editable_keys_only() -> None:
    c = a_course().with_edits(
        {"participant_users": ["zed"], "end": "2030-01-01", "profile": "gpu-1", "reservation": "r"}
    )
    assert c.participant_users == ("zed",) and c.end == date(2030, 1, 1)
    assert c.profile == "cpu-small" and c.reservation == "r"
    (loaded,) = load_courses([a_course().to_config()], {"intro": {"description": "new"}})
    assert loaded.description == "new" and loaded.start == TODAY - timedelta(days=1)


def test_the_store_merges_edits_and_logs_events(tmp_path: Path) -> None:
    store = CourseStore(tmp_path / "c" / "courses.sqlite")
    assert store.edits() == {} and store.events("intro") == []  # no database yet: no edits
    store.save_edits("intro", {"reservation": "r1"}, "eve")
    assert store.save_edits("intro", {"end": "2030-01-01"}, "eve") == {
        "reservation": "r1",
        "end": "2030-01-01",
    }
    store.log("intro", "eve", "start-all", {"asked": ["ann"]})
    assert [e.kind for e in store.events("intro")] == ["start-all", "edit", "edit"]
    assert store.edits() == {"intro": {"reservation": "r1", "end": "2030-01-01"}}


# --------------------------------------------------------------------------- a course server


def profile() -> Any:
    s = site.load_site(site.example_site_path())
    return s.profile("cpu-small")


def test_a_course_server_is_pinned_to_the_courses_profile_and_account() -> None:
    request = validate_course_options(
        {"profile": "gpu-1", "gpus": "4"}, a_course(), profile(), True
    )
    assert (request.profile, request.cpus, request.gpus) == ("cpu-small", 1, 0)
    assert (request.project, request.account) == ("factory-ops", "factory-ops")


def test_a_course_server_is_refused_to_outsiders_and_outside_its_days() -> None:
    with pytest.raises(OptionsError, match="not a participant of the course Intro"):
        validate_course_options({}, a_course(), profile(), False)
    ended = a_course(start=TODAY - timedelta(days=9), end=TODAY - timedelta(days=2))
    with pytest.raises(OptionsError, match="Course: The course Intro ended on"):
        validate_course_options({}, ended, profile(), True)


# --------------------------------------------------------------------------- the hub


def test_hub_settings_run_the_service_and_give_trainers_no_access_scope() -> None:
    data = yaml.safe_load(site.example_site_path().read_text())
    # the secret from the environment, not the local factory's root-only file
    del data["auth"]["oidc"]["client_secret_file"]
    env = {"FACTORYHUB_OIDC_CLIENT_SECRET": "x"}
    settings = hub_settings(parse_site(data), env, "/py", "/site.yaml")
    hub = settings["JupyterHub"]
    assert hub["allow_named_servers"] is True
    assert "access:services!service=courses" in hub["extra_user_scopes"]
    roles = {r["name"]: r for r in hub["load_roles"]}
    trainers = roles[trainer_role("intro-ai")]
    assert trainers["groups"] == ["trainers"]
    # no access scope at all: course servers reach trainers as shares of one server each
    assert trainers["scopes"] == ["read:users:name!group=course:intro-ai"]
    assert not any("access:" in x for r in hub["load_roles"] if r is trainers for x in r["scopes"])
    service = roles["courses-service"]["scopes"]
    assert "servers!group=course:intro-ai" in service and "admin:users" not in service
    assert "shares!group=course:intro-ai" in service
    assert "users:shares!group=trainers" in service
    assert not any(x in service for x in ("servers", "admin:groups", "access:servers", "shares"))
    spawner = settings["FactorySlurmSpawner"]
    assert spawner["courses"][0]["name"] == "intro-ai"
    assert spawner["courses_db"].endswith("/courses/courses.sqlite")
    assert settings["FactoryOIDCAuthenticator"]["courses_db"] == spawner["courses_db"]


def test_no_courses_no_service_and_no_named_servers() -> None:
    data = example()
    data["courses"] = {"list": []}
    settings = hub_settings(parse_site(data), {}, "/py", "/site.yaml")
    assert "allow_named_servers" not in settings["JupyterHub"]
    assert not any(s["name"] == "courses" for s in settings["JupyterHub"].get("services", []))


def test_the_home_page_lists_the_courses_a_user_takes_or_teaches(tmp_path: Path) -> None:
    configs = [a_course()]
    groups = [SimpleNamespace(name="trainers")]
    running = SimpleNamespace(ready=True, pending=None)
    ann = SimpleNamespace(name="ann", groups=[], spawners={"intro": running})
    (mine,) = courses_for_home(configs, str(tmp_path / "none.sqlite"), ann)
    assert mine["takes"] and not mine["teaches"] and mine["running"] and mine["open"]
    eve = SimpleNamespace(name="eve", groups=groups, spawners={})
    assert courses_for_home(configs, "", eve)[0]["teaches"]
    assert courses_for_home(configs, "", SimpleNamespace(name="x", groups=[], spawners={})) == []


# --------------------------------------------------------------------------- the service's parts


def test_participants_from_hub_users_and_names_who_never_signed_in() -> None:
    users = {
        "ann": {"groups": [], "servers": {"intro": {"ready": True, "url": "/user/ann/intro/"}}},
        "bob": {"groups": ["cohort"], "servers": {"intro": {"pending": "spawn"}}},
        "cat": {"groups": ["cohort"], "servers": {"intro": {"ready": False, "started": None}}},
        "dan": {"groups": ["other"], "servers": {}},
    }
    found = {p.name: p for p in participants(a_course(participant_users=("ann", "zoe")), users)}
    assert {n: p.state for n, p in found.items()} == {
        "ann": "running",
        "bob": "starting",
        "cat": "stopped",
        "zoe": "never-signed-in",
    }
    assert found["ann"].url == "/user/ann/intro/" and not found["zoe"].signed_in
    assert server_state({"pending": "stop"}) == "stopping" and server_state(None) == "stopped"


NODE = (
    "NodeName=n1 Arch=x86_64 CPUAlloc=6 CPUTot=8 OS=Linux 6.1 #1 SMP RealMemory=16384 "
    "AllocMem=12288 State=MIXED Partitions=interactive,batch Reason=none given"
)


def test_scontrol_lines_and_capacity_arithmetic() -> None:
    node = parse_show_line(NODE)
    assert node["OS"] == "Linux 6.1 #1 SMP" and node["Reason"] == "none given"
    # 2 CPUs and 4 GB free: two 1-CPU 2-GB servers fit, one 1-CPU 3-GB server
    assert cap.node_slots([node], 1, 2048) == (2, 2, 4096)
    assert cap.node_slots([node], 1, 3072)[0] == 1
    assert cap.node_slots([{**node, "State": "IDLE+DRAIN"}], 1, 1)[0] == 0
    res = parse_show_line("ReservationName=r Nodes=n[01-03],m7 CoreCnt=4 TRES=cpu=6 State=ACTIVE")
    assert cap.reservation_cpus(res) == 6
    assert cap._expand_nodes(res["Nodes"]) == {"n01", "n02", "n03", "m7"}
    assert memory_mb("2G") == 2048 and memory_mb("500M") == 500


def test_collect_packs_notebooks_only_and_never_through_links(tmp_path: Path) -> None:
    source = tmp_path / "course"
    (source / "sub").mkdir(parents=True)
    (source / "a.ipynb").write_text("{}")
    (source / "sub" / "b.ipynb").write_text("{}")
    (source / "notes.md").write_text("x")
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    secret = tmp_path / "secret.ipynb"
    secret.write_text("private")
    (source / "link.ipynb").symlink_to(secret)
    buffer = io.BytesIO()
    assert pack(source, buffer) == 2
    buffer.seek(0)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        assert sorted(tar.getnames()) == ["a.ipynb", "sub/b.ipynb"]
    assert unpack(tmp_path / "out", buffer) == 2
    assert (tmp_path / "out" / "sub" / "b.ipynb").read_text() == "{}"


def test_unpack_never_writes_through_a_link_in_the_target(tmp_path: Path) -> None:
    source = tmp_path / "course"
    (source / "sub").mkdir(parents=True)
    (source / "a.ipynb").write_text("{}")
    (source / "sub" / "b.ipynb").write_text("{}")
    buffer = io.BytesIO()
    assert pack(source, buffer) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)  # planted where a folder will be
    (out / "a.ipynb").symlink_to(elsewhere / "a.ipynb")  # and where a notebook will be
    buffer.seek(0)
    assert unpack(out, buffer) == 0
    assert not any(elsewhere.iterdir())


async def test_collect_runs_as_the_users_with_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from factoryhub.hub.courses import collect as collecting

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the service's secret")
    argv, env = collecting._as("root", ["python", "-m", "x", "pack", "/f"])
    assert argv[:4] == ["runuser", "-u", "root", "--"]
    assert "JUPYTERHUB_API_TOKEN" not in env and env["USER"] == "root"
    rc, out, _ = await collecting._run(["env"], env)
    assert rc == 0 and b"the service's secret" not in out and b"USER=root" in out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


async def test_a_collect_call_past_its_time_limit_ends_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child that would outlive its parent (a shell's background sleep) is killed too."""
    from factoryhub.hub.courses import collect as collecting

    monkeypatch.setattr(collecting, "RUN_TIME_LIMIT", 1.0)
    pid_file = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    begun = time.monotonic()
    rc, _, err = await collecting._run(["sh", "-c", script], {"PATH": "/usr/bin:/bin"})
    assert rc == 1 and "no answer within 1 s" in err
    assert time.monotonic() - begun < 10, "the call waited for the child"
    child = int(pid_file.read_text())
    for _ in range(100):  # up to 5 s for the kernel to end it
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child), "the child outlived the time limit"
