"""``factoryhub-local``: run the whole factory (Slurm + JupyterHub) on this one machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factoryhub.hub.site.loader import Site
from factoryhub.local import (
    idp,
    kube_podman,
    kube_tryout,
    multinode,
    pids,
    processes,
    progress,
    site_setup,
    slurm,
)

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


def _slurm_step(step: progress.Step) -> None:
    started = slurm.up()
    if started:
        step.did.append(f"started {', '.join(f'{n} {p}' for n, p in started.items())}")


def _accounts_step(step: progress.Step, site: Site) -> None:
    created = site_setup.project_accounts(site)
    if created:
        step.did.append(f"projects' accounts {', '.join(created)}")
    service_user, added = site_setup.reports_service_user(site)
    if added:
        step.did.append(f"scheduled site reports run as {service_user}")
    cache, made = site_setup.course_materials_cache(site)
    if made:
        step.did.append(f"courses' git materials are mirrored into {cache}")
    if site_setup.local_issuer_port(site) is None:
        new = [u for u in DEMO_USERS if not site_setup.unix_user_exists(u)]
        for user in DEMO_USERS:
            slurm.create_unix_user(user, DEMO_PASSWORD, groups=(DEMO_GROUP,))
        if new:
            step.did.append(f"demo users {', '.join(new)} (group {DEMO_GROUP})")


def _sign_in_text(site: Site) -> str:
    if site_setup.local_issuer_port(site) is None:
        return f"""  Demo users:           {", ".join(DEMO_USERS)}   password: {DEMO_PASSWORD}
                        (local-only demo credentials; the hub listens on 127.0.0.1)"""
    who = "\n".join(
        f"                        {name:6s} {role:18s} groups: {groups}"
        for name, role, groups in site_setup.DEMO_IDP_USERS
    )
    return f"""  Sign in (IdP):        password {DEMO_PASSWORD} (local-only demo users)
{who}"""


def _summary(site: Site) -> str:
    base = processes.HUB_URL.rstrip("/")
    reports = (
        f"  Reports:              {base}/services/reports/ "
        "(who may use which report: reports.access in the site file)\n"
        if site.reports.enabled
        else ""
    )
    courses = "".join(
        f"  Course {c.name}:{'':{max(1, 14 - len(c.name))}s}{base}"
        f"/services/courses/course/{c.name} (trainers: "
        f"{', '.join([*c.trainer_users, *c.trainer_groups])}; participants: "
        f"{', '.join([*c.participant_users, *c.participant_groups])})\n"
        for c in site.courses.courses
        if site.courses.active
    )
    return f"""
  FactoryHub is up:     {processes.HUB_URL}
{reports}{courses}{_sign_in_text(site)}
  Admin API token file: {processes.ADMIN_TOKEN_FILE}
  Logs:                 hub {processes.HUB_LOG}
                        slurm {slurm.LOG_DIR}/slurmctld.log, {slurm.LOG_DIR}/slurmd.log
                        accounting {slurm.LOG_DIR}/slurmdbd.log, {slurm.MARIADB_LOG}
                        munge {slurm.MUNGE_LOG}
  Stop / inspect:       make down / make status
"""


def cmd_up(args: argparse.Namespace) -> int:
    processes.hub_config_path()  # fail early, before touching anything, if it is missing
    site_file = Path(args.site).resolve() if args.site else None
    site = site_setup.load(site_file or processes.default_site_file())
    steps = progress.Progress(4, _say)
    with steps.step(1, "Slurm daemons", "starting the Slurm daemons") as step:
        _slurm_step(step)
    with steps.step(2, "accounts and users", "creating accounts and users") as step:
        _accounts_step(step, site)
    with steps.step(3, "identity provider", "starting the identity provider") as step:
        idp_pid = site_setup.idp_up(site)
        if idp_pid and idp_pid[1]:
            assert site.auth.oidc is not None
            step.did.append(f"up on {site.auth.oidc.issuer} (pid {idp_pid[0]})")
    with steps.step(4, "hub", "starting the hub") as step:
        pid, started = processes.up_hub(site_file)
        if started:
            step.did.append(f"started (pid {pid})")
    _say(steps.summary("up"))
    print(_summary(site), flush=True)
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


def _helm() -> str:
    import shutil

    found = Path(sys.prefix) / "bin" / "helm"
    path = str(found) if found.is_file() else shutil.which("helm")
    if not path:
        raise kube_podman.KubePlayError("helm is missing: `make install-test` installs it")
    return path


def cmd_kube_up(_: argparse.Namespace) -> int:
    site = site_setup.load(processes.default_site_file())
    steps = progress.Progress(3, _say)
    with steps.step(1, "Slurm and the demo people", "starting Slurm, making accounts") as step:
        _slurm_step(step)
        site_setup.project_accounts(site)
        groups = {g: p.account for p in site.projects for g in p.groups}
        step.did += kube_tryout.demo_people(groups)
    with steps.step(2, "hub image", "building or reusing images/hub") as step:
        image = kube_tryout.hub_image()
        step.did.append(image)
    tryout = kube_tryout.Tryout()
    with steps.step(3, "pods", "helm template, then podman kube play") as step:
        running = kube_tryout.up(tryout, image, _helm())
        step.did.append(", ".join(running.pods))
    _say(steps.summary("kube-up"))
    print(kube_tryout.summary(running), flush=True)
    return 0


def cmd_kube_down(_: argparse.Namespace) -> int:
    gone = kube_tryout.down(kube_tryout.Tryout())
    _say(f"kube-down: {', '.join(gone)}" if gone else "kube-down: nothing of ours was running")
    return 0


def cmd_cluster_up(_: argparse.Namespace) -> int:
    cluster = multinode.Cluster()
    steps = progress.Progress(2, _say)
    with steps.step(1, "node image", "building or reusing images/node") as step:
        image = multinode.node_image()
        step.did.append(image)
    with steps.step(2, "cluster", "node containers, then slurmctld") as step:
        step.did += multinode.up(cluster, image)
    _say(steps.summary("cluster-up"))
    print(multinode.summary(cluster), flush=True)
    return 0


def cmd_cluster_down(_: argparse.Namespace) -> int:
    gone = multinode.down(multinode.Cluster())
    _say(f"cluster-down: {', '.join(gone)}" if gone else "cluster-down: nothing was running")
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
    sub.add_parser(
        "kube-up", help="the Helm chart's pods with podman kube play, on this factory's Slurm"
    ).set_defaults(func=cmd_kube_up)
    sub.add_parser("kube-down", help="stop what kube-up started").set_defaults(func=cmd_kube_down)
    sub.add_parser(
        "cluster-up", help="a multi-node Slurm: compute nodes in podman containers"
    ).set_defaults(func=cmd_cluster_up)
    sub.add_parser("cluster-down", help="stop what cluster-up started").set_defaults(
        func=cmd_cluster_down
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        slurm.SlurmError,
        processes.HubError,
        idp.IdpError,
        kube_podman.KubePlayError,
        multinode.ClusterError,
    ) as exc:
        print(f"factoryhub-local {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
