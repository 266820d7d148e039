"""A person in headless Chromium: sign in, choose a profile, land in JupyterLab (a Slurm job)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import ARTIFACTS, SPAWN_BOUND, chromium, wait_for
from tests.support.hub import RunningHub
from tests.support.waiting import squeue_jobs

from .idp_fixtures import TEST_PASSWORD
from .oidc_fixtures import (
    COURSE,
    COURSE_PUPILS,
    COURSE_TRAINER,
    REPORTS_USER,
    hub_sign_in,
    reset_course_homes,
)

pytestmark = [pytest.mark.browser, pytest.mark.slurm]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_sign_in_choose_profile_and_land_in_jupyterlab(
    hub: RunningHub, unix_users: Any, browser: Browser
) -> None:
    (user,) = unix_users(1)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{hub.url}/hub/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", unix_users.password)
        page.click("input[type=submit], button[type=submit]")
        # the spawn form: the user's profiles, walltime filled from the profile
        wait_for(page, "#factoryhub-form")
        assert page.locator('input[name="profile"]').count() == 2
        assert page.input_value("#fh-walltime") == "02:00:00"
        page.check('input[name="profile"][value="cpu-large"]')
        assert page.input_value("#fh-walltime") == "04:00:00"
        assert page.get_attribute("#fh-memory", "max") == "12"
        page.check('input[name="profile"][value="cpu-small"]')
        page.fill("#fh-memory", "3")
        page.screenshot(path=str(ARTIFACTS / "browser-spawn-form.png"), full_page=True)
        with hub.watch([user]) as watch:
            page.click("#spawn_form button[type=submit]")
            # JupyterLab's launcher, served from the Slurm job
            wait_for(page, ".jp-Launcher", watch, bound=SPAWN_BOUND)
        assert f"/user/{user}/lab" in page.url, page.url
        shot = ARTIFACTS / "browser-jupyterlab.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        page.close()
    jobs = [(j.state, j.name, j.memory_mb) for j in squeue_jobs([user])]
    assert jobs == [("RUNNING", f"factoryhub-server-{user}", 3 * 1024)]
    hub.stop_server(user)


def visible_profiles(page: Page) -> list[str | None]:
    return [
        card.get_attribute("data-profile")
        for card in page.locator(".fh-profile").all()
        if card.is_visible()
    ]


def test_oidc_sign_in_through_the_provider_page_to_jupyterlab(
    oidc_hub: RunningHub, browser: Browser
) -> None:
    """A member of two projects signs in on the provider's own page, sees exactly their
    projects' profiles, starts under one project and lands in JupyterLab."""
    user = "fhtest-oidc-two"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{oidc_hub.url}/hub/oauth_login?next=/hub/spawn")
        wait_for(page, "form#login-form")
        page.screenshot(path=str(ARTIFACTS / "browser-idp-login.png"))
        page.fill("#username", user)
        page.fill("#password", TEST_PASSWORD)
        page.click("#sign-in")
        wait_for(page, "#factoryhub-form")
        options = page.locator("#fh-project option")
        assert sorted(t.strip() for t in options.all_inner_texts()) == [
            "ACME AI (startup) (account acme-ai)",
            "FH Test Lab (account fhtest-lab)",
        ]
        page.select_option("#fh-project", "fhtest-lab")
        visible = visible_profiles(page)
        assert visible == ["cpu-small"]
        page.select_option("#fh-project", "acme-ai")
        visible = visible_profiles(page)
        # gpu-1 belongs to acme-ai but is reserved for the group gpu-users
        assert visible == ["cpu-small", "cpu-large"]
        page.select_option("#fh-project", "fhtest-lab")
        page.screenshot(path=str(ARTIFACTS / "browser-oidc-spawn-form.png"), full_page=True)
        with oidc_hub.watch([user]) as watch:
            page.click("#spawn_form button[type=submit]")
            wait_for(page, ".jp-Launcher", watch, bound=SPAWN_BOUND)
        shot = ARTIFACTS / "browser-oidc-jupyterlab.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        page.close()
    jobs = [(j.state, j.account) for j in squeue_jobs([user])]
    assert jobs == [("RUNNING", "fhtest-lab")]
    oidc_hub.stop_server(user)


def test_run_a_report_from_its_form_and_open_its_html(
    oidc_hub: RunningHub, browser: Browser
) -> None:
    """Staff sign in, follow the hub's Reports link, run a report from its form, watch the
    run succeed and open its HTML rendering."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{oidc_hub.url}/hub/oauth_login?next=/hub/home")
        wait_for(page, "form#login-form")
        page.fill("#username", "fhtest-oidc")
        page.fill("#password", TEST_PASSWORD)
        page.click("#sign-in")
        wait_for(page, "#factoryhub-reports-link")
        page.click("#factoryhub-reports-link")
        wait_for(page, ".fh-report[data-report=quick]")
        page.click(".fh-report[data-report=quick] a")
        wait_for(page, "#fh-report-form")
        assert page.input_value("#p_n") == "5" and page.is_checked("#p_show_plot")
        # a bad value comes back with the problem named, nothing submitted
        page.fill("#p_n", "lots")
        page.click("#fh-run-now")
        problem = wait_for(page, ".fh-problem[data-parameter=n]")
        assert "whole number" in problem.inner_text()
        # the next runs of a schedule show while it is typed
        page.fill("#cron", "30 6 * * 1")
        page.wait_for_function(
            "document.getElementById('fh-next-runs').textContent.startsWith('Next runs')"
        )
        page.fill("#cron", "")
        page.fill("#p_n", "7")
        page.fill("#p_label", "in the browser")
        page.screenshot(path=str(ARTIFACTS / "browser-report-form.png"), full_page=True)
        with oidc_hub.watch([], users=("fhtest-oidc", REPORTS_USER)) as watch:
            page.click("#fh-run-now")
            wait_for(page, ".fh-run-facts")
            # the page follows the run (a Slurm job) until it succeeds
            wait_for(page, ".fh-status-succeeded", watch, bound=SPAWN_BOUND, page_progress=False)
        page.screenshot(path=str(ARTIFACTS / "browser-report-run.png"), full_page=True)
        with page.expect_popup() as popup:
            page.click("#fh-open-html")
        html = popup.value
        html.wait_for_load_state()
        text = html.content()
        assert "label=in the browser total=31.5" in text
        assert html.locator("img").count() >= 1  # the plot, inline
        html.screenshot(path=str(ARTIFACTS / "browser-report-html.png"), full_page=True)
        html.close()
    finally:
        page.close()


def test_a_trainer_starts_all_opens_a_participants_server_and_collects(
    oidc_hub: RunningHub, browser: Browser
) -> None:
    """A trainer follows the hub's Courses link to the course page, starts every
    participant's server, opens one of them in JupyterLab, collects the notebooks and stops
    all: the course day of the issue's "done when", in the browser."""
    reset_course_homes()
    for pupil in COURSE_PUPILS:  # participants who have signed in once (their accounts)
        hub_sign_in(oidc_hub, pupil, TEST_PASSWORD)[0].close()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(f"{oidc_hub.url}/hub/oauth_login?next=/hub/home")
        wait_for(page, "form#login-form")
        page.fill("#username", COURSE_TRAINER)
        page.fill("#password", TEST_PASSWORD)
        page.click("#sign-in")
        wait_for(page, "#factoryhub-courses-link")
        page.click("#factoryhub-courses-link")
        page.click(f".fh-managed-course[data-course={COURSE}]")
        wait_for(page, "#fh-capacity")
        assert page.get_attribute("#fh-capacity", "data-waiting") == "3"
        page.screenshot(path=str(ARTIFACTS / "browser-course-page.png"), full_page=True)
        with oidc_hub.watch([(pupil, COURSE) for pupil in COURSE_PUPILS]) as watch:
            page.click("#fh-start-all")
            assert "Starting 3 server(s)" in page.inner_text("#fh-done")
            # the page follows the servers until every one runs
            for pupil in COURSE_PUPILS:
                running = f".fh-participant[data-name={pupil}][data-state=running]"
                wait_for(page, running, watch, bound=SPAWN_BOUND, page_progress=False)
        page.screenshot(path=str(ARTIFACTS / "browser-course-running.png"), full_page=True)
        with page.expect_popup() as popup:
            page.click(f".fh-participant[data-name={COURSE_PUPILS[0]}] .fh-open")
        lab = popup.value
        # the hub asks the trainer once to confirm the access to the participant's server
        wait_for(lab, "text=Authorize access")
        lab.screenshot(path=str(ARTIFACTS / "browser-course-authorize.png"))
        lab.click("button[type=submit]")
        wait_for(lab, "text=01-welcome.ipynb", bound=SPAWN_BOUND)  # the course folder
        assert f"/user/{COURSE_PUPILS[0]}/{COURSE}/lab" in lab.url, lab.url
        lab.screenshot(path=str(ARTIFACTS / "browser-course-participant-lab.png"))
        lab.close()
        page.click("#fh-collect")
        # every participant's notebooks (one or more each, as the materials' commits went)
        collected = re.search(
            r"Collected (\d+) notebook\(s\) of 3 participant\(s\)", page.inner_text("#fh-done")
        )
        assert collected and int(collected.group(1)) >= 3, page.inner_text("#fh-done")
        page.click("#fh-stop-all")
        assert "Stopping 3 server(s)" in page.inner_text("#fh-done")
        with oidc_hub.watch([], users=tuple(COURSE_PUPILS)) as watch:
            for pupil in COURSE_PUPILS:
                stopped = f".fh-participant[data-name={pupil}][data-state=stopped]"
                wait_for(page, stopped, watch, page_progress=False)
    finally:
        page.close()
