"""What is wrong with a site file, in words: the schema check and the checks that span keys.

Every problem names its key path (``profiles[1].memory_gb.default``), says what was
expected and what was found; all problems are collected, not just the first.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from factoryhub.hub.site.access import access_problems
from factoryhub.hub.site.courses import courses_problems
from factoryhub.hub.site.dask import dask_problems
from factoryhub.hub.site.reports import reports_problems

_HERE = Path(__file__).resolve().parent
_SCHEMA_FILE = "schema.json"
# The example site file stays beside jupyterhub_config.py, where operators look for it.
_EXAMPLE_FILE = "factory.example.yaml"

# Slurm time strings: HH:MM:SS or D-HH:MM:SS (the same pattern as $defs/slurmTime).
_WALLTIME = re.compile(
    r"(?:(?P<d>[0-9]{1,3})-(?P<h1>[01][0-9]|2[0-3])|(?P<h2>[0-9]{2})):(?P<m>[0-5][0-9]):(?P<s>[0-5][0-9])",
    re.ASCII,
)

_SLURM_TIME = 'a Slurm time "HH:MM:SS" or "D-HH:MM:SS"'

# What a schema pattern means, in words, for the error messages.
_PATTERN_MEANING: dict[str, str] = {
    "^[a-z_][a-z0-9_-]{0,31}$": (
        "a POSIX name (lowercase letters, digits, _ and -, starting with a letter or _, "
        "at most 32 characters)"
    ),
    "^/": "an absolute path (starting with /)",
    "^([0-9]{1,3}-([01][0-9]|2[0-3])|[0-9]{2}):[0-5][0-9]:[0-5][0-9]$": _SLURM_TIME,
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


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One problem in the site file: the key path (``""`` = the whole file) and what is wrong."""

    path: str
    message: str

    def line(self, source: str) -> str:
        return (
            f"{source}: {self.path}: {self.message}" if self.path else f"{source}: {self.message}"
        )


class SiteError(Exception):
    """The site file cannot be used. ``str(err)`` is one line per problem, each naming its key."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(p.line(source) for p in self.problems))

    @property
    def paths(self) -> list[str]:
        """The key paths named, in the order reported."""
        return [p.path for p in self.problems]


# --------------------------------------------------------------------------- schema


def walltime_seconds(s: str) -> int:
    """Seconds of a Slurm time string ``HH:MM:SS`` or ``D-HH:MM:SS``; ValueError if malformed."""
    m = _WALLTIME.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise ValueError(f'expected a Slurm time "HH:MM:SS" or "D-HH:MM:SS", got {s!r}')
    days = int(m["d"] or 0)
    hours = int(m["h1"] if m["h1"] is not None else m["h2"])
    return ((days * 24 + hours) * 60 + int(m["m"])) * 60 + int(m["s"])


@functools.cache
def _schema() -> dict[str, Any]:
    with (_HERE / _SCHEMA_FILE).open(encoding="utf-8") as f:
        return json.load(f)


def schema() -> dict[str, Any]:
    """The JSON Schema of the site file (a copy; the file is read once)."""
    return copy.deepcopy(_schema())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def _format_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p) if isinstance(p, str) else p!r}]"
    return out


def _path_key(path: str) -> tuple[tuple[int, int | str], ...]:
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


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


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


def _show(value: Any) -> str:
    """A found value, short, for 'got ...'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 72 else text[:68] + '…" (' + f"{len(value)} characters)"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__} ({value!r:.60})"


def _describe(sub: Mapping[str, Any]) -> str:
    """What a (sub)schema expects, in words."""
    sub = _resolve(sub)
    if "const" in sub:
        return json.dumps(sub["const"])
    if "enum" in sub:
        values = ", ".join(json.dumps(v) for v in sub["enum"])
        return f"one of {values}" if len(sub["enum"]) > 1 else values
    kind = sub.get("type")
    if kind == "integer":
        lo, hi = sub.get("minimum"), sub.get("maximum")
        if lo is not None and hi is not None:
            return f"an integer from {lo} to {hi}"
        if lo is not None:
            return f"an integer ≥ {lo}"
        if hi is not None:
            return f"an integer ≤ {hi}"
        return "an integer"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        pattern = sub.get("pattern")
        if pattern is not None:
            return _PATTERN_MEANING.get(pattern, f"a string matching {pattern}")
        lo, hi = sub.get("minLength"), sub.get("maxLength")
        if lo and hi is not None:
            return f"a string of {lo} to {hi} characters"
        if hi is not None:
            return f"a string of at most {hi} characters"
        if lo:
            return f"a string of at least {lo} characters"
        return "a string"
    if kind == "array":
        text = "a non-empty list" if sub.get("minItems", 0) >= 1 else "a list"
        if sub.get("uniqueItems"):
            text += " without duplicates"
        items = sub.get("items")
        if isinstance(items, Mapping):
            text += f" of {_plural(_describe(items))}"
        return text
    if kind == "object":
        return "a mapping"
    return "a valid value"


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


def _schema_problems(data: Any) -> list[Problem]:
    problems: list[Problem] = []
    for err in _validator().iter_errors(data):
        problems.extend(_problems_of(err))
    return problems


def _problems_of(err: jsonschema.ValidationError) -> list[Problem]:
    path = list(err.absolute_path)
    where = _format_path(path)
    sub: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    inst = err.instance
    kw = err.validator

    if kw == "additionalProperties" and isinstance(inst, Mapping):
        allowed = list(_resolve(sub).get("properties", {}))
        extra = [k for k in inst if k not in allowed]
        return [
            Problem(where, f"unknown key {_show_key(k)} (allowed: {', '.join(allowed)})")
            for k in extra
        ]
    if kw == "required" and isinstance(inst, Mapping):
        out = []
        props = _resolve(sub).get("properties", {})
        reason = ""
        schema_path = list(err.absolute_schema_path)
        if "then" in schema_path:
            # if/then on a sibling's value, e.g. auth.type: local requires auth.local
            cut = len(schema_path) - schema_path[::-1].index("then") - 1
            holder = _walk(schema_path[:cut])
            # the keys' own schemas: on the object that holds the allOf/if/then
            for end in range(cut, -1, -1):
                props = _resolve(_walk(schema_path[:end])).get("properties", {})
                if props:
                    break
            cond = holder.get("if", {}).get("properties", {})
            reason = " and ".join(
                f"{_format_path([*path, k])} is {json.dumps(v['const'])}"
                for k, v in cond.items()
                if isinstance(v, Mapping) and "const" in v
            )
        for key in err.validator_value:
            if key in inst:
                continue
            expected = _describe(props[key]) if key in props else "a value"
            why = f"; required when {reason}" if reason else ""
            msg = f"expected {expected}, got nothing (the key is missing{why})"
            out.append(Problem(_format_path([*path, key]), msg))
        return out
    if kw == "uniqueItems" and isinstance(inst, list):
        dups: list[Any] = []
        for i, item in enumerate(inst):
            if item in inst[:i] and item not in dups:
                dups.append(item)
        shown = ", ".join(_show(d) for d in dups)
        return [Problem(where, f"expected {_describe(sub)}, got duplicates: {shown}")]
    if kw in ("maxLength", "minLength") and isinstance(inst, str):
        return [
            Problem(where, f"expected {_describe(sub)}, got a string of {len(inst)} characters")
        ]
    if kw == "minItems" and isinstance(inst, list):
        return [Problem(where, f"expected {_describe(sub)}, got {_show(inst)}")]

    if not path and kw == "type":
        sections = ", ".join(_schema()["properties"])
        return [Problem(where, f"expected a mapping with the keys {sections}, got {_show(inst)}")]
    msg = f"expected {_describe(sub)}, got {_show(inst)}"
    if (
        kw == "type"
        and isinstance(inst, int)
        and not isinstance(inst, bool)
        and _resolve(sub).get("pattern") == _schema()["$defs"]["slurmTime"]["pattern"]
    ):
        msg += " (put the time in quotes: YAML reads an unquoted 02:00:00 as a number)"
    return [Problem(where, msg)]


def _show_key(key: Any) -> str:
    return json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)


# --------------------------------------------------------------------------- cross-key checks


def _is_int(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()


def _cross_problems(data: Any) -> list[Problem]:
    """Checks the schema cannot express. Defensive: runs on data that may have failed the schema."""
    if not isinstance(data, Mapping):
        return []
    problems: list[Problem] = []

    partitions = (
        (data.get("slurm") or {}).get("partitions")
        if isinstance(data.get("slurm"), Mapping)
        else None
    )
    declared: list[str] = []
    if isinstance(partitions, list):
        problems += _unique_names(partitions, "slurm.partitions", "partition")
        declared = list(
            dict.fromkeys(
                p["name"]
                for p in partitions
                if isinstance(p, Mapping) and isinstance(p.get("name"), str)
            )
        )

    profiles = data.get("profiles")
    if not isinstance(profiles, list):
        return problems
    problems += _unique_names(profiles, "profiles", "profile")
    for i, prof in enumerate(profiles):
        if not isinstance(prof, Mapping):
            continue
        here = f"profiles[{i}]"
        part = prof.get("partition")
        if isinstance(part, str) and isinstance(partitions, list) and part not in declared:
            names = ", ".join(declared) or "none"
            problems.append(
                Problem(
                    f"{here}.partition",
                    f"expected one of the partitions declared in slurm.partitions ({names}), "
                    f"got {_show(part)}",
                )
            )
        for key in ("memory_gb", "gpus"):
            rng = prof.get(key)
            if isinstance(rng, Mapping):
                problems += _range_problems(rng, f"{here}.{key}")
        wall = prof.get("walltime")
        if isinstance(wall, Mapping):
            problems += _walltime_problems(wall, f"{here}.walltime")
    problems += _project_problems(data.get("projects"), profiles)
    names = [
        p["name"] for p in profiles if isinstance(p, Mapping) and isinstance(p.get("name"), str)
    ]
    problems += [
        Problem(path, msg) for path, msg in dask_problems(data.get("dask"), declared, names)
    ]
    projects = data.get("projects")
    project_names = [
        p["name"]
        for p in (projects if isinstance(projects, list) else ())
        if isinstance(p, Mapping) and isinstance(p.get("name"), str)
    ]
    problems += [
        Problem(path, msg)
        for path, msg in reports_problems(data.get("reports"), declared, project_names)
    ]
    problems += [
        Problem(path, msg)
        for path, msg in courses_problems(data.get("courses"), names, project_names)
    ]
    problems += [Problem(path, msg) for path, msg in access_problems(data)]
    return problems


def _project_problems(projects: Any, profiles: list[Any]) -> list[Problem]:
    """Project names are unique and name only declared profiles."""
    if not isinstance(projects, list):
        return []
    problems = _unique_names(projects, "projects", "project")
    known = [
        p["name"] for p in profiles if isinstance(p, Mapping) and isinstance(p.get("name"), str)
    ]
    for i, project in enumerate(projects):
        names = project.get("profiles") if isinstance(project, Mapping) else None
        if not isinstance(names, list):
            continue
        for j, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                problems.append(
                    Problem(
                        f"projects[{i}].profiles[{j}]",
                        f"expected one of the profiles declared in profiles "
                        f"({', '.join(known) or 'none'}), got {_show(name)}",
                    )
                )
    return problems


def _unique_names(items: list[Any], where: str, what: str) -> list[Problem]:
    first: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        name = item["name"]
        if name in first:
            out.append(
                Problem(
                    f"{where}[{i}].name",
                    f"expected a unique {what} name, got {_show(name)} "
                    f"(already used by {where}[{first[name]}])",
                )
            )
        else:
            first[name] = i
    return out


def _range_problems(rng: Mapping[str, Any], where: str) -> list[Problem]:
    lo, default, hi = rng.get("min"), rng.get("default"), rng.get("max")
    out = []
    if _is_int(lo) and _is_int(hi) and lo > hi:
        out.append(Problem(f"{where}.min", f"expected at most max ({hi:g}), got {lo:g}"))
    if _is_int(default):
        if _is_int(lo) and default < lo:
            out.append(
                Problem(f"{where}.default", f"expected at least min ({lo:g}), got {default:g}")
            )
        if _is_int(hi) and default > hi:
            out.append(
                Problem(f"{where}.default", f"expected at most max ({hi:g}), got {default:g}")
            )
    return out


def _walltime_problems(wall: Mapping[str, Any], where: str) -> list[Problem]:
    seconds: dict[str, int] = {}
    out = []
    for key in ("default", "max"):
        value = wall.get(key)
        if not isinstance(value, str):
            continue  # missing or wrong type: the schema reports it
        try:
            seconds[key] = walltime_seconds(value)
        except ValueError:
            out.append(Problem(f"{where}.{key}", f"expected {_SLURM_TIME}, got {_show(value)}"))
            continue
        if seconds[key] <= 0:
            out.append(
                Problem(f"{where}.{key}", f"expected a time longer than zero, got {_show(value)}")
            )
    if "default" in seconds and "max" in seconds and seconds["default"] > seconds["max"]:
        out.append(
            Problem(
                f"{where}.default",
                f"expected at most max ({wall['max']}), got {_show(wall['default'])}",
            )
        )
    return out


# --------------------------------------------------------------------------- defaults + build


# --------------------------------------------------------------------------- entry points


def find_problems(data: Any) -> list[Problem]:
    """Every problem of the parsed site file ``data``, sorted by key path (empty: it is fine)."""
    problems = _schema_problems(data)
    seen = {p.path for p in problems}
    problems += [p for p in _cross_problems(data) if p.path not in seen]
    return _dedupe(sorted(problems, key=lambda p: (_path_key(p.path), p.message)))


def with_defaults(data: Any) -> Any:
    """A copy of the (valid) ``data`` with the schema's defaults filled in for omitted keys."""
    return _with_defaults(_schema(), copy.deepcopy(data))


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
