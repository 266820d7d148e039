"""A course's "start all" against starting the same servers without the Courses service.

    /opt/factoryhub/venv/bin/python benchmarks/course_start_all.py --participants 12 \\
        --rounds 2 --json-out courses.json

One hub with one course of N participants (pinned profile: 1 CPU, 1 GB), every variant in the
same run, rounds interleaved so drift hits all alike; each variant ends with every course
server running (JupyterLab answering through the hub), then all are stopped:

``one_by_one``: what a trainer does without a course page: start one participant's server
through the hub's API, wait until it is ready, then the next.
``hub_api_burst``: every server asked of the hub's API at once by an admin script (the
lower bound of what the hub and Slurm can do; no trainer has such a script).
``course_start_all``: the trainer's one click: ``POST .../start-all`` to the Courses service,
until every participant's server runs.

Prints JSON: per variant the seconds until all run (mean over rounds, each round), and the
service's own record of how long start-all took.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cli
from benchmarks.hubs import cancel_jobs, ensure_unix_user, factoryhub_hub
from tests.support.hub import PROXY_PATH, RunningHub
from tests.support.waiting import wait_until

COURSE = "bench-course"
TRAINER = "fhbench-trainer"
ACCOUNT = "fhbench-course"
PORT = 28112
TIMEOUT_S = 600.0
API = f"/services/courses/api/courses/{COURSE}"
VARIANTS = ("one_by_one", "hub_api_burst", "course_start_all")

log = cli.logger("course_start_all")


def user_items(admin: httpx.Client) -> list[dict[str, Any]]:
    page = admin.get("/hub/api/users", params={"limit": 500}).json()
    return page["items"] if isinstance(page, dict) else page


def running(admin: httpx.Client, users: list[str]) -> set[str]:
    return {
        u["name"]
        for u in user_items(admin)
        if u["name"] in users and (u.get("servers") or {}).get(COURSE, {}).get("ready")
    }


def wait_all(admin: httpx.Client, users: list[str], begun: float) -> float:
    """Seconds from ``begun`` until every participant's course server runs."""
    return wait_until(
        lambda: running(admin, users) == set(users) and time.monotonic() - begun,
        TIMEOUT_S,
        lambda: f"not every course server ran within {TIMEOUT_S} s",
        first=0.25,
        longest=0.25,
    )


def wait_one(admin: httpx.Client, user: str) -> None:
    def ready() -> bool:
        model = admin.get(f"/hub/api/users/{user}").json()
        return bool((model.get("servers") or {}).get(COURSE, {}).get("ready"))

    wait_until(ready, TIMEOUT_S, lambda: f"{user}'s course server did not run", first=0.2)


def stop_all(admin: httpx.Client, users: list[str]) -> None:
    for user in users:
        admin.delete(f"/hub/api/users/{user}/servers/{COURSE}")

    def stopped() -> bool:
        items = user_items(admin)
        return not any(COURSE in (u.get("servers") or {}) for u in items if u["name"] in users)

    wait_until(stopped, 120, lambda: "the course servers did not stop", first=0.5, longest=0.5)
    time.sleep(1)


def one_by_one(admin: httpx.Client, trainer: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()
    for user in users:
        r = admin.post(f"/hub/api/users/{user}/servers/{COURSE}", json={})
        r.raise_for_status()
        wait_one(admin, user)
    return time.monotonic() - begun


def hub_api_burst(admin: httpx.Client, trainer: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()

    def start(user: str) -> None:
        admin.post(f"/hub/api/users/{user}/servers/{COURSE}", json={}).raise_for_status()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(start, users))
    return wait_all(admin, users, begun)


def course_start_all(admin: httpx.Client, trainer: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()
    r = trainer.post(f"{API}/start-all")
    r.raise_for_status()
    assert len(r.json()["asked"]) == len(users), r.json()
    return wait_all(admin, users, begun)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser(__doc__)
    parser.add_argument("--participants", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args(argv)


def course_site(users: list[str]) -> Callable[[dict[str, Any]], None]:
    """The benchmark's course: its project, pinned profile (1 GB), people and dates."""
    today = datetime.date.today()

    def change_site(site: dict[str, Any]) -> None:
        profile = site["profiles"][0]
        profile["memory_gb"] = {"default": 1, "min": 1, "max": 4}
        site["projects"] = [
            {
                "name": "bench",
                "display_name": "Benchmark",
                "account": ACCOUNT,
                "groups": ["fhbench-course"],
                "profiles": [profile["name"]],
            }
        ]
        course = {
            "name": COURSE,
            "display_name": "Benchmark course",
            "trainers": {"users": [TRAINER]},
            "participants": {"users": users},
            "start": (today - datetime.timedelta(days=1)).isoformat(),
            "end": (today + datetime.timedelta(days=1)).isoformat(),
            "profile": profile["name"],
            "project": "bench",
        }
        site["courses"] = {"enabled": True, "port": PORT, "list": [course]}

    return change_site


@contextlib.contextmanager
def trainer_client(
    hub: RunningHub, admin: httpx.Client, users: list[str]
) -> Iterator[httpx.Client]:
    """The trainer's API client, once the Courses service lists every participant."""
    for user in [TRAINER, *users]:
        hub.ensure_user(user)
    r = admin.post(f"/hub/api/users/{TRAINER}/tokens", json={"note": "bench"})
    r.raise_for_status()
    with hub.client(r.json()["token"], timeout=120) as trainer:
        yield wait_service(hub, trainer, users)


def wait_service(hub: RunningHub, trainer: httpx.Client, users: list[str]) -> httpx.Client:
    """``trainer``, once the Courses service answers and lists every participant signed in."""

    def service_ready() -> bool:
        r = trainer.get(API)
        if r.status_code != 200:
            return False
        return len([p for p in r.json()["participants"] if p["signed_in"]]) == len(users)

    wait_until(
        service_ready,
        60,
        lambda: f"the Courses service is not ready:\n{hub.log_tail()}",
        first=0.5,
        longest=0.5,
    )
    return trainer


def measure(
    admin: httpx.Client, trainer: httpx.Client, users: list[str], rounds: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Each variant once a round (after a warm-up server); the service's own records."""
    log("warm-up: one course server")
    admin.post(f"/hub/api/users/{users[0]}/servers/{COURSE}", json={})
    wait_one(admin, users[0])
    stop_all(admin, users)
    variants = {"one_by_one": one_by_one, "hub_api_burst": hub_api_burst}
    variants["course_start_all"] = course_start_all
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    recorded: list[float] = []
    for round_ in range(rounds):
        for name in VARIANTS:
            took = variants[name](admin, trainer, users)
            if name == "course_start_all":
                time.sleep(2)
                events = trainer.get(API).json()["events"]
                ready = [e for e in events if e["kind"] == "all-ready"]
                if ready:
                    recorded.append(float(ready[0]["detail"]["seconds"]))
            times[name].append(took)
            log(f"round {round_ + 1}: {name} {took:.1f} s")
            stop_all(admin, users)
    return times, recorded


def summary(values: list[float]) -> dict[str, Any]:
    return {"mean_s": round(statistics.fmean(values), 2), "rounds_s": [round(v, 2) for v in values]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from factoryhub.local.accounting import ensure_account, ensure_user_in_account

    users = [f"fhbench-c{i:02d}" for i in range(args.participants)]
    ensure_account(ACCOUNT, "course benchmark")
    for user in [TRAINER, *users]:
        ensure_unix_user(user)
        ensure_user_in_account(user, ACCOUNT)
    state = cli.private_state("fhbench-courses-hub-")
    hub = factoryhub_hub(state, cli.new_token(), course_site(users))
    try:
        hub.start()
        with hub.client(timeout=60) as admin, trainer_client(hub, admin, users) as trainer:
            times, recorded = measure(admin, trainer, users, args.rounds)
    finally:
        hub.stop()
        for user in users:
            cancel_jobs(user)
    mean = {name: statistics.fmean(values) for name, values in times.items()}
    return {
        "participants": args.participants,
        "rounds": args.rounds,
        **{name: summary(values) for name, values in times.items()},
        "service_recorded_all_ready_s": recorded,
        "speedup_vs_one_by_one": round(mean["one_by_one"] / mean["course_start_all"], 2),
        "overhead_vs_hub_api_burst_s": round(mean["course_start_all"] - mean["hub_api_burst"], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_as_root("course_start_all", run, parse_args(argv), [PROXY_PATH])


if __name__ == "__main__":
    sys.exit(main())
