"""The chart's values.schema.json: generated from the site file's schema, never drifting from it.

These tests need no helm: the drift check runs wherever the unit tests run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from .helm_tools import ALL_OPTIONS, CHART, REPO

SITE_SCHEMA = REPO / "hub" / "site" / "schema.json"
CHART_PART = REPO / "helm" / "chart-values.schema.json"
VALUES_SCHEMA = CHART / "values.schema.json"


def _load_generator() -> ModuleType:
    # By path: the virtualenv holds a non-editable install that may be older than the tree.
    spec = importlib.util.spec_from_file_location(
        "factoryhub_chart_schema_under_test", REPO / "local" / "chart_schema.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _values_schema() -> dict[str, Any]:
    return _json(VALUES_SCHEMA)


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON pointer, subschema) of every subschema that describes an object."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}/{i}")


def test_values_schema_is_generated_from_the_site_schema() -> None:
    """The committed values.schema.json is exactly what `make chart-schema` writes now."""
    expected = gen.generate(REPO)
    assert VALUES_SCHEMA.read_text(encoding="utf-8") == expected, (
        "helm/factoryhub/values.schema.json is out of date with hub/site/schema.json or "
        "helm/chart-values.schema.json: run `make chart-schema`"
    )


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for rel in (gen.SITE_SCHEMA, gen.CHART_PART):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text())
    (tmp_path / gen.VALUES_SCHEMA).parent.mkdir(parents=True)
    assert gen.main(["--repo", str(tmp_path), "--check"]) == 1
    assert "make chart-schema" in capsys.readouterr().err
    assert gen.main(["--repo", str(tmp_path)]) == 0
    assert gen.main(["--repo", str(tmp_path), "--check"]) == 0
    # A change of the site schema is drift.
    site = _json(tmp_path / gen.SITE_SCHEMA)
    site["properties"]["hub"]["properties"]["new_key"] = {"type": "string"}
    (tmp_path / gen.SITE_SCHEMA).write_text(json.dumps(site))
    assert gen.main(["--repo", str(tmp_path), "--check"]) == 1


def test_site_part_is_the_site_schema_with_its_defs_moved() -> None:
    values = _values_schema()
    site = _json(SITE_SCHEMA)
    prefix = gen.SITE_PREFIX

    def unprefix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (v.replace(f"#/$defs/{prefix}", "#/$defs/") if k == "$ref" else unprefix(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [unprefix(v) for v in node]
        return node

    got = unprefix(copy.deepcopy(values["properties"]["site"]))
    want = {k: v for k, v in site.items() if k not in ("$defs", "$schema", "title")}
    got.pop("description")
    want.pop("description")
    assert got == want
    for name, sub in site["$defs"].items():
        assert unprefix(values["$defs"][prefix + name]) == sub


def test_every_ref_resolves() -> None:
    values = _values_schema()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(values)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in values["$defs"], ref
    jsonschema.Draft202012Validator.check_schema(values)


def test_chart_part_refuses_unknown_keys_at_every_level() -> None:
    """additionalProperties false everywhere in the chart's own part, except the objects
    passed to Kubernetes as they are ($defs k8s*, checked by Kubernetes) and Helm's global."""
    chart = _json(CHART_PART)
    assert chart["additionalProperties"] is False
    open_ones = []
    for pointer, sub in _objects(chart):
        ap = sub.get("additionalProperties")
        if ap is False or isinstance(ap, dict):
            continue  # closed, or a map whose values have a schema (labels, quantities)
        open_ones.append(pointer)
    assert sorted(open_ones) == sorted(
        ["#/properties/global"]
        + [f"#/$defs/{name}" for name in chart["$defs"] if name.startswith("k8s")]
    )


def test_site_schema_refuses_unknown_keys_too() -> None:
    for pointer, sub in _objects(_json(SITE_SCHEMA)):
        if pointer.endswith(("/if", "/then")) or "/allOf/" in pointer:
            continue  # conditions, not object definitions
        assert sub.get("additionalProperties") is False, pointer


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_values_schema())


def _chart_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_default_and_all_options_values_are_valid() -> None:
    v = _validator()
    defaults = _chart_values(CHART / "values.yaml")
    assert list(v.iter_errors(defaults)) == []
    # Helm merges a values file over the defaults; the all-options file is also complete alone.
    assert list(v.iter_errors(_chart_values(ALL_OPTIONS))) == []
    examples = sorted((REPO / "helm" / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        assert list(v.iter_errors(_merge(defaults, _chart_values(example)))) == [], example


def test_the_site_part_takes_the_example_site_file() -> None:
    """The packaged example site (local access mode) is a valid `site:` as far as the schema
    goes: the references into the moved $defs work (the chart itself refuses local access)."""
    example = yaml.load(
        (REPO / "hub" / "factory.example.yaml").read_text(),
        Loader=_NoDates,
    )
    assert list(_validator().iter_errors({"site": example})) == []


class _NoDates(yaml.SafeLoader):
    """Days stay text, as in the hub's loader."""


_NoDates.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"bogus": 1}, "bogus"),
        ({"site": {"slurm": {"acces": "rest"}}}, "acces"),
        ({"site": {"slurm": {"access": "ssh"}}}, "ssh"),
        ({"persistence": {"enabled": "yes"}}, "yes"),
        ({"networkPolicy": {"computeNodes": {"cidrs": ["10.0.0.0/33"]}}}, "10.0.0.0/33"),
        ({"hub": {"resources": {"limit": {"cpu": 1}}}}, "limit"),
    ],
)
def test_bad_values_fail_the_schema(values: dict[str, Any], where: str) -> None:
    merged = _merge(_chart_values(CHART / "values.yaml"), values)
    errors = list(_validator().iter_errors(merged))
    assert errors
    assert any(where in e.message for e in errors), [e.message for e in errors]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_build_refuses_a_defs_clash() -> None:
    site = {"type": "object", "$defs": {"x": {"type": "string"}}}
    chart = {"type": "object", "properties": {}, "$defs": {"site.x": {"type": "string"}}}
    with pytest.raises(gen.SchemaError, match=r"site\.x"):
        gen.build(site, chart)


def test_build_refuses_a_dangling_ref() -> None:
    site = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "$defs": {}}
    with pytest.raises(gen.SchemaError, match="missing"):
        gen.build(site, {"type": "object", "properties": {}})
