"""The Helm chart's hub and proxy pods, run for real with ``podman kube play`` (issue 19, item
3): ``helm template`` for values that point at the local factory, the hub image that
``make images`` builds, pods on a podman network of the test's own (10.89.79.0/24). A person
signs in through the identity provider in Chromium via the proxy pod, starts a server (a
Slurm job of theirs on this host, submitted through slurmrestd), runs a cell in JupyterLab,
stops it, and runs a report whose HTML opens. The hub pod's passwd knows nobody of them.

What podman does differently from a kubelet, and how the objects are adapted for it, is in
``factoryhub.local.kube_podman``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from factoryhub.local import kube_podman, kube_tryout
from tests.support.browser import ARTIFACTS, SPAWN_BOUND, chromium, wait_for
from tests.support.waiting import SpawnWatch, squeue_jobs, wait_no_jobs, wait_until

from .idp_fixtures import TEST_PASSWORD, scrypt_record
from .oidc_fixtures import reports_folder

pytestmark = [pytest.mark.k8s, pytest.mark.slurm, pytest.mark.browser, pytest.mark.images]

CELL = 'import getpass, os; print("answer", 6 * 7, getpass.getuser(), os.environ["SHELL"])'
GROUP = "fhtest-kube"  # the IdP's group of the test's project
PROJECT = "fhtest-kube"


@dataclass
class Kube:
    running: kube_tryout.Running
    user: str

    @property
    def url(self) -> str:
        return self.running.tryout.public_url

    def hub(self) -> str:
        return kube_podman.container_of(self.running.pods[0], "hub")

    def watch(self, users: list[str]) -> SpawnWatch:
        return SpawnWatch(
            self.url, self.running.operator_token, users, log_tail=self.running.hub_log
        )


def _helm() -> str:
    from tests.chart.helm_tools import require_helm

    return require_helm()


def _tryout(state: Path, user: str, account: str, reports: Path) -> kube_tryout.Tryout:
    users = state / "idp-users.json"
    record = scrypt_record(user, TEST_PASSWORD, name="FH Kube", groups=[GROUP])
    users.write_text(json.dumps({"users": [record]}))
    project = {
        "name": PROJECT,
        "display_name": "FH Kube Lab",
        "account": account,
        "groups": [GROUP],
        "profiles": ["cpu-small"],
    }
    reports_site = {
        "folders": [str(reports)],
        "job": {"partition": "batch", "walltime": "00:10:00"},
        "poll_interval": 1,
        "service_project": PROJECT,
        "access": [{"groups": [GROUP], "reports": ["quick"], "allow": ["run"]}],
    }
    # the report notebooks, at the same path in the hub pod as on the compute node
    mount = {"name": "reports", "mountPath": str(reports), "readOnly": True}
    volume = {"name": "reports", "hostPath": {"path": str(reports), "type": "Directory"}}
    return kube_tryout.Tryout(
        network="fhtest-kube",
        subnet="10.89.79.0/24",
        state_dir=state,
        idp_port=19200,
        restd_port=16820,
        users_file=users,
        site={"projects": [project], "reports": reports_site, "dask": {"enabled": False}},
        values={"hub": {"extraVolumes": [volume], "extraVolumeMounts": [mount]}},
    )


@pytest.fixture(scope="module")
def kube(slurm: Any, unix_users: Any) -> Iterator[Kube]:
    (user,) = unix_users(1)
    state = Path(tempfile.mkdtemp(prefix="factoryhub-kube-", dir="/var/tmp"))
    reports = reports_folder()
    tryout = _tryout(state, user, unix_users.account, reports)
    helm = _helm()
    started = time.monotonic()
    image = kube_tryout.hub_image()
    print(f"hub image {image} built or reused in {time.monotonic() - started:.0f} s")
    try:
        running = kube_tryout.up(tryout, image, helm)
        print(f"pods up in {time.monotonic() - started:.0f} s: {running.pods}")
        yield Kube(running, user)
    finally:
        gone = kube_tryout.down(tryout)
        print(f"stopped: {', '.join(gone)}")
        unix_users.cancel_jobs()
        subprocess.run(["rm", "-rf", str(state), str(reports)], check=False)


def test_the_hub_pod_knows_no_person(kube: Kube) -> None:
    """The pod runs as the image's user, and its passwd holds none of the people it serves
    (nor the local factory's demo users): who exists is Slurm's word."""
    hub = kube.hub()
    said = kube_podman.podman("exec", hub, "id", "-u").stdout.strip()
    assert said == "999"
    for person in (kube.user, "sofia", "alice"):
        found = kube_podman.podman("exec", hub, "getent", "passwd", person, check=False)
        assert found.returncode == 2, f"{person} is in the hub pod's passwd: {found.stdout}"
    # and no way into the host's Slurm but slurmrestd: the image has Slurm's commands (for
    # the "local" mode) but the pod has no munge key to use them with
    found = kube_podman.podman("exec", hub, "test", "-e", "/etc/munge/munge.key", check=False)
    assert found.returncode == 1


def _sign_in(page: Page, kube: Kube, then: str) -> None:
    page.goto(f"{kube.url}/hub/oauth_login?next={then}")
    wait_for(page, "form#login-form")
    assert page.url.startswith(kube.running.tryout.issuer), page.url
    page.screenshot(path=str(ARTIFACTS / "kube-idp-login.png"))
    page.fill("#username", kube.user)
    page.fill("#password", TEST_PASSWORD)
    page.click("#sign-in")


def _run_a_cell(page: Page) -> str:
    """A new notebook from the launcher; one cell run; its output. The cell is run again
    (Ctrl+Enter: in place) until it shows an output: a run sent before the notebook's kernel
    is connected is dropped by JupyterLab."""
    page.click(".jp-LauncherCard[data-category=Notebook]")
    editor = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first
    editor.wait_for(timeout=60_000)
    editor.click()
    page.keyboard.type(CELL)
    output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").first

    def shown() -> str:
        editor.click()
        page.keyboard.press("Control+Enter")
        with contextlib.suppress(PlaywrightTimeout):
            output.wait_for(timeout=3_000)
            return output.inner_text()
        return ""

    def describe() -> str:
        return " ".join(page.inner_text("body").split())[-600:]

    return wait_until(shown, 120, describe, first=0, longest=0)


def test_sign_in_start_run_a_cell_and_stop_through_the_pods(kube: Kube, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _sign_in(page, kube, "/hub/spawn")
        wait_for(page, "#factoryhub-form")
        assert page.url.startswith(kube.url), page.url
        page.screenshot(path=str(ARTIFACTS / "kube-spawn-form.png"), full_page=True)
        with kube.watch([kube.user]) as watch:
            clicked = time.monotonic()
            page.click("#spawn_form button[type=submit]")
            wait_for(page, "#jp-main-dock-panel", watch, bound=SPAWN_BOUND)  # JupyterLab
            to_lab = time.monotonic() - clicked
        assert page.url.startswith(f"{kube.url}/user/{kube.user}/lab"), page.url
        # a fresh layout (a returning user's JupyterLab reopens their last tabs)
        page.goto(f"{kube.url}/user/{kube.user}/lab?reset")
        wait_for(page, ".jp-Launcher")
        page.screenshot(path=str(ARTIFACTS / "kube-jupyterlab.png"))
        (job,) = squeue_jobs([kube.user])
        assert (job.state, job.account) == ("RUNNING", "fhtest"), job
        said = _run_a_cell(page)
        # run as the user, with their login shell from the compute node (the pod knows none)
        assert f"answer 42 {kube.user} /bin/bash" in said, said
        page.screenshot(path=str(ARTIFACTS / "kube-cell.png"))
        (ARTIFACTS / "kube-timings.json").write_text(
            json.dumps({"start_to_jupyterlab_s": round(to_lab, 1)}) + "\n"
        )
        print(f"Start -> JupyterLab through the proxy pod: {to_lab:.1f} s")
        # stop from the hub's home page
        page.goto(f"{kube.url}/hub/home")
        page.click("#stop")
        wait_for(page, "#start", page_progress=False)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "kube-failed.png"))
        raise
    finally:
        page.close()
    wait_no_jobs([kube.user], timeout=60)


def test_a_report_runs_and_its_html_opens_through_the_pods(kube: Kube, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _sign_in(page, kube, "/hub/home")
        wait_for(page, "#factoryhub-reports-link")
        page.click("#factoryhub-reports-link")
        wait_for(page, ".fh-report[data-report=quick]")
        page.click(".fh-report[data-report=quick] a")
        wait_for(page, "#fh-report-form")
        page.fill("#p_n", "7")
        page.fill("#p_label", "in a pod")
        with kube.watch([]) as watch:
            watch.users = [kube.user]
            page.click("#fh-run-now")
            wait_for(page, ".fh-run-facts")
            wait_for(page, ".fh-status-succeeded", watch, bound=SPAWN_BOUND, page_progress=False)
        page.screenshot(path=str(ARTIFACTS / "kube-report-run.png"), full_page=True)
        with page.expect_popup() as popup:
            page.click("#fh-open-html")
        html = popup.value
        html.wait_for_load_state()
        assert "label=in a pod total=31.5" in html.content()
        html.screenshot(path=str(ARTIFACTS / "kube-report-html.png"), full_page=True)
        html.close()
    finally:
        page.close()
    wait_no_jobs([kube.user], timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b
