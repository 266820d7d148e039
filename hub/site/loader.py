"""The site file (``factory.yaml``): reading, checking and building its typed :class:`Site`.

The file is checked in two steps and every problem is reported at once, one per
line, each naming its key (``profiles[1].memory_gb.default``):

1. against the JSON Schema ``schema.json`` (draft 2020-12, :mod:`.schema`), which is also
   the Helm chart's values schema, so it stays self-contained;
2. by the checks that span keys, each in its section's module (:mod:`.profiles`: a
   profile's partition is declared in ``slurm.partitions``, names are unique,
   ``min <= default <= max``, the walltime ``default <= max``; :mod:`.projects`,
   :mod:`.dask`, :mod:`.reports`, :mod:`.courses`, :mod:`.access`, ...).

Defaults for omitted optional keys come from the schema's ``default`` annotations only
(:func:`~.schema.with_defaults`); each section's module builds its settings from the filled-in
section, and the profiles, projects and courses are the leaf model's objects.

Command line: ``python -m factoryhub.hub.site check PATH`` prints ``ok: N profiles``
or the errors (on stderr) and exits 1; ``python -m factoryhub.hub.site schema``
prints the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from factoryhub.hub.site.access import access_problems
from factoryhub.hub.site.auth import build_auth
from factoryhub.hub.site.courses import build_courses, courses_problems
from factoryhub.hub.site.culler import build_idle_culler
from factoryhub.hub.site.dask import build_dask, dask_problems
from factoryhub.hub.site.hub import build_hub
from factoryhub.hub.site.model import Site
from factoryhub.hub.site.problems import Problem, SiteError, show_key
from factoryhub.hub.site.profiles import build_profiles, profiles_problems
from factoryhub.hub.site.projects import build_projects, projects_problems
from factoryhub.hub.site.reports import build_reports, reports_problems
from factoryhub.hub.site.schema import (
    HERE,
    path_key,
    schema,
    schema_problems,
    with_defaults,
)
from factoryhub.hub.site.slurm import build_slurm, slurm_problems
from factoryhub.hub.site.spawner import build_spawner

__all__ = [
    "Problem",
    "Site",
    "SiteError",
    "build_site",
    "example_site_path",
    "find_problems",
    "load_site",
    "main",
    "parse_site",
    "schema",
]

# The example site file stays beside jupyterhub_config.py, where operators look for it.
_EXAMPLE_FILE = "factory.example.yaml"

# The checks that span keys, section by section (each defensive: the file may have failed
# the schema). The sections after profiles name profiles, so they wait for a list of them.
_BASE_CHECKS = (slurm_problems,)
_CHECKS_ON_PROFILES = (
    profiles_problems,
    projects_problems,
    dask_problems,
    reports_problems,
    courses_problems,
    access_problems,
)

# --------------------------------------------------------------------------- public functions


def example_site_path() -> Path:
    """The packaged ``factory.example.yaml`` (the local factory's embedded default)."""
    return HERE.parent / _EXAMPLE_FILE


def load_site(path: str | Path) -> Site:
    """Read, check and return the site file at ``path``; SiteError names every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteError(source, [Problem("", f"no such file: {source}")]) from None
    except IsADirectoryError:
        raise SiteError(source, [Problem("", f"is a directory, not a file: {source}")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SiteError(source, [Problem("", f"cannot read {source}: {e}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(str(x) for x in (e.context, e.problem) if x)
        raise SiteError(source, [Problem("", f"{where}YAML syntax error: {what}")]) from None
    except yaml.YAMLError as e:
        raise SiteError(source, [Problem("", f"YAML syntax error: {e}")]) from None
    return parse_site(data, source)


def parse_site(data: Any, source: str = "factory.yaml") -> Site:
    """Check the already-parsed site file ``data`` and return its typed view."""
    problems = find_problems(data)
    if problems:
        raise SiteError(source, problems)
    return build_site(with_defaults(data))


def find_problems(data: Any) -> list[Problem]:
    """Every problem of the parsed site file ``data``, sorted by key path (empty: it is fine)."""
    problems = schema_problems(data)
    seen = {p.path for p in problems}
    checks = list(_BASE_CHECKS)
    if isinstance(data, Mapping) and isinstance(data.get("profiles"), list):
        checks += _CHECKS_ON_PROFILES
    problems += [p for check in checks for p in check(data) if p.path not in seen]
    unique = list(dict.fromkeys(sorted(problems, key=lambda p: (path_key(p.path), p.message))))
    return unique


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:
                continue  # unhashable key: construct_mapping reports it below
            if dup:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {show_key(key)} "
                    f"(first on line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# Days stay text ("2026-11-23"): the schema checks them, as it would a quoted value.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _StrictLoader.construct_mapping,
)


# --------------------------------------------------------------------------- build


def build_site(d: dict[str, Any]) -> Site:
    """The typed view of a valid site file ``d`` with its defaults filled in."""
    partitions = [p["name"] for p in d["slurm"]["partitions"]]
    return Site(
        hub=build_hub(d["hub"]),
        auth=build_auth(d["auth"]),
        slurm=build_slurm(d["slurm"]),
        spawner=build_spawner(d["spawner"]),
        profiles=build_profiles(d["profiles"]),
        projects=build_projects(d["projects"]),
        idle_culler=build_idle_culler(d["idle_culler"]),
        dask=build_dask(d["dask"]),
        reports=build_reports(d["reports"], partitions),
        courses=build_courses(d["courses"], {p["name"]: p["account"] for p in d["projects"]}),
        raw=d,
    )


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m factoryhub.hub.site", description="Check a factoryhub site file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a site file: prints 'ok: N profiles' or the errors")
    check.add_argument("path", type=Path)
    sub.add_parser("schema", help="print the site file's JSON Schema")
    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(schema(), indent=2, ensure_ascii=False))
        return 0
    try:
        site = load_site(args.path)
    except SiteError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"ok: {len(site.profiles)} profiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
