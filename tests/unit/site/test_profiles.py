"""The site file's ``profiles``: the one Profile model, and the checks that span keys (names,
partitions, ranges, walltimes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factoryhub.hub.site.loader import SiteError, load_site, parse_site
from factoryhub.spawners.model.profiles import IntRange
from factoryhub.spawners.model.slurm_units import walltime_seconds

from .helpers import EXAMPLE, SLURM_TIME, errors_of, example, lines_of


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


def test_unknown_profile_key() -> None:
    data = example()
    data["profiles"][2]["gpu"] = 1
    err = errors_of(data)
    assert err.paths == ["profiles[2]"]
    assert str(err).startswith(
        'factory.yaml: profiles[2]: unknown key "gpu" (allowed: name, display_name, description,'
    )


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


def test_walltime_with_trailing_newline_is_refused() -> None:
    # jsonschema's "$" matches before a final newline; the loader still refuses it.
    data = example()
    data["profiles"][0]["walltime"]["max"] = "08:00:00\n"
    err = errors_of(data)
    assert err.paths == ["profiles[0].walltime.max"]
    assert 'got "08:00:00\\n"' in str(err)


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
        assert s.profiles[0].walltime_max == walltime_seconds(text)
        assert walltime_seconds(text) > 0
