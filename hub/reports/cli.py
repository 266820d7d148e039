"""``factoryhub report``: the Reports service from scripts, through the service's own API.

    factoryhub report run NAME [-p key=value ...] [--project P] [--wait]
    factoryhub report list [--report NAME] [--available]

The hub's address comes from ``--hub`` or ``$FACTORYHUB_HUB_URL`` (default
http://127.0.0.1:8000), the token from ``--token``, ``$FACTORYHUB_TOKEN`` or
``$JUPYTERHUB_API_TOKEN`` (make one on the hub's Token page).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

SERVICE = "/services/reports"
FINAL = {"succeeded", "failed", "cancelled"}


class CliError(Exception):
    """What to tell the person at the terminal (exit status 1)."""


def parse_values(pairs: Sequence[str]) -> dict[str, str]:
    """``["n=3", "label=a b"]`` → ``{"n": "3", "label": "a b"}``; the service converts each
    value to its parameter's type and says which do not fit."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CliError(f"-p {pair!r}: expected NAME=VALUE")
        values[name.strip()] = value
    return values


class Api:
    def __init__(self, hub: str, token: str) -> None:
        if not token:
            raise CliError(
                "no token: pass --token or set FACTORYHUB_TOKEN (make one on the hub's Token page)"
            )
        self.client = httpx.Client(
            base_url=hub.rstrip("/") + SERVICE + "/api",
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise CliError(f"the hub at {self.client.base_url} did not answer: {e}") from None
        if r.status_code in (301, 302, 303) or r.status_code == 401:
            raise CliError("the hub did not accept the token: check it, or make a new one")
        try:
            body = r.json()
        except ValueError:
            raise CliError(f"unexpected answer ({r.status_code}): {r.text[:200]}") from None
        if r.status_code >= 400:
            lines = [body.get("message") or f"refused ({r.status_code})"]
            lines += [f"  {k}: {v}" for k, v in sorted((body.get("problems") or {}).items())]
            raise CliError("\n".join(lines))
        return body


def describe(run: dict[str, Any]) -> str:
    job = f"job {run['job_id']}" if run["job_id"] else "no job"
    took = f", {run['duration_s']:.0f} s" if run.get("duration_s") is not None else ""
    return f"run {run['id']} of {run['report']}: {run['status']} ({job}{took})"


def cmd_run(api: Api, args: argparse.Namespace, hub: str) -> int:
    body = {"report": args.name, "parameters": parse_values(args.p), "project": args.project}
    run = api.call("POST", "/runs", json=body)
    print(describe(run), flush=True)
    if not args.wait:
        return 0
    status = run["status"]
    deadline = time.monotonic() + args.timeout
    while run["status"] not in FINAL:
        if time.monotonic() > deadline:
            raise CliError(f"run {run['id']} not finished within {args.timeout:g} s")
        time.sleep(2)
        run = api.call("GET", f"/runs/{run['id']}")
        if run["status"] != status:
            status = run["status"]
            print(describe(run), flush=True)
    for kind in ("html", "notebook"):
        if kind in run["links"]:
            print(f"  {kind}: {hub.rstrip('/')}{run['links'][kind]}")
    if run["status"] == "failed":
        print(run["error"], file=sys.stderr)
    return 0 if run["status"] == "succeeded" else 3


def cmd_list(api: Api, args: argparse.Namespace, hub: str) -> int:
    if args.available:
        for report in api.call("GET", "/reports")["reports"]:
            defaults = " ".join(
                f"{p['name']}={json.dumps(p['default'])}" for p in report["parameters"]
            )
            print(f"{report['name']:24s} {report['title']}  [{defaults}]")
        return 0
    params = {"report": args.report} if args.report else {}
    runs = api.call("GET", "/runs", params=params)["runs"]
    if not runs:
        print("no runs")
    for run in runs:
        print(
            f"{run['id']:>6}  {run['status']:10s} {run['report']:20s} {run['user']:16s} "
            f"{run['job_id'] or '-':>8}  {run['created']}"
        )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="factoryhub", description="factoryhub from scripts")
    top.add_argument("--hub", default=os.environ.get("FACTORYHUB_HUB_URL", "http://127.0.0.1:8000"))
    top.add_argument(
        "--token",
        default=os.environ.get("FACTORYHUB_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN", ""),
    )
    area = top.add_subparsers(dest="area", required=True)
    report = area.add_parser("report", help="run report notebooks as Slurm jobs, see their runs")
    sub = report.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a report now")
    run.add_argument("name")
    run.add_argument("-p", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--project", default="", help="the project that pays (when you have several)")
    run.add_argument("--wait", action="store_true", help="follow the run to its end")
    run.add_argument("--timeout", type=float, default=3600)
    listing = sub.add_parser("list", help="the runs you may see, newest first")
    listing.add_argument("--report", default="")
    listing.add_argument("--available", action="store_true", help="the reports you may use")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        api = Api(args.hub, args.token)
        command = cmd_run if args.command == "run" else cmd_list
        return command(api, args, args.hub)
    except CliError as e:
        print(f"factoryhub: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
