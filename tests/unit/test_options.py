"""The spawn form's server-side validation: only allowlisted, in-range values pass."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factoryhub.spawners.jobscript import UnsafeValue, render_job_script, sbatch_value
from factoryhub.spawners.model.profiles import profiles_for
from factoryhub.spawners.model.projects import Usage, projects_for
from factoryhub.spawners.model.slurm_units import format_walltime, human_walltime, parse_walltime
from factoryhub.spawners.options import JobRequest, OptionsError, validate_options

from .site.helpers import a_profile, a_project

PROFILES = (
    a_profile(
        {
            "name": "cpu-small",
            "display_name": "Small CPU",
            "partition": "interactive",
            "cpus": 1,
            "memory_gb": {"default": 2, "min": 1, "max": 4},
            "walltime": {"default": "02:00:00", "max": "08:00:00"},
        }
    ),
    a_profile(
        {
            "name": "gpu-1",
            "display_name": "One GPU",
            "partition": "batch",
            "cpus": 8,
            "memory_gb": {"default": 16, "min": 8, "max": 16},
            "gpus": {"default": 1, "min": 1, "max": 2},
            "walltime": {"default": "04:00:00", "max": "1-00:00:00"},
            "allowed_groups": ["gpu-users"],
        }
    ),
)

INJECTIONS = [
    "01:00:00\n#SBATCH --uid=0",
    "01:00:00\r\n#SBATCH --account=other",
    "$(id)",
    "`id`",
    "01:00:00; rm -rf ~",
    "01:00:00' --wrap='id",
    '01:00:00" && id "',
    "#SBATCH --nodes=100",
    "--partition=gpu",
    "1" * 100,
    "01:00:00\x00",
    "../../etc/passwd",
    "${HOME}",
    "01:00:00 --exclusive",
    "\uff12:00:00",  # full-width digit
]


def job_script(request: JobRequest) -> str:
    subvars = {
        "job_name": "factoryhub-server-alice",
        "log_dir": "/home/alice/.factoryhub/logs",
        "homedir": "/home/alice",
        "keepvars": "PATH,HOME,JUPYTERHUB_API_TOKEN",
        "partition": request.partition,
        "runtime": request.walltime,
        "nprocs": str(request.cpus),
        "memory": f"{request.memory_gb}G",
        "gres": f"gpu:{request.gpus}" if request.gpus else "",
        "account": "",
        "qos": "",
        "reservation": "",
        "username": "alice",
        "profile": request.profile,
    }
    return render_job_script(subvars, ["/opt/env/bin/factoryhub-singleuser", "--debug"])


SBATCH_LINE = re.compile(r"^#SBATCH --[a-z-]+(=[A-Za-z0-9_.:=,/@+%-]+)?$")


def assert_clean_script(script: str) -> None:
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            assert SBATCH_LINE.match(line), line
    assert "$(" not in script and "`" not in script


def test_defaults_come_from_the_first_profile() -> None:
    request = validate_options({}, PROFILES)
    assert request == JobRequest("cpu-small", "interactive", 1, 2, 0, 7200)
    assert request.walltime == "02:00:00"


def test_form_lists_are_accepted() -> None:
    request = validate_options(
        {"profile": ["gpu-1"], "walltime": ["1-00:00:00"], "memory_gb": ["8"], "gpus": ["2"]},
        PROFILES,
    )
    assert (request.partition, request.memory_gb, request.gpus) == ("batch", 8, 2)
    assert request.walltime == "1-00:00:00"


def test_rest_integers_are_accepted() -> None:
    request = validate_options(
        {"profile": "cpu-small", "memory_gb": 4, "walltime": "03:30"}, PROFILES
    )
    assert request.memory_gb == 4 and request.walltime_seconds == 3 * 3600 + 30 * 60


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"profile": "nope"}, "profile", "not a profile you may use"),
        ({"walltime": "09:00:00"}, "walltime", "at most 08:00:00"),
        ({"walltime": "00:00"}, "walltime", "longer than zero"),
        ({"walltime": "2h"}, "walltime", "hours:minutes"),
        ({"memory_gb": "5"}, "memory_gb", "between 1 and 4"),
        ({"memory_gb": "-1"}, "memory_gb", "whole number"),
        ({"memory_gb": "2.5"}, "memory_gb", "whole number"),
        ({"gpus": "1"}, "gpus", "exactly 0"),
        ({"memory_gb": True}, "memory_gb", "text or a whole number"),
        ({"memory_gb": ["1", "2"]}, "memory_gb", "one value"),
        ({"uid": "0"}, "options", "unknown option"),
        ({"req_options": "--uid=0"}, "options", "unknown option"),
    ],
)
def test_refusals_name_the_field(raw: dict, field: str, words: str) -> None:
    with pytest.raises(OptionsError) as info:
        validate_options(raw, PROFILES)
    assert info.value.field == field
    assert words in str(info.value)


def test_no_profile_open_says_what_to_do() -> None:
    with pytest.raises(OptionsError, match="ask your project's admin"):
        validate_options({}, ())


def test_profiles_follow_groups_and_users() -> None:
    assert [p.name for p in profiles_for(PROFILES, "alice", {"users"})] == ["cpu-small"]
    assert [p.name for p in profiles_for(PROFILES, "bob", {"gpu-users"})] == ["cpu-small", "gpu-1"]
    # a profile the user may not use is refused even when posted directly
    with pytest.raises(OptionsError):
        validate_options({"profile": "gpu-1"}, profiles_for(PROFILES, "alice", set()))


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["profile", "walltime", "memory_gb", "gpus"])
def test_injection_attempts_are_refused(field: str, value: str) -> None:
    with pytest.raises(OptionsError):
        validate_options({field: value}, PROFILES)


@pytest.mark.parametrize(
    "value", [v for v in INJECTIONS if not re.fullmatch(r"[\w.:=,/@+-]+", v, re.A)]
)
def test_job_script_filter_refuses_unsafe_values(value: str) -> None:
    with pytest.raises(UnsafeValue):
        sbatch_value(value)


def test_job_script_holds_only_validated_values() -> None:
    script = job_script(validate_options({"profile": "gpu-1", "gpus": "2"}, PROFILES))
    assert "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH --partition=batch" in script
    assert "#SBATCH --time=04:00:00" in script
    assert "exec /opt/env/bin/factoryhub-singleuser --debug" in script
    assert "JUPYTERHUB_API_TOKEN=" not in script  # secrets travel in the environment
    assert_clean_script(script)


option_values = st.one_of(
    st.text(max_size=80),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.lists(st.text(max_size=10), max_size=3),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["profile", "walltime", "memory_gb", "gpus", "account", "cmd"]),
        option_values,
        max_size=5,
    )
)
def test_any_input_is_either_refused_or_safe(raw: dict) -> None:
    try:
        request = validate_options(raw, PROFILES)
    except OptionsError:
        return
    profile = {p.name: p for p in PROFILES}[request.profile]
    assert profile.memory_gb.min <= request.memory_gb <= profile.memory_gb.max
    assert profile.gpus.min <= request.gpus <= profile.gpus.max
    assert 0 < request.walltime_seconds <= profile.walltime_max
    assert_clean_script(job_script(request))


@given(st.integers(min_value=1, max_value=99 * 86400))
def test_walltime_round_trip(seconds: int) -> None:
    assert parse_walltime(format_walltime(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8 * 3600, "8 h"), (86400, "1 day"), (86400 * 2 + 3600 * 12, "2 days 12 h"), (1800, "30 min")],
)
def test_human_walltime(seconds: int, text: str) -> None:
    assert human_walltime(seconds) == text


@pytest.mark.parametrize("value", ["02:00:00\n", "cpu\n", "gpu:1\n"])
def test_a_trailing_newline_is_no_safe_value(value: str) -> None:
    with pytest.raises(UnsafeValue):
        sbatch_value(value)
    with pytest.raises(ValueError):
        parse_walltime(value)


PROJECTS = (
    a_project(
        {
            "name": "acme-ai",
            "display_name": "ACME AI",
            "account": "acme-ai",
            "groups": ["acme-ai"],
            "profiles": ["cpu-small", "gpu-1"],
            "limits": {"max_servers": 1, "max_gpus_per_user": 1},
        }
    ),
    a_project(
        {
            "name": "climate-lab",
            "display_name": "Climate Lab",
            "account": "climate-lab",
            "groups": ["climate-lab"],
            "profiles": ["cpu-small"],
        }
    ),
)


def test_a_project_gives_the_account_and_narrows_the_profiles() -> None:
    mine = projects_for(PROJECTS, {"climate-lab", "acme-ai"})
    request = validate_options({"project": "climate-lab"}, PROFILES, mine)
    assert (request.project, request.account, request.profile) == (
        "climate-lab",
        "climate-lab",
        "cpu-small",
    )
    assert "#SBATCH --account=climate-lab" in job_script_with_account(request)
    with pytest.raises(OptionsError, match="'gpu-1' is not a profile you may use"):
        validate_options({"project": "climate-lab", "profile": "gpu-1"}, PROFILES, mine)
    # the first project is the default
    assert validate_options({}, PROFILES, mine).account == "acme-ai"


def test_a_project_not_of_the_user_is_refused() -> None:
    mine = projects_for(PROJECTS, {"climate-lab"})
    with pytest.raises(OptionsError, match="'acme-ai' is not a project of yours") as info:
        validate_options({"project": "acme-ai"}, PROFILES, mine)
    assert info.value.field == "project"


def test_no_project_says_how_to_get_one() -> None:
    with pytest.raises(OptionsError, match="not a member of any project yet"):
        validate_options({}, PROFILES, projects_for(PROJECTS, {"elsewhere"}))


def test_project_limits() -> None:
    mine = projects_for(PROJECTS, {"acme-ai"})
    with pytest.raises(OptionsError, match="allows 1 server"):
        validate_options({}, PROFILES, mine, {"acme-ai": Usage(servers=1)})
    with pytest.raises(OptionsError, match="allows 1 GPU"):
        validate_options({"profile": "gpu-1", "gpus": "2"}, PROFILES, mine)
    assert validate_options({"profile": "gpu-1", "gpus": "1"}, PROFILES, mine).gpus == 1


def test_no_projects_on_the_site_means_no_account() -> None:
    assert validate_options({}, PROFILES).account == ""
    with pytest.raises(OptionsError, match="no projects"):
        validate_options({"project": "acme-ai"}, PROFILES)


def job_script_with_account(request: JobRequest) -> str:
    subvars = {
        "job_name": "factoryhub-server-ravi",
        "log_dir": "/home/ravi/.factoryhub/logs",
        "homedir": "/home/ravi",
        "keepvars": "PATH",
        "partition": request.partition,
        "runtime": request.walltime,
        "nprocs": str(request.cpus),
        "memory": f"{request.memory_gb}G",
        "gres": "",
        "account": request.account,
        "qos": "",
        "reservation": "",
        "username": "ravi",
        "profile": request.profile,
    }
    return render_job_script(subvars, ["/opt/env/bin/factoryhub-singleuser"])


def test_the_job_sets_the_login_shell_the_hub_could_not() -> None:
    """In the "rest" mode the hub reads no passwd, so the job exports the $SHELL bash takes
    from the compute node's (JupyterLab's terminals start it); a $SHELL the hub gave stays."""
    import os
    import pwd
    import subprocess

    script = job_script(validate_options({"profile": "cpu-small"}, PROFILES))
    assert "\nexport SHELL\n" in script
    body = script.split("\nexport SHELL\n")[0] + "\nexport SHELL\n/usr/bin/printenv SHELL\n"
    me = pwd.getpwuid(os.getuid())
    for shell, expected in (({}, me.pw_shell), ({"SHELL": "/bin/zsh"}, "/bin/zsh")):
        env = {"PATH": "/usr/bin:/bin", "USER": me.pw_name, **shell}
        done = subprocess.run(["/bin/bash", "-c", body], env=env, capture_output=True, text=True)
        assert done.stdout.strip() == expected, done.stderr
