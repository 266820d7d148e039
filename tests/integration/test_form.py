"""The spawn form through a real sign-in (PAM, local factory): what users see and send."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.hub import RunningHub

pytestmark = pytest.mark.slurm


def signed_in(hub: RunningHub, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=hub.url, timeout=30, follow_redirects=False)
    page = client.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf, page.text[:500]
    r = client.post(
        "/hub/login",
        data={"username": user, "password": password, "_xsrf": xsrf.group(1)},
    )
    assert r.status_code == 302, (r.status_code, r.text[:500])
    return client


def xsrf_of(page: str) -> str:
    match = re.search(r'name="_xsrf" value="([^"]+)"', page) or re.search(r"_xsrf=([^&\"']+)", page)
    assert match, page[:800]
    return match.group(1)


def squeue_user(user: str) -> str:
    """The user's active jobs, one line each ("": none), from ``squeue --json``."""
    from .slurm_fixtures import queue_jobs

    return "\n".join(f"{j['job_id']} {j['job_state']} {j['name']}" for j in queue_jobs(user))


def test_wrong_password_is_refused(hub: RunningHub, unix_users: Any) -> None:
    (user,) = unix_users(1)
    client = httpx.Client(base_url=hub.url, timeout=30)
    page = client.get("/hub/login")
    r = client.post(
        "/hub/login",
        data={"username": user, "password": "wrong", "_xsrf": xsrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert "Invalid username or password" in r.text


def test_form_shows_the_users_profiles_and_refuses_bad_values(
    hub: RunningHub, unix_users: Any
) -> None:
    (user,) = unix_users(1)
    client = signed_in(hub, user, unix_users.password)
    try:
        form = client.get(f"/hub/spawn/{user}")
        assert form.status_code == 200
        # the profiles open to everyone, not the GPU profile reserved for gpu-users
        assert 'value="cpu-small"' in form.text and 'value="cpu-large"' in form.text
        assert 'value="gpu-1"' not in form.text
        assert "Walltime" in form.text
        r = client.post(
            f"/hub/spawn/{user}",
            data={
                "profile": "cpu-small",
                "walltime": "12:00:00",
                "memory_gb": "2",
                "_xsrf": xsrf_of(form.text),
            },
        )
        # the form comes back with the reason, and nothing was submitted
        assert r.status_code == 200, r.status_code
        assert "Walltime: at most 08:00:00 for Small CPU" in r.text
        assert 'value="cpu-small"' in r.text
        assert squeue_user(user) == ""
        r = client.post(
            f"/hub/spawn/{user}",
            data={
                "profile": "cpu-small",
                "walltime": "01:00:00\n#SBATCH --uid=0",
                "_xsrf": xsrf_of(form.text),
            },
        )
        assert "line breaks" in r.text
        assert squeue_user(user) == ""
    finally:
        client.close()
