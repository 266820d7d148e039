"""The site file (``factory.yaml``): loading, validation and a typed view.

The file is checked in two steps and every problem is reported at once, one per
line, each naming its key (``profiles[1].memory_gb.default``):

1. against the JSON Schema ``schema.json`` (draft 2020-12), which is also the
   Helm chart's values schema, so it stays self-contained;
2. by the checks that span keys: a profile's partition is declared in
   ``slurm.partitions``, names are unique, ``min <= default <= max`` and the
   walltime ``default <= max`` (both longer than zero).

Defaults for omitted optional keys come from the schema's ``default`` annotations
and are filled in by the loader; the schema itself is never changed.

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

from factoryhub.hub.site.checks import (
    _EXAMPLE_FILE,
    _HERE,
    _PATTERN_MEANING,
    Problem,
    SiteError,
    _schema,
    _show_key,
    find_problems,
    schema,
    walltime_seconds,
    with_defaults,
)
from factoryhub.hub.site.courses import build_courses
from factoryhub.hub.site.dask import build_dask
from factoryhub.hub.site.model import (
    AuthSettings,
    HubSettings,
    IdleCuller,
    IntRange,
    LocalAuth,
    OidcAuth,
    Partition,
    Profile,
    Project,
    Site,
    SlurmSettings,
    SpawnerSettings,
    UnixUsers,
)
from factoryhub.hub.site.reports import build_reports

__all__ = [
    "AuthSettings",
    "HubSettings",
    "IdleCuller",
    "IntRange",
    "LocalAuth",
    "OidcAuth",
    "Partition",
    "Problem",
    "Profile",
    "Project",
    "Site",
    "SiteError",
    "SlurmSettings",
    "SpawnerSettings",
    "UnixUsers",
    "example_site_path",
    "load_site",
    "parse_site",
    "schema",
    "walltime_seconds",
]

__all__ += ["main"]
_ = _PATTERN_MEANING  # re-exported: the tests check every schema pattern has words

# --------------------------------------------------------------------------- public functions


def example_site_path() -> Path:
    """The packaged ``factory.example.yaml`` (the local factory's embedded default)."""
    return _HERE.parent / _EXAMPLE_FILE


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
    return _build(with_defaults(data))


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                dup = key in seen
            except TypeError:
                continue  # unhashable key: construct_mapping reports it below
            if dup:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_show_key(key)} "
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
    _StrictLoader.construct_mapping,  # type: ignore[arg-type]
)


# --------------------------------------------------------------------------- schema errors


def _range(d: Mapping[str, Any]) -> IntRange:
    return IntRange(default=int(d["default"]), min=int(d["min"]), max=int(d["max"]))


def _build(d: dict[str, Any]) -> Site:
    hub, auth, slurm, spawner = d["hub"], d["auth"], d["slurm"], d["spawner"]
    local = auth.get("local")
    culler = d["idle_culler"]
    return Site(
        hub=HubSettings(
            public_url=hub["public_url"],
            state_dir=hub["state_dir"],
            keep_servers_on_restart=hub["keep_servers_on_restart"],
            api_url=hub["api_url"],
            connect_url=hub["connect_url"],
            proxy_api_url=hub["proxy_api_url"],
            external_proxy=hub["external_proxy"],
            services_host=hub["services_host"],
        ),
        auth=AuthSettings(
            type=auth["type"],
            local=(
                LocalAuth(group=local["group"], admin_users=tuple(local["admin_users"]))
                if local is not None
                else None
            ),
            oidc=_oidc(auth.get("oidc")),
            unix_users=UnixUsers(
                create=auth["unix_users"]["create"],
                shell=auth["unix_users"]["shell"],
                min_uid=auth["unix_users"]["min_uid"],
                reserved_names=tuple(auth["unix_users"]["reserved_names"]),
            ),
        ),
        slurm=SlurmSettings(
            access=slurm["access"],
            job_name_prefix=slurm["job_name_prefix"],
            partitions=tuple(
                Partition(name=p["name"], description=p["description"]) for p in slurm["partitions"]
            ),
            manage_associations=slurm["manage_associations"],
            poll_interval=float(slurm["poll_interval"]),
            orphan_grace=int(slurm["orphan_grace"]),
            rest=dict(slurm.get("rest") or {}),
        ),
        spawner=SpawnerSettings(
            python_env=spawner["python_env"],
            log_dir=spawner["log_dir"],
            start_timeout=int(spawner["start_timeout"]),
            apptainer=dict(spawner["apptainer"]),
            node_addresses={n["node"]: n["address"] for n in spawner["node_addresses"]},
        ),
        profiles=tuple(
            Profile(
                name=p["name"],
                display_name=p["display_name"],
                description=p["description"],
                partition=p["partition"],
                cpus=int(p["cpus"]),
                memory_gb=_range(p["memory_gb"]),
                gpus=_range(p["gpus"]),
                walltime_default=p["walltime"]["default"],
                walltime_max=p["walltime"]["max"],
                allowed_groups=tuple(p.get("allowed_groups", ())),
                allowed_users=tuple(p.get("allowed_users", ())),
                image=p.get("image", ""),
            )
            for p in d["profiles"]
        ),
        raw=d,
        projects=tuple(
            Project(
                name=p["name"],
                display_name=p["display_name"],
                description=p["description"],
                account=p["account"],
                groups=tuple(p["groups"]),
                profiles=tuple(p["profiles"]),
                max_servers=p["limits"].get("max_servers"),
                max_gpus_per_user=p["limits"].get("max_gpus_per_user"),
            )
            for p in d["projects"]
        ),
        idle_culler=IdleCuller(
            enabled=bool(culler["enabled"]),
            timeout=int(culler["timeout"]),
            every=int(culler["every"]),
        ),
        dask=build_dask(d["dask"]),
        reports=build_reports(d["reports"], [p["name"] for p in slurm["partitions"]]),
        courses=build_courses(d["courses"], {p["name"]: p["account"] for p in d["projects"]}),
    )


def _oidc(o: Mapping[str, Any] | None) -> OidcAuth | None:
    if o is None:
        return None
    return OidcAuth(
        issuer=o["issuer"].rstrip("/"),
        client_id=o["client_id"],
        client_secret_file=o.get("client_secret_file", ""),
        client_secret_env=o["client_secret_env"],
        authorize_url=o.get("authorize_url", ""),
        token_url=o.get("token_url", ""),
        userinfo_url=o.get("userinfo_url", ""),
        jwks_url=o.get("jwks_url", ""),
        scopes=tuple(o["scopes"]),
        username_claim=o["username_claim"],
        groups_claim=o["groups_claim"],
        admin_groups=tuple(o["admin_groups"]),
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
        print(json.dumps(_schema(), indent=2, ensure_ascii=False))
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
