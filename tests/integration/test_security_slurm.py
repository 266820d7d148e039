"""Forged queue lines: a job's name and comment are its user's, and Slurm keeps newlines and
``\\x1f`` in them. A user who writes a whole queue line into them must not be able to end
another user's server, nor break the staff usage report (issue 16).

The attacker does what anyone on the cluster can: reads the victim's job (id, node, comment:
``squeue`` shows every job), then submits jobs whose names and comments hold lines that claim
the victim's job COMPLETED, named like the hub's own jobs and tagged with the hub's comment.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest

from factoryhub.helpers import usage
from tests.support.hub import RunningHub

pytestmark = [pytest.mark.slurm, pytest.mark.security]

SEP = "\x1f"
POLLS = 8  # poll intervals to wait (the site's poll_interval is 1 s; an end needs 2 answers)


def squeue_json() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["squeue", "--json"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return json.loads(out)["jobs"]


def job_of(job_id: str) -> dict[str, Any] | None:
    return next((j for j in squeue_json() if str(j["job_id"]) == job_id), None)


def server_job(user: str) -> dict[str, Any]:
    (job,) = [
        j
        for j in squeue_json()
        if j["user_name"] == user
        and j["name"] == f"factoryhub-server-{user}"
        and j["job_state"] == "RUNNING"
    ]
    return job


def forged_line(victim: dict[str, Any], state: str = "COMPLETED") -> str:
    """A queue line (the hub's old ``squeue --format`` fields, ``\\x1f`` apart) saying the
    victim's job is over; the real fields Slurm prints after it complete it."""
    when = datetime.now().isoformat(timespec="seconds")
    fields = [
        str(victim["job_id"]), state, "None", victim["nodes"], when, when, victim["name"],
        victim["user_name"], victim["partition"], victim["comment"],
    ]  # fmt: skip
    return SEP.join(fields)


def sbatch_as(user: str, name: str, comment: str) -> str:
    argv = [
        "/usr/sbin/runuser", "-u", user, "--", "sbatch", "--parsable", "--output=/dev/null",
        "--chdir=/tmp", "--oversubscribe", "--time=10", f"--job-name={name}",
        f"--comment={comment}", "--wrap", "sleep 600",
    ]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def test_forged_queue_lines_neither_end_a_server_nor_break_the_usage_report(
    hub: RunningHub, unix_users: Any
) -> None:
    victim_user, attacker = unix_users(2)
    assert hub.spawn(victim_user, {"profile": "cpu-small"}).status_code in (201, 202)
    hub.wait_ready(victim_user)
    victim = server_job(victim_user)
    victim_id = str(victim["job_id"])
    forged = forged_line(victim)
    attacks = [
        # a newline in the name, the forged line in the comment (the report of issue 16)
        ("a\nb", f"x\n{forged}"),
        # named like the hub's job of the victim, tagged with the hub's own comment
        (f"factoryhub-server-{victim_user}", f"{victim['comment']}\n{forged}"),
        # the whole forged line in the name, after a newline
        (f"factoryhub-server-{attacker}\n{forged}", victim["comment"]),
        # the separator without a newline: fields shifted inside one line
        (f"factoryhub-server-{victim_user}{SEP}{victim_user}", f"{SEP}{victim_id}{SEP}COMPLETED"),
        # bars, a carriage return and unicode (in the name only what slurmdbd's database
        # keeps here: it stores characters beyond Latin-1 as "?")
        ("ü|é|\r\nCOMPLETED", "| \u2028 名前 |"),
    ]
    submitted: list[str] = []
    begun = datetime.now().replace(microsecond=0)
    try:
        for name, comment in attacks:
            submitted.append(sbatch_as(attacker, name, comment))
        time.sleep(POLLS * 1.0)

        # the victim's server is still up, routed and answering; its job still runs
        with hub.client() as c:
            model = c.get(f"/hub/api/users/{victim_user}").json()
            assert model["servers"].get("", {}).get("ready"), (model, hub.log_tail(40))
            routes = c.get("/hub/api/proxy").json()
            assert any(p.startswith(f"/user/{victim_user}/") for p in routes), routes
            status = c.get(f"/user/{victim_user}/api/status")
            assert status.status_code == 200, status.text
        still = job_of(victim_id)
        assert still is not None and still["job_state"] == "RUNNING", still
        assert f"Your server's job {victim_id} " not in hub.log_tail(400), hub.log_tail(40)

        # the usage report reads every job, the attacker's with their names intact
        jobs = usage.jobs_in(usage.period(start=begun.isoformat(), end=""))
        mine = jobs[jobs["user"] == attacker]
        assert sorted(mine["job_id"]) == sorted(submitted), jobs
        assert sorted(mine["name"]) == sorted(name for name, _ in attacks)
        assert set(jobs.loc[jobs["job_id"] == victim_id, "user"]) == {victim_user}
    finally:
        for job_id in submitted:
            subprocess.run(["scancel", job_id], capture_output=True, check=False, timeout=30)
        hub.stop_server(victim_user)
