"""The site file's JSON Schema: valid, strict, self-contained, and its errors in words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from factoryhub.hub.site import loader as site
from factoryhub.hub.site import schema as site_schema
from factoryhub.spawners.model.slurm_units import SLURM_TIME_PATTERN
from factoryhub.spawners.model.users import POSIX_NAME_PATTERN

from .helpers import EXAMPLE, errors_of, example, lines_of


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
            assert node["pattern"] in site_schema.PATTERN_MEANING, where
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


def test_the_model_shares_the_schemas_patterns() -> None:
    # one rule for POSIX names and for a site file's Slurm time: the Python constants of the
    # leaf model are the schema's own strings
    defs = site.schema()["$defs"]
    assert defs["posixName"]["pattern"] == POSIX_NAME_PATTERN
    assert defs["slurmTime"]["pattern"] == SLURM_TIME_PATTERN


def test_defaults_of_one_definition() -> None:
    entry = {"name": "p", "display_name": "P", "partition": "x", "cpus": 1}
    filled = site_schema.with_defaults_of("profile", entry)
    assert filled["description"] == "" and filled["gpus"] == {"default": 0, "min": 0, "max": 0}
    assert "description" not in entry  # a copy


# --------------------------------------------------------------------------- errors in words


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
