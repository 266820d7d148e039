"""The site file's JSON Schema (``schema.json``) and what its errors mean in words.

The schema is the one place the site file's keys, types and defaults are written: the loader
fills omitted keys from its ``default`` annotations (:func:`with_defaults`), the Helm chart's
values schema embeds it, and each :class:`~jsonschema.ValidationError` becomes one
:class:`Problem` that names its key, says what was expected (:data:`PATTERN_MEANING` gives
each pattern in words) and what was found.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from factoryhub.hub.site.problems import Problem, show, show_key
from factoryhub.spawners.model.slurm_units import SLURM_TIME_PATTERN
from factoryhub.spawners.model.users import POSIX_NAME_PATTERN

HERE = Path(__file__).resolve().parent
_SCHEMA_FILE = "schema.json"

SLURM_TIME_WORDS = 'a Slurm time "HH:MM:SS" or "D-HH:MM:SS"'

# What a schema pattern means, in words, for the error messages.
PATTERN_MEANING: dict[str, str] = {
    POSIX_NAME_PATTERN: (
        "a POSIX name (lowercase letters, digits, _ and -, starting with a letter or _, "
        "at most 32 characters)"
    ),
    "^/": "an absolute path (starting with /)",
    SLURM_TIME_PATTERN: SLURM_TIME_WORDS,
    "^https?://[^\\s/?#]+([/?#][^\\s]*)?$": "an http:// or https:// URL",
    "^(|https?://[^\\s/?#]+([/?#][^\\s]*)?)$": "an http:// or https:// URL, or empty",
    "^[a-z][a-z0-9-]{1,30}$": ("2 to 31 lowercase letters, digits and -, starting with a letter"),
    "^[A-Za-z0-9_-]{1,64}$": "a Slurm partition name (1 to 64 letters, digits, _ and -)",
    "^([A-Za-z0-9_.:-]{1,15})?$": (
        "a network interface name (up to 15 letters, digits, _ . : and -), or empty"
    ),
    "^(/|\\{home\\})([^{}]|\\{home\\}|\\{username\\})*$": (
        "an absolute path (starting with / or {home}) that uses no placeholders "
        "but {home} and {username}"
    ),
    "^[a-z0-9][a-z0-9-]{0,31}$": (
        "1 to 32 lowercase letters, digits and -, starting with a letter or digit"
    ),
    "^[A-Za-z0-9][A-Za-z0-9_.:/@+#-]{0,255}$": (
        "a group name (letters, digits and _.:/@+#-, starting with a letter or digit)"
    ),
    "^[!-~]+$": "printable ASCII without spaces",
    "^([a-z_][a-z0-9_-]{0,31})?$": "a POSIX name (as above), or empty",
    "^(\\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$": (
        "* or a report name (a notebook's file name without .ipynb: letters, digits and _.-)"
    ),
    "^[A-Z_][A-Z0-9_]{0,63}$": "an environment variable name (A-Z, 0-9 and _)",
    "^[!-~]{1,64}$": "printable ASCII without spaces, at most 64 characters",
    "^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$": "a host name or IP address",
    "^https?://[^\\s/?#]+/?$": "an http:// or https:// URL with no path",
    "^v0\\.0\\.[0-9]{2}$": "an OpenAPI plugin version such as v0.0.38",
    "^/([^{}]|\\{username\\})*$": ("an absolute path that uses no placeholder but {username}"),
    "^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$": "a claim name (letters, digits and _.:-)",
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}$": "a day written YYYY-MM-DD",
    "^[A-Za-z0-9_./-]{1,256}$": "a program name or path (letters, digits and _./-)",
    "^(/[!-~]+|(docker|oras|library)://[!-~]+)$": (
        "an absolute path to a SIF file, or a docker://, oras:// or library:// reference"
    ),
    "^(/[^:,\\s]*)(:(/[^:,\\s]*))?(:(ro|rw))?$": (
        "a bind: /path, /path:/inside or /path:/inside:ro (absolute paths, no commas or spaces)"
    ),
    "^(https?://|ssh://|git@|file://|/)[!-~]*$": (
        "a git repository (https://, ssh://, git@host:path, file:// or an absolute path)"
    ),
    "^([A-Za-z0-9_./][A-Za-z0-9_./-]{0,127})?$": (
        "a git branch, tag or commit (letters, digits and _./-), or empty"
    ),
    "^([A-Za-z0-9_.-]{1,64})?$": "a Slurm reservation name (letters, digits and _.-), or empty",
    "^[a-z0-9][a-z0-9_-]{0,63}$": (
        "a Slurm account name (lowercase letters, digits, _ and -, at most 64 characters)"
    ),
}


# --------------------------------------------------------------------------- the schema


@functools.cache
def _schema() -> dict[str, Any]:
    with (HERE / _SCHEMA_FILE).open(encoding="utf-8") as f:
        return json.load(f)


def schema() -> dict[str, Any]:
    """The JSON Schema of the site file (a copy; the file is read once)."""
    return copy.deepcopy(_schema())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def _resolve(sub: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (keeping the referring schema's own keywords on top)."""
    ref = sub.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _schema()["$defs"][ref.removeprefix("#/$defs/")]
        merged = dict(_resolve(target))
        merged.update({k: v for k, v in sub.items() if k != "$ref"})
        return merged
    return sub


def _walk(schema_path: Sequence[Any]) -> Mapping[str, Any]:
    """The subschema at ``schema_path`` (as jsonschema reports it, ``$ref`` steps included)."""
    node: Any = _schema()
    for step in schema_path:
        if step == "$ref":
            node = _schema()["$defs"][node["$ref"].removeprefix("#/$defs/")]
        else:
            node = node[step]
    return node if isinstance(node, Mapping) else {}


# --------------------------------------------------------------------------- defaults


def with_defaults(data: Any) -> Any:
    """A copy of the (valid) ``data`` with the schema's defaults filled in for omitted keys."""
    return _with_defaults(_schema(), copy.deepcopy(data))


def with_defaults_of(definition: str, data: Any) -> Any:
    """A copy of ``data``, one value of the schema's ``$defs/<definition>`` (a profile, a
    project, ...), with the schema's defaults filled in: for code and tests that build one
    model object without a whole site file."""
    return _with_defaults({"$ref": f"#/$defs/{definition}"}, copy.deepcopy(data))


def _with_defaults(sub: Mapping[str, Any], value: Any) -> Any:
    """Fill in the schema's ``default`` for omitted keys, recursively (``value`` is changed)."""
    sub = _resolve(sub)
    if isinstance(value, dict):
        for key, prop in sub.get("properties", {}).items():
            prop_r = _resolve(prop)
            if key not in value and "default" in prop_r:
                value[key] = copy.deepcopy(prop_r["default"])
            if key in value:
                value[key] = _with_defaults(prop, value[key])
    elif isinstance(value, list) and isinstance(sub.get("items"), Mapping):
        return [_with_defaults(sub["items"], v) for v in value]
    return value


# --------------------------------------------------------------------------- paths


def format_path(parts: Iterable[Any]) -> str:
    """``profiles[1].memory_gb.default`` for the parts profiles, 1, memory_gb, default."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p) if isinstance(p, str) else p!r}]"
    return out


def path_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a formatted path: profiles[2] before profiles[10], a key before its children."""
    key: list[tuple[int, int | str]] = []
    for name, index, quoted in re.findall(
        r'([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("[^"]*"|[^]]*)\]', path
    ):
        if index:
            key.append((0, int(index)))
        else:
            key.append((1, name or quoted))
    return tuple(key)


# --------------------------------------------------------------------------- words


def describe(sub: Mapping[str, Any]) -> str:
    """What a (sub)schema expects, in words."""
    sub = _resolve(sub)
    if "const" in sub:
        return json.dumps(sub["const"])
    if "enum" in sub:
        values = ", ".join(json.dumps(v) for v in sub["enum"])
        return f"one of {values}" if len(sub["enum"]) > 1 else values
    kind = sub.get("type")
    if kind == "integer":
        return _describe_integer(sub.get("minimum"), sub.get("maximum"))
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return _describe_string(sub)
    if kind == "array":
        text = "a non-empty list" if sub.get("minItems", 0) >= 1 else "a list"
        if sub.get("uniqueItems"):
            text += " without duplicates"
        items = sub.get("items")
        if isinstance(items, Mapping):
            text += f" of {_plural(describe(items))}"
        return text
    if kind == "object":
        return "a mapping"
    return "a valid value"


def _describe_integer(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}"
    if lo is not None:
        return f"an integer ≥ {lo}"
    if hi is not None:
        return f"an integer ≤ {hi}"
    return "an integer"


def _describe_string(sub: Mapping[str, Any]) -> str:
    pattern = sub.get("pattern")
    if pattern is not None:
        return PATTERN_MEANING.get(pattern, f"a string matching {pattern}")
    lo, hi = sub.get("minLength"), sub.get("maxLength")
    if lo and hi is not None:
        return f"a string of {lo} to {hi} characters"
    if hi is not None:
        return f"a string of at most {hi} characters"
    if lo:
        return f"a string of at least {lo} characters"
    return "a string"


def _plural(text: str) -> str:
    # "a POSIX name (...)" -> "POSIX names (...)"; good enough for list descriptions.
    head, sep, tail = text.partition(" (")
    for article in ("an ", "a "):
        if head.startswith(article):
            head = head[len(article) :]
            if not head.endswith("s"):
                head += "s"
            break
    return head + sep + tail


# --------------------------------------------------------------------------- schema errors


def schema_problems(data: Any) -> list[Problem]:
    """A problem for every way ``data`` fails the schema, each naming its key."""
    problems: list[Problem] = []
    for err in _validator().iter_errors(data):
        problems.extend(_problems_of(err))
    return problems


def _problems_of(err: jsonschema.ValidationError) -> list[Problem]:
    path = list(err.absolute_path)
    where = format_path(path)
    sub: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    inst = err.instance
    kw = err.validator

    if kw == "additionalProperties" and isinstance(inst, Mapping):
        allowed = list(_resolve(sub).get("properties", {}))
        return [
            Problem(where, f"unknown key {show_key(k)} (allowed: {', '.join(allowed)})")
            for k in inst
            if k not in allowed
        ]
    if kw == "required" and isinstance(inst, Mapping):
        return _missing_keys(err, path, sub, inst)
    if kw == "uniqueItems" and isinstance(inst, list):
        dups: list[Any] = []
        for i, item in enumerate(inst):
            if item in inst[:i] and item not in dups:
                dups.append(item)
        shown = ", ".join(show(d) for d in dups)
        return [Problem(where, f"expected {describe(sub)}, got duplicates: {shown}")]
    if kw in ("maxLength", "minLength") and isinstance(inst, str):
        return [Problem(where, f"expected {describe(sub)}, got a string of {len(inst)} characters")]
    if not path and kw == "type":
        sections = ", ".join(_schema()["properties"])
        return [Problem(where, f"expected a mapping with the keys {sections}, got {show(inst)}")]
    msg = f"expected {describe(sub)}, got {show(inst)}"
    if (
        kw == "type"
        and isinstance(inst, int)
        and not isinstance(inst, bool)
        and _resolve(sub).get("pattern") == SLURM_TIME_PATTERN
    ):
        msg += " (put the time in quotes: YAML reads an unquoted 02:00:00 as a number)"
    return [Problem(where, msg)]


def _missing_keys(
    err: jsonschema.ValidationError,
    path: list[Any],
    sub: Mapping[str, Any],
    inst: Mapping[str, Any],
) -> list[Problem]:
    """One problem per required key missing, saying why it is required when an ``if``/``then``
    on a sibling's value requires it (auth.type: local requires auth.local)."""
    props = _resolve(sub).get("properties", {})
    reason = ""
    schema_path = list(err.absolute_schema_path)
    if "then" in schema_path:
        cut = len(schema_path) - schema_path[::-1].index("then") - 1
        holder = _walk(schema_path[:cut])
        # the keys' own schemas: on the object that holds the allOf/if/then
        for end in range(cut, -1, -1):
            props = _resolve(_walk(schema_path[:end])).get("properties", {})
            if props:
                break
        cond = holder.get("if", {}).get("properties", {})
        reason = " and ".join(
            f"{format_path([*path, k])} is {json.dumps(v['const'])}"
            for k, v in cond.items()
            if isinstance(v, Mapping) and "const" in v
        )
    out = []
    required = err.validator_value if isinstance(err.validator_value, list) else []
    for key in required:
        if key in inst:
            continue
        expected = describe(props[key]) if key in props else "a value"
        why = f"; required when {reason}" if reason else ""
        msg = f"expected {expected}, got nothing (the key is missing{why})"
        out.append(Problem(format_path([*path, key]), msg))
    return out
