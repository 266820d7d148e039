"""The hub home page shows the Slurm job behind the user's server (real hub, real Slurm)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from tests.support.hub import RunningHub
from tests.support.waiting import wait_until

from .test_form import signed_in

pytestmark = pytest.mark.slurm


def squeue_field(user: str, field: str) -> str:
    """Fields of the user's active jobs, named by squeue's letters (%i id, %N nodes, %T
    state), one line per job, read from ``squeue --json``."""
    from .slurm_fixtures import queue_jobs

    keys = {"%i": "job_id", "%N": "nodes", "%T": "job_state"}
    return "\n".join(" ".join(str(j[keys[f]]) for f in field.split()) for j in queue_jobs(user))


def job_card(page: str) -> str:
    """The default server's job card of the home page, its tags stripped."""
    match = re.search(
        r'<section class="card mb-3 factoryhub-job"\s+data-server-name=""(.*?)</section>',
        page,
        re.S,
    )
    assert match, page[-3000:]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))))


def test_home_page_shows_the_servers_slurm_job(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    client = signed_in(hub, user, unix_users.password)
    spawned = False
    try:
        before = client.get("/hub/home")
        assert before.status_code == 200, before.text[:500]
        assert 'id="start"' in before.text
        assert 'id="factoryhub-jobs"' not in before.text  # no server, nothing to show

        r = hub.spawn(user, {"profile": "cpu-small", "walltime": "01:30:00"})
        assert r.status_code in (201, 202), r.text
        spawned = True
        hub.wait_ready(user)

        job_id = squeue_field(user, "%i")
        node = squeue_field(user, "%N")
        assert job_id and node, (job_id, node)
        page = client.get("/hub/home")
        assert page.status_code == 200
        # the stock page is still there: its stop and start buttons, its script
        assert 'id="stop"' in page.text and 'id="start"' in page.text
        assert 'require(["home"])' in page.text
        card = job_card(page.text)
        assert f"Job {job_id} running" in card, card
        assert f"Node {node}" in card, card
        assert "Profile Small CPU ( cpu-small )" in card, card
        # 01:30:00 asked for: the end is about 1 h 29 min away
        assert re.search(r"Walltime ends \S+ \(1 h 2\d min left\)", card), card
    finally:
        client.close()
        if spawned:
            hub.stop_server(user)
    if spawned:  # the job goes (it may be listed as completing for a moment)
        wait_until(
            lambda: squeue_field(user, "%i") == "",
            30,
            lambda: f"the job of {user} is still listed: {squeue_field(user, '%i %T')}",
        )
