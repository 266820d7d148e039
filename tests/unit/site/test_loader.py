"""The site file as a whole: the example, defaults filled in, every problem at once and sorted,
files and YAML, the command line."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import SiteError, load_site, parse_site
from factoryhub.spawners.model.profiles import IntRange

from .helpers import EXAMPLE, errors_of, example, lines_of


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


def test_unknown_top_level_key() -> None:
    data = example()
    data["hubb"] = {}
    err = errors_of(data)
    assert lines_of(err) == [
        'factory.yaml: unknown key "hubb" '
        "(allowed: hub, auth, slurm, spawner, profiles, projects, idle_culler, dask, reports, "
        "courses)"
    ]


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


@pytest.mark.process
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
