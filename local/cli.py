"""``factoryhub-local``: run the whole factory (Slurm + JupyterHub) on this one machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import pids, processes, slurm

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
    cmd_slurm_up(args)
    for user in DEMO_USERS:
        slurm.create_unix_user(user, DEMO_PASSWORD, groups=(DEMO_GROUP,))
    _say(f"demo users {', '.join(DEMO_USERS)} (group {DEMO_GROUP}) ready")
    site = Path(args.site).resolve() if args.site else None
    pid, started = processes.up_hub(site)
    _say(f"hub {'started' if started else 'already running'} (pid {pid})")
    print(
        f"""
  FactoryHub is up:     {processes.HUB_URL}
  Demo users:           {", ".join(DEMO_USERS)}   password: {DEMO_PASSWORD}
                        (local-only demo credentials; the hub listens on 127.0.0.1)
  Admin API token file: {processes.ADMIN_TOKEN_FILE}
  Logs:                 hub {processes.HUB_LOG}
                        slurm {slurm.LOG_DIR}/slurmctld.log, {slurm.LOG_DIR}/slurmd.log
                        munge {slurm.MUNGE_LOG}
  Stop / inspect:       make down / make status
""",
        flush=True,
    )
    return 0


def cmd_down(_: argparse.Namespace) -> int:
    stopped = processes.down_hub() + slurm.down()
    _say(f"stopped {', '.join(stopped)}" if stopped else "nothing of ours was running")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    parts: dict[str, int | None] = dict(slurm.status())
    parts["hub"] = processes.hub_pid()
    parts["proxy"] = processes.proxy_pid()
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
    except (slurm.SlurmError, processes.HubError) as exc:
        print(f"factoryhub-local {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
