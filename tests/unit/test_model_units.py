"""The leaf model's shared parsers and formatters: Slurm times, memory sizes, user templates
and POSIX names."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factoryhub.spawners.model.slurm_units import (
    memory_mb,
    parse_slurm_time,
    parse_walltime,
    slurm_minutes,
    walltime_seconds,
)
from factoryhub.spawners.model.users import fill_user_template, is_posix_name

from .site.helpers import SLURM_TIME

# --------------------------------------------------------------------------- the site's times


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


@settings(max_examples=100)
@given(st.from_regex(SLURM_TIME, fullmatch=True))
def test_walltime_value(text: str) -> None:
    days, _, hms = text.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    assert walltime_seconds(text) == ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


# --------------------------------------------------------------------------- Slurm's own forms


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30 * 60),  # M
        ("1:30", 90),  # M:S
        ("02:00:00", 7200),  # H:M:S
        ("2-00", 2 * 86400),  # D-H
        ("1-01:01", 86400 + 3600 + 60),  # D-H:M
        ("0-00:00:01", 1),  # D-H:M:S
    ],
)
def test_slurm_forms(text: str, seconds: int) -> None:
    assert parse_slurm_time(text) == seconds


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("1:30", 2), ("02:00:00", 120), ("2-00", 2880), ("1-01:01", 1501),
     ("0-00:00:01", 1)],
)  # fmt: skip
def test_slurm_minutes_round_up(text: str, minutes: int) -> None:
    assert slurm_minutes(text) == minutes


@pytest.mark.parametrize(
    "text",
    ["", "1-24:00", "1:60", "-1", "1h", "01:00:00\n", " 30", "+30", "\uff13\uff10", "1:2:3:4"],
)
def test_not_slurm_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_slurm_time(text)


# --------------------------------------------------------------------------- what people type


def test_people_write_hours_and_minutes() -> None:
    # two fields are hours and minutes for people (Slurm would read minutes and seconds)
    assert parse_walltime("03:30") == 3 * 3600 + 30 * 60
    assert parse_slurm_time("03:30") == 3 * 60 + 30
    assert parse_walltime("1-02:00") == 26 * 3600
    assert parse_walltime("100:00:00") == 100 * 3600


@pytest.mark.parametrize("text", ["30", "1-02", "1000:00", "1-24:00", "2h", "02:00\n"])
def test_what_people_may_not_type(text: str) -> None:
    with pytest.raises(ValueError):
        parse_walltime(text)


@settings(max_examples=200)
@given(st.from_regex(SLURM_TIME, fullmatch=True))
def test_a_site_time_reads_the_same_in_every_form(text: str) -> None:
    assert walltime_seconds(text) == parse_walltime(text) == parse_slurm_time(text)


# --------------------------------------------------------------------------- memory


def test_memory_sizes() -> None:
    assert [memory_mb(v) for v in ("512", "512M", "2G", "1T", "2048K", "2gb", " 500M ")] == [
        512,
        512,
        2048,
        1024 * 1024,
        2,
        2048,
        500,
    ]
    assert memory_mb("512K") == 1  # at least one MB
    for bad in ("lots", "", "1.5G", "-1G", "\uff12G", "2 G"):
        with pytest.raises(ValueError):
            memory_mb(bad)


# --------------------------------------------------------------------------- users


def test_user_templates_fill_exactly_home_and_username() -> None:
    assert (
        fill_user_template("{home}/logs/{username}", username="ada", home="/home/ada")
        == "/home/ada/logs/ada"
    )
    # only the user name: {home} stays
    assert fill_user_template("/home/{username}", username="ada") == "/home/ada"
    assert fill_user_template("{home}/x", username="ada") == "{home}/x"
    # not str.format: other braces stay, and nothing filled in is read again
    assert fill_user_template("/x/{0}/{username.__class__}/{}", username="ada") == (
        "/x/{0}/{username.__class__}/{}"
    )
    assert fill_user_template("{home}/{username}", username="{home}", home="/h/{username}") == (
        "/h/{username}/{home}"
    )


@pytest.mark.parametrize(
    ("name", "ok"),
    [("ada", True), ("_svc", True), ("a-b_1", True), ("a" * 32, True), ("a" * 33, False),
     ("Ada", False), ("1ada", False), ("ada\n", False), ("", False), (None, False),
     ("ad a", False)],
)  # fmt: skip
def test_posix_names(name: object, ok: bool) -> None:
    assert is_posix_name(name) is ok


# --------------------------------------------------------------------------- a leaf


def test_the_model_is_a_leaf() -> None:
    # the model imports the standard library and itself only: hub and spawner code both
    # stand on it, never the other way round
    folder = Path(__file__).resolve().parents[2] / "spawners" / "model"
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                found = [node.module or ""]
            else:
                continue
            for name in found:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith(
                    "factoryhub.spawners.model"
                ), f"{path.name} imports {name}"
