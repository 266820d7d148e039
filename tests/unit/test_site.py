"""The site file: schema, loader, typed view and error messages."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import IntRange, SiteError, load_site, parse_site, walltime_seconds

EXAMPLE = site.example_site_path()
SLURM_TIME = re.compile(site.schema()["$defs"]["slurmTime"]["pattern"].removesuffix("$"))


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def errors_of(data: Any) -> SiteError:
    with pytest.raises(SiteError) as info:
        parse_site(data)
    return info.value


def lines_of(err: SiteError) -> list[str]:
    return str(err).splitlines()


# --------------------------------------------------------------------------- the example


def test_example_is_packaged_and_loads() -> None:
    assert EXAMPLE.name == "factory.example.yaml"
    assert EXAMPLE.is_file()
    s = load_site(EXAMPLE)
    assert [p.name for p in s.profiles] == ["cpu-small", "cpu-large", "gpu-1"]
    assert s.hub.public_url == "http://127.0.0.1:8000"
    assert s.hub.state_dir == "/var/lib/factoryhub/hub"
    assert s.hub.keep_servers_on_restart is True
    assert s.auth.type == "oidc"
    assert s.auth.oidc is not None
    assert s.auth.oidc.issuer == "http://127.0.0.1:9000"
    assert s.auth.oidc.client_secret_file == "/var/lib/factoryhub/idp/client-secret"
    assert s.auth.oidc.username_claim == "preferred_username"
    assert s.auth.oidc.admin_groups == ("factory-admins",)
    assert s.auth.unix_users.create is True
    assert [(p.name, p.account) for p in s.projects] == [
        ("acme-ai", "acme-ai"),
        ("climate-lab", "climate-lab"),
        ("factory-ops", "factory-ops"),
    ]
    assert s.projects[0].max_gpus_per_user == 1 and s.projects[1].max_servers is None
    assert s.auth.local is not None
    assert s.auth.local.group == "factoryhub"
    assert s.auth.local.admin_users == ("alice",)
    assert s.slurm.access == "local"
    assert s.slurm.job_name_prefix == "factoryhub"
    assert [p.name for p in s.slurm.partitions] == ["interactive", "batch"]
    assert s.spawner.python_env == "/opt/factoryhub/venv"
    assert s.spawner.start_timeout == 600
    assert s.spawner.log_dir_for("/home/bob", "bob") == "/home/bob/.factoryhub/logs"
    assert s.profile("gpu-1").gpus == IntRange(default=1, min=1, max=1)
    with pytest.raises(KeyError):
        s.profile("nope")


def test_example_profiles_to_config() -> None:
    s = load_site(EXAMPLE)
    small, _, gpu = s.profiles
    assert small.to_config() == {
        "name": "cpu-small",
        "display_name": "Small CPU",
        "description": "1 CPU core, up to 4 GB memory. For exploring and light data work.",
        "partition": "interactive",
        "cpus": 1,
        "memory_gb": {"default": 2, "min": 1, "max": 4},
        "gpus": {"default": 0, "min": 0, "max": 0},
        "walltime": {"default": "02:00:00", "max": "08:00:00"},
        "allowed_groups": [],
        "allowed_users": [],
        "image": "",
    }
    assert small.gpus.fixed and not small.memory_gb.fixed
    assert not small.restricted and small.allows("anyone")
    cfg = gpu.to_config()
    assert cfg["gpus"] == {"default": 1, "min": 1, "max": 1}
    assert cfg["allowed_groups"] == ["gpu-users"]
    assert gpu.allows("bob", ["users", "gpu-users"]) and not gpu.allows("bob", ["users"])
    for p in s.profiles:
        c = p.to_config()
        assert json.loads(json.dumps(c)) == c  # plain JSON
        assert set(c) == {
            "name",
            "display_name",
            "description",
            "partition",
            "cpus",
            "memory_gb",
            "gpus",
            "walltime",
            "allowed_groups",
            "allowed_users",
            "image",
        }


def test_defaults_are_filled_in() -> None:
    data = {
        "hub": {"state_dir": "/srv/hub"},
        "auth": {"type": "local", "local": {"group": "users"}},
        "slurm": {"partitions": [{"name": "p"}]},
        "spawner": {"python_env": "/opt/env"},
        "profiles": [
            {
                "name": "p1",
                "display_name": "P1",
                "partition": "p",
                "cpus": 1,
                "memory_gb": {"default": 1, "min": 1, "max": 1},
                "walltime": {"default": "01:00:00", "max": "1-00:00:00"},
            }
        ],
    }
    before = copy.deepcopy(data)
    s = parse_site(data)
    assert data == before  # the input is not changed
    assert s.hub.public_url == "http://127.0.0.1:8000"
    assert s.hub.keep_servers_on_restart is True
    assert s.auth.local is not None and s.auth.local.admin_users == ()
    assert s.slurm.access == "local" and s.slurm.job_name_prefix == "factoryhub"
    assert s.slurm.partitions[0].description == ""
    assert s.spawner.log_dir == "{home}/.factoryhub/logs" and s.spawner.start_timeout == 600
    p = s.profiles[0]
    assert p.description == "" and p.gpus == IntRange(0, 0, 0)
    assert p.allowed_groups == () and p.allowed_users == ()
    assert s.raw["hub"]["public_url"] == "http://127.0.0.1:8000"
    assert "public_url" not in site.schema()["properties"]["hub"]["required"]


# --------------------------------------------------------------------------- the schema


def _objects(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _objects(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{where}/{i}")


def test_schema_is_valid_and_strict() -> None:
    schema = site.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for where, node in _objects(schema):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, where
        if isinstance(node.get("properties"), dict) and not where.endswith("/if"):
            for key, prop in node["properties"].items():
                assert prop.get("description"), f"{where}/properties/{key}"
        if "pattern" in node:
            assert node["pattern"] in site._PATTERN_MEANING, where
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in schema["$defs"], where
        if "default" in node and "$ref" not in node:
            jsonschema.validate(node["default"], node, cls=jsonschema.Draft202012Validator)


def test_schema_is_a_copy() -> None:
    site.schema()["properties"].clear()
    assert site.schema()["properties"]


def test_example_validates_against_the_bare_schema() -> None:
    # The same schema becomes the Helm values schema: the example must pass it alone.
    jsonschema.Draft202012Validator(site.schema()).validate(example())


# --------------------------------------------------------------------------- errors


def test_unknown_top_level_key() -> None:
    data = example()
    data["hubb"] = {}
    err = errors_of(data)
    assert lines_of(err) == [
        'factory.yaml: unknown key "hubb" '
        "(allowed: hub, auth, slurm, spawner, profiles, projects, idle_culler, dask, reports, "
        "courses)"
    ]


def test_unknown_profile_key() -> None:
    data = example()
    data["profiles"][2]["gpu"] = 1
    err = errors_of(data)
    assert err.paths == ["profiles[2]"]
    assert str(err).startswith(
        'factory.yaml: profiles[2]: unknown key "gpu" (allowed: name, display_name, description,'
    )


def test_wrong_type() -> None:
    data = example()
    data["profiles"][0]["cpus"] = "two"
    assert lines_of(errors_of(data)) == [
        'factory.yaml: profiles[0].cpus: expected an integer from 1 to 1024, got "two"'
    ]
    data = example()
    data["hub"]["keep_servers_on_restart"] = "yes please"
    assert errors_of(data).paths == ["hub.keep_servers_on_restart"]


def test_unquoted_walltime_gets_a_hint() -> None:
    # YAML 1.1 reads 24:00:00 as the base-60 number 86400 (but 08:00:00 as a string)
    text = EXAMPLE.read_text().replace('max: "24:00:00"', "max: 24:00:00")
    err = errors_of(yaml.safe_load(text))
    assert err.paths == ["profiles[1].walltime.max"]
    assert "got 86400" in str(err) and "quotes" in str(err)


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        (("profiles", 0, "name"), "cpu small", "profiles[0].name"),
        (("profiles", 1, "partition"), "batch;rm -rf", "profiles[1].partition"),
        (("slurm", "partitions", 0, "name"), "interactive;x", "slurm.partitions[0].name"),
        (("slurm", "job_name_prefix"), "Factory", "slurm.job_name_prefix"),
        (("auth", "local", "group"), "Staff", "auth.local.group"),
        (("hub", "state_dir"), "var/lib/hub", "hub.state_dir"),
        (("hub", "public_url"), "ftp://example.org", "hub.public_url"),
        (("profiles", 0, "walltime", "max"), "8h", "profiles[0].walltime.max"),
    ],
)
def test_bad_pattern(where: tuple[Any, ...], value: str, path: str) -> None:
    data = example()
    node = data
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    err = errors_of(data)
    assert path in err.paths
    assert f"{path}: expected " in str(err)
    assert f"got {json.dumps(value)}" in str(err)


def test_partition_not_declared() -> None:
    data = example()
    data["profiles"][1]["partition"] = "gpu"
    assert lines_of(errors_of(data)) == [
        "factory.yaml: profiles[1].partition: expected one of the partitions declared in "
        'slurm.partitions (interactive, batch), got "gpu"'
    ]


def test_memory_default_above_max() -> None:
    data = example()
    data["profiles"][1]["memory_gb"] = {"default": 16, "min": 4, "max": 12}
    assert lines_of(errors_of(data)) == [
        "factory.yaml: profiles[1].memory_gb.default: expected at most max (12), got 16"
    ]


def test_range_min_above_max_and_default_below_min() -> None:
    data = example()
    data["profiles"][2]["gpus"] = {"default": 1, "min": 2, "max": 1}
    data["profiles"][0]["memory_gb"] = {"default": 1, "min": 2, "max": 4}
    err = errors_of(data)
    assert err.paths == [
        "profiles[0].memory_gb.default",
        "profiles[2].gpus.default",
        "profiles[2].gpus.min",
    ]
    assert "profiles[2].gpus.min: expected at most max (1), got 2" in str(err)
    assert "profiles[0].memory_gb.default: expected at least min (2), got 1" in str(err)


def test_walltime_default_above_max() -> None:
    data = example()
    data["profiles"][0]["walltime"] = {"default": "1-00:00:00", "max": "08:00:00"}
    assert lines_of(errors_of(data)) == [
        "factory.yaml: profiles[0].walltime.default: expected at most max (08:00:00), "
        'got "1-00:00:00"'
    ]


def test_walltime_zero() -> None:
    data = example()
    data["profiles"][0]["walltime"] = {"default": "00:00:00", "max": "00:00:00"}
    err = errors_of(data)
    assert err.paths == ["profiles[0].walltime.default", "profiles[0].walltime.max"]


def test_duplicate_names() -> None:
    data = example()
    data["profiles"][2]["name"] = "cpu-small"
    data["projects"] = []
    del data["reports"]  # its service_project names a project
    del data["courses"]  # so do its courses
    data["slurm"]["partitions"].append({"name": "batch"})
    err = errors_of(data)
    assert err.paths == ["profiles[2].name", "slurm.partitions[2].name"]
    assert "already used by profiles[0]" in str(err)


def test_missing_keys() -> None:
    data = example()
    del data["profiles"][0]["cpus"]
    data["auth"]["type"] = "local"
    del data["auth"]["local"]
    assert lines_of(errors_of(data)) == [
        "factory.yaml: auth.local: expected a mapping, got nothing "
        '(the key is missing; required when auth.type is "local")',
        "factory.yaml: profiles[0].cpus: expected an integer from 1 to 1024, got nothing "
        "(the key is missing)",
    ]


def test_log_dir_placeholders() -> None:
    for bad in ("{home}/{user}/logs", "relative/{username}", "/x/{home", "/x/{}"):
        data = example()
        data["spawner"]["log_dir"] = bad
        err = errors_of(data)
        assert err.paths == ["spawner.log_dir"], bad
        assert "{home} and {username}" in str(err)
    for good in ("/var/log/factoryhub/{username}", "{home}/logs/{username}", "/tmp/logs"):
        data = example()
        data["spawner"]["log_dir"] = good
        s = parse_site(data)
        assert s.spawner.log_dir_for("/h/u", "u").startswith("/")


def test_empty_lists() -> None:
    data = example()
    data["profiles"] = []
    data["projects"] = []
    del data["reports"]  # its service_project names a project
    del data["courses"]  # so do its courses
    assert errors_of(data).paths == ["profiles"]
    data = example()
    data["profiles"][0]["allowed_users"] = []
    assert errors_of(data).paths == ["profiles[0].allowed_users"]


def test_not_a_mapping() -> None:
    for data in (None, [], "hub"):
        err = errors_of(data)
        assert err.paths == [""]
        assert str(err).startswith("factory.yaml: expected a mapping")


def test_several_errors_together_sorted() -> None:
    data = example()
    data["zzz"] = 1
    data["spawner"]["start_timeout"] = 5
    data["profiles"][0]["cpus"] = 0
    data["profiles"][1]["partition"] = "nowhere"
    data["profiles"][2]["memory_gb"]["default"] = 99
    data["hub"]["state_dir"] = "relative"
    data["auth"]["local"]["admin_users"] = ["alice", "Bob"]
    data["profiles"].extend(copy.deepcopy(data["profiles"][:1]) * 10)
    data["profiles"][12]["name"] = "bad name"
    err = errors_of(data)
    lines = lines_of(err)
    assert len(lines) == len(err.problems)
    assert all(line.startswith("factory.yaml: ") for line in lines)
    assert err.paths[:8] == [
        "",
        "auth.local.admin_users[1]",
        "hub.state_dir",
        "profiles[0].cpus",
        "profiles[1].partition",
        "profiles[2].memory_gb.default",
        "profiles[3].cpus",
        "profiles[3].name",
    ]
    # profiles[10] after profiles[9], not after profiles[1]
    idx = [int(m[1]) for p in err.paths if (m := re.match(r"profiles\[(\d+)\]", p))]
    assert idx == sorted(idx)
    assert "profiles[12].name" in err.paths
    assert err.paths[-1] == "spawner.start_timeout"


# --------------------------------------------------------------------------- files and YAML


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "factory.yaml"
    f.write_text("hub:\n  state_dir: /x\nauth: [local\nslurm: {}\n")
    with pytest.raises(SiteError) as info:
        load_site(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: line ")
    assert "YAML syntax error" in msg
    assert re.search(r"line [34], column \d+", msg)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    f = tmp_path / "factory.yaml"
    f.write_text(EXAMPLE.read_text() + "\nhub:\n  state_dir: /other\n")
    with pytest.raises(SiteError) as info:
        load_site(f)
    assert 'duplicate key "hub" (first on line' in str(info.value)
    assert re.search(r": line \d+, column 1: ", str(info.value))


def test_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "nope" / "factory.yaml"
    with pytest.raises(SiteError) as info:
        load_site(f)
    assert str(f) in str(info.value)
    assert "no such file" in str(info.value)


def test_load_from_str_path(tmp_path: Path) -> None:
    f = tmp_path / "factory.yaml"
    f.write_text(EXAMPLE.read_text())
    assert len(load_site(str(f)).profiles) == 3


def test_command_line(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "factoryhub.hub.site", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok: 3 profiles"
    bad = tmp_path / "factory.yaml"
    bad.write_text(EXAMPLE.read_text().replace("cpus: 4", "cpus: four"))
    res = subprocess.run(
        [sys.executable, "-m", "factoryhub.hub.site", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert f"{bad}: profiles[1].cpus: expected an integer" in res.stdout + res.stderr


# --------------------------------------------------------------------------- walltime


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:00", 0),
        ("00:00:59", 59),
        ("02:00:00", 7200),
        ("99:59:59", 99 * 3600 + 59 * 60 + 59),
        ("1-00:00:00", 86400),
        ("7-12:30:00", 7 * 86400 + 12 * 3600 + 30 * 60),
    ],
)
def test_walltime_seconds(text: str, seconds: int) -> None:
    assert walltime_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "2:00:00", "02:00", "02:60:00", "1-24:00:00", "02:00:00\n", "-02:00:00", "\uff112:00:00"],
)
def test_walltime_seconds_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        walltime_seconds(text)


def test_walltime_with_trailing_newline_is_refused() -> None:
    # jsonschema's "$" matches before a final newline; the loader still refuses it.
    data = example()
    data["profiles"][0]["walltime"]["max"] = "08:00:00\n"
    err = errors_of(data)
    assert err.paths == ["profiles[0].walltime.max"]
    assert 'got "08:00:00\\n"' in str(err)


# --------------------------------------------------------------------------- properties


def _with_profile_value(key: str, value: Any) -> dict[str, Any]:
    data = example()
    data["profiles"][0][key] = value
    return data


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 10_000)
    .flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, lo + 10_000)))
    .flatmap(lambda t: st.tuples(st.just(t[0]), st.integers(t[0], t[1]), st.just(t[1]))),
    st.integers(0, 64)
    .flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, 64)))
    .flatmap(lambda t: st.tuples(st.just(t[0]), st.integers(t[0], t[1]), st.just(t[1]))),
)
def test_valid_ranges_load(mem: tuple[int, int, int], gpus: tuple[int, int, int]) -> None:
    data = example()
    data["profiles"][0]["memory_gb"] = dict(zip(("min", "default", "max"), mem, strict=True))
    data["profiles"][0]["gpus"] = dict(zip(("min", "default", "max"), gpus, strict=True))
    p = parse_site(data).profiles[0]
    assert (p.memory_gb.min, p.memory_gb.default, p.memory_gb.max) == mem
    assert (p.gpus.min, p.gpus.default, p.gpus.max) == gpus
    assert p.to_config()["memory_gb"] == {"default": mem[1], "min": mem[0], "max": mem[2]}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_any_range_loads_or_names_the_key(lo: int, default: int, hi: int) -> None:
    data = _with_profile_value("gpus", {"default": default, "min": lo, "max": hi})
    if lo <= default <= hi:
        assert parse_site(data).profiles[0].gpus == IntRange(default, lo, hi)
    else:
        with pytest.raises(SiteError) as info:
            parse_site(data)
        assert info.value.paths
        assert all(
            p in ("profiles[0].gpus.min", "profiles[0].gpus.default") for p in info.value.paths
        )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=14), st.from_regex(SLURM_TIME, fullmatch=True)))
def test_any_walltime_string_parses_or_raises_site_error(text: str) -> None:
    # walltime_seconds: an int exactly when the pattern matches, else ValueError
    try:
        seconds = walltime_seconds(text)
    except ValueError:
        assert not SLURM_TIME.fullmatch(text) or not text.isascii()
    else:
        assert SLURM_TIME.fullmatch(text) and text.isascii()
        assert seconds >= 0
    # the loader: loads (and the value is consistent) or SiteError, never anything else
    data = _with_profile_value("walltime", {"default": "00:00:01", "max": text})
    try:
        s = parse_site(data)
    except SiteError as e:
        assert "profiles[0].walltime.max" in e.paths
        assert set(e.paths) <= {"profiles[0].walltime.max", "profiles[0].walltime.default"}
    else:
        assert s.profiles[0].walltime_max == text
        assert walltime_seconds(text) > 0


@settings(max_examples=100)
@given(st.from_regex(SLURM_TIME, fullmatch=True))
def test_walltime_value(text: str) -> None:
    days, _, hms = text.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    assert walltime_seconds(text) == ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def test_projects_name_declared_profiles_and_valid_accounts() -> None:
    data = example()
    data["projects"][1]["profiles"].append("gpu-9")
    data["projects"][2]["account"] = "Ops Team"
    data["projects"][0]["groups"] = ["acme ai"]
    data["projects"].append(dict(data["projects"][0]))
    err = errors_of(data)
    assert err.paths == [
        "projects[0].groups[0]",
        "projects[1].profiles[2]",
        "projects[2].account",
        "projects[3].groups[0]",
        "projects[3].name",
    ]
    assert "expected one of the profiles declared in profiles" in str(err)
    assert "a Slurm account name" in str(err)


def test_oidc_settings_are_required_with_type_oidc() -> None:
    data = example()
    del data["auth"]["oidc"]
    assert lines_of(errors_of(data)) == [
        "factory.yaml: auth.oidc: expected a mapping, got nothing "
        '(the key is missing; required when auth.type is "oidc")'
    ]
    data = example()
    data["auth"]["oidc"]["client_secret"] = "s3cret"
    err = errors_of(data)
    assert err.paths == ["auth.oidc"]
    assert 'unknown key "client_secret"' in str(err)


def test_projects_are_optional() -> None:
    data = example()
    del data["projects"]
    del data["reports"]  # its service_project names a project
    del data["courses"]  # so do its courses
    assert parse_site(data).projects == ()
