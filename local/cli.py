"""``factoryhub-local``: run the whole factory (Slurm + JupyterHub) on this one machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import idp, pids, processes, site_setup, slurm

# Local-only demo credentials: the hub on 127.0.0.1 signs these Unix users in.
DEMO_USERS = ("alice", "bob")
DEMO_GROUP = "factoryhub"
DEMO_PASSWORD = "factory-demo"  # noqa: S105 - documented demo password, loopback only


def _say(message: str) -> None:
    print(f"factoryhub-local: {message}", flush=True)


def cmd_slurm_up(_: argparse.Namespace) -> int:
    started = slurm.up()
    pid_text = ", ".join(f"{n} {p}" for n, p in slurm.status().items())
    verb = f"started {', '.join(started)}" if started else "already running"
    _say(f"slurm up ({verb}): {pid_text}")
    return 0


def cmd_slurm_down(_: argparse.Namespace) -> int:
    stopped = slurm.down()
    _say(f"slurm: stopped {', '.join(stopped)}" if stopped else "slurm: nothing of ours to stop")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    processes.hub_config_path()  # fail early, before touching anything, if it is missing
    site_file = Path(args.site).resolve() if args.site else None
    site = site_setup.load(site_file or processes.default_site_file())
    cmd_slurm_up(args)
    created = site_setup.project_accounts(site)
    if created:
        _say(f"Slurm accounts of the projects created: {', '.join(created)}")
    service_user = site_setup.reports_service_user(site)
    if service_user:
        _say(f"scheduled site reports run as {service_user}")
    cache = site_setup.course_materials_cache(site)
    if cache:
        _say(f"courses' git materials are mirrored into {cache}")
    idp_pid = site_setup.idp_up(site)
    if idp_pid:
        assert site.auth.oidc is not None
        _say(f"identity provider up on {site.auth.oidc.issuer} (pid {idp_pid})")
        who = "\n".join(
            f"                        {name:6s} {role:18s} groups: {groups}"
            for name, role, groups in site_setup.DEMO_IDP_USERS
        )
        sign_in = f"""  Sign in (IdP):        password {DEMO_PASSWORD} (local-only demo users)
{who}"""
    else:
        for user in DEMO_USERS:
            slurm.create_unix_user(user, DEMO_PASSWORD, groups=(DEMO_GROUP,))
        _say(f"demo users {', '.join(DEMO_USERS)} (group {DEMO_GROUP}) ready")
        sign_in = f"""  Demo users:           {", ".join(DEMO_USERS)}   password: {DEMO_PASSWORD}
                        (local-only demo credentials; the hub listens on 127.0.0.1)"""
    reports = (
        f"  Reports:              {processes.HUB_URL.rstrip('/')}/services/reports/ "
        "(who may use which report: reports.access in the site file)\n"
        if site.reports.enabled
        else ""
    )
    courses = "".join(
        f"  Course {c.name}:{'':{max(1, 14 - len(c.name))}s}{processes.HUB_URL.rstrip('/')}"
        f"/services/courses/course/{c.name} (trainers: "
        f"{', '.join([*c.trainer_users, *c.trainer_groups])}; participants: "
        f"{', '.join([*c.participant_users, *c.participant_groups])})\n"
        for c in site.courses.courses
        if site.courses.active
    )
    pid, started = processes.up_hub(site_file)
    _say(f"hub {'started' if started else 'already running'} (pid {pid})")
    print(
        f"""
  FactoryHub is up:     {processes.HUB_URL}
{reports}{courses}{sign_in}
  Admin API token file: {processes.ADMIN_TOKEN_FILE}
  Logs:                 hub {processes.HUB_LOG}
                        slurm {slurm.LOG_DIR}/slurmctld.log, {slurm.LOG_DIR}/slurmd.log
                        accounting {slurm.LOG_DIR}/slurmdbd.log, {slurm.MARIADB_LOG}
                        munge {slurm.MUNGE_LOG}
  Stop / inspect:       make down / make status
""",
        flush=True,
    )
    return 0


def cmd_down(_: argparse.Namespace) -> int:
    stopped = processes.down_hub()
    if idp.down():
        stopped.append("idp")
    stopped += slurm.down()
    _say(f"stopped {', '.join(stopped)}" if stopped else "nothing of ours was running")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    parts: dict[str, int | None] = dict(slurm.status())
    parts["hub"] = processes.hub_pid()
    parts["proxy"] = processes.proxy_pid()
    parts["idp"] = idp.status()
    ours = pids.load_started()
    for name, pid in parts.items():
        state = f"running  pid {pid}" if pid else "stopped"
        mark = "  (started by factoryhub-local)" if pid and ours.get(name) == pid else ""
        print(f"{name:10s} {state}{mark}")
    if parts["hub"]:
        answer = "answers" if processes.hub_answers() else "does NOT answer"
        print(f"{'':10s} {processes.HUB_API} {answer}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factoryhub-local", description="Run FactoryHub (Slurm + JupyterHub) on this machine."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="Slurm, demo users and the hub (idempotent)")
    up.add_argument("--site", help="site file (default: $FACTORYHUB_SITE_FILE or the example)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what runs").set_defaults(func=cmd_status)
    sub.add_parser("slurm-up", help="only the local Slurm").set_defaults(func=cmd_slurm_up)
    sub.add_parser("slurm-down", help="stop the Slurm `up` started").set_defaults(
        func=cmd_slurm_down
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (slurm.SlurmError, processes.HubError, idp.IdpError) as exc:
        print(f"factoryhub-local {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
