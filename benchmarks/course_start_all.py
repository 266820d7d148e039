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
import datetime
import json
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.processes import cancel_jobs, ensure_unix_user, factoryhub_hub, log

COURSE = "bench-course"
TRAINER = "fhbench-trainer"
ACCOUNT = "fhbench-course"
PORT = 28112
TIMEOUT_S = 600.0


def running(admin: httpx.Client, users: list[str]) -> set[str]:
    page = admin.get("/hub/api/users", params={"limit": 500}).json()
    items = page["items"] if isinstance(page, dict) else page
    return {
        u["name"]
        for u in items
        if u["name"] in users and (u.get("servers") or {}).get(COURSE, {}).get("ready")
    }


def wait_all(admin: httpx.Client, users: list[str], begun: float) -> float:
    while time.monotonic() - begun < TIMEOUT_S:
        if running(admin, users) == set(users):
            return time.monotonic() - begun
        time.sleep(0.25)
    raise RuntimeError(f"not every course server ran within {TIMEOUT_S} s")


def wait_one(admin: httpx.Client, user: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        model = admin.get(f"/hub/api/users/{user}").json()
        if (model.get("servers") or {}).get(COURSE, {}).get("ready"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{user}'s course server did not run")


def stop_all(admin: httpx.Client, users: list[str]) -> None:
    for user in users:
        admin.delete(f"/hub/api/users/{user}/servers/{COURSE}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page = admin.get("/hub/api/users", params={"limit": 500}).json()
        items = page["items"] if isinstance(page, dict) else page
        if not any(COURSE in (u.get("servers") or {}) for u in items if u["name"] in users):
            time.sleep(1)
            return
        time.sleep(0.5)
    raise RuntimeError("the course servers did not stop")


def one_by_one(admin: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()
    for user in users:
        r = admin.post(f"/hub/api/users/{user}/servers/{COURSE}", json={})
        r.raise_for_status()
        wait_one(admin, user)
    return time.monotonic() - begun


def hub_api_burst(admin: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()

    def start(user: str) -> None:
        admin.post(f"/hub/api/users/{user}/servers/{COURSE}", json={}).raise_for_status()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(start, users))
    return wait_all(admin, users, begun)


def course_start_all(admin: httpx.Client, trainer: httpx.Client, users: list[str]) -> float:
    begun = time.monotonic()
    r = trainer.post(f"/services/courses/api/courses/{COURSE}/start-all")
    r.raise_for_status()
    assert len(r.json()["asked"]) == len(users), r.json()
    return wait_all(admin, users, begun)


def summary(values: list[float]) -> dict[str, Any]:
    return {"mean_s": round(statistics.fmean(values), 2), "rounds_s": [round(v, 2) for v in values]}


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--participants", type=int, default=12)
    args.add_argument("--rounds", type=int, default=2)
    args.add_argument("--json-out", default="")
    opts = args.parse_args()
    users = [f"fhbench-c{i:02d}" for i in range(opts.participants)]

    from factoryhub.local.accounting import ensure_account, ensure_user_in_account

    ensure_account(ACCOUNT, "course benchmark")
    for user in [TRAINER, *users]:
        ensure_unix_user(user)
        ensure_user_in_account(user, ACCOUNT)
    today = datetime.date.today()

    def change_site(site: dict[str, Any]) -> None:
        site["profiles"][0]["memory_gb"] = {"default": 1, "min": 1, "max": 4}
        site["projects"] = [
            {
                "name": "bench",
                "display_name": "Benchmark",
                "account": ACCOUNT,
                "groups": ["fhbench-course"],
                "profiles": [site["profiles"][0]["name"]],
            }
        ]
        site["courses"] = {
            "enabled": True,
            "port": PORT,
            "list": [
                {
                    "name": COURSE,
                    "display_name": "Benchmark course",
                    "trainers": {"users": [TRAINER]},
                    "participants": {"users": users},
                    "start": (today - datetime.timedelta(days=1)).isoformat(),
                    "end": (today + datetime.timedelta(days=1)).isoformat(),
                    "profile": site["profiles"][0]["name"],
                    "project": "bench",
                }
            ],
        }

    state = Path(tempfile.mkdtemp(prefix="fhbench-courses-hub-"))
    state.chmod(0o700)
    token = secrets.token_hex(32)
    token_file = state / "admin-token"
    token_file.write_text(token)
    hub = factoryhub_hub(state, token_file, token, change_site)
    hub.start()
    results: dict[str, Any] = {"participants": opts.participants, "rounds": opts.rounds}
    times: dict[str, list[float]] = {"one_by_one": [], "hub_api_burst": [], "course_start_all": []}
    recorded: list[float] = []
    try:
        with hub.client(timeout=60) as admin:
            for user in [TRAINER, *users]:
                hub.ensure_user(user)
            r = admin.post(f"/hub/api/users/{TRAINER}/tokens", json={"note": "bench"})
            r.raise_for_status()
            trainer_token = r.json()["token"]
            with httpx.Client(
                base_url=hub.url, headers={"Authorization": f"token {trainer_token}"}, timeout=120
            ) as trainer:
                deadline = time.monotonic() + 60
                api = f"/services/courses/api/courses/{COURSE}"
                while trainer.get(api).status_code != 200 or len(
                    [p for p in trainer.get(api).json()["participants"] if p["signed_in"]]
                ) != len(users):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the Courses service is not ready:\n{hub.log_tail()}")
                    time.sleep(0.5)
                log("warm-up: one course server")
                admin.post(f"/hub/api/users/{users[0]}/servers/{COURSE}", json={})
                wait_one(admin, users[0])
                stop_all(admin, users)
                for round_ in range(opts.rounds):
                    for name in times:
                        if name == "one_by_one":
                            took = one_by_one(admin, users)
                        elif name == "hub_api_burst":
                            took = hub_api_burst(admin, users)
                        else:
                            took = course_start_all(admin, trainer, users)
                            time.sleep(2)
                            events = trainer.get(api).json()["events"]
                            ready = [e for e in events if e["kind"] == "all-ready"]
                            if ready:
                                recorded.append(float(ready[0]["detail"]["seconds"]))
                        times[name].append(took)
                        log(f"round {round_ + 1}: {name} {took:.1f} s")
                        stop_all(admin, users)
        results.update({name: summary(values) for name, values in times.items()})
        results["service_recorded_all_ready_s"] = recorded
        results["speedup_vs_one_by_one"] = round(
            statistics.fmean(times["one_by_one"]) / statistics.fmean(times["course_start_all"]), 2
        )
        results["overhead_vs_hub_api_burst_s"] = round(
            statistics.fmean(times["course_start_all"]) - statistics.fmean(times["hub_api_burst"]),
            2,
        )
    finally:
        hub.stop()
        for user in users:
            cancel_jobs(user)
    text = json.dumps(results, indent=2)
    print(text)
    if opts.json_out:
        Path(opts.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
