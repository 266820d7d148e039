"""Headless Chromium for the browser tests: its arguments, and waits that fail with what the
page, the hub and Slurm last said (never a bare timeout)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ElementHandle, Page, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.hub import REPO
from tests.support.waiting import SpawnWatch, wait_until

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Waits are bounds, not waits: each look lasts at most SLICE_MS (Playwright returns as soon
# as the element is there); between looks the wait checks for progress. A wait fails after
# STALL seconds without any (no new hub progress event, no change of the job's state in Slurm,
# no job waiting in the queue, no response loaded by the page) or after its bound in all.
SLICE_MS = 2_000
STALL = 120.0
SPAWN_BOUND = 600.0  # a server (a Slurm job) coming up, from the click to the page
PAGE_BOUND = 180.0  # a page of the hub's own


def without_query(url: str) -> str:
    """``url`` without its query (which may hold a token)."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


class PageLoads:
    """The page's network responses while a wait runs: the browser's own progress."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0
        self.last = "none"

    def _seen(self, response: Response) -> None:
        self.count += 1
        self.last = f"{response.status} {without_query(response.url)}"

    def __enter__(self) -> PageLoads:
        self.page.on("response", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        self.page.remove_listener("response", self._seen)

    def describe(self) -> str:
        text = "(unreadable)"
        with contextlib.suppress(PlaywrightError):
            text = " ".join(self.page.inner_text("body", timeout=SLICE_MS).split())[:400]
        return (
            f"the page: {without_query(self.page.url)}; {self.count} response(s) during the "
            f"wait, the last {self.last}; it shows: {text}"
        )


def wait_for(
    page: Page,
    selector: str,
    watch: SpawnWatch | None = None,
    *,
    bound: float = PAGE_BOUND,
    page_progress: bool = True,
) -> ElementHandle:
    """Wait for ``selector`` on ``page`` while ``watch``'s spawns (if any) and the page's
    loads (unless ``page_progress`` is False: pages that poll always load) make progress;
    fail at once when the hub says a spawn failed, and with all that was seen on a bound."""
    with PageLoads(page) as loads:

        def found() -> ElementHandle | None:
            if watch is not None and watch.failed():
                raise AssertionError(f"{watch.failed()}\n{loads.describe()}\n{watch.describe()}")
            with contextlib.suppress(PlaywrightTimeout):
                return page.wait_for_selector(selector, timeout=SLICE_MS)
            return None

        def progress() -> Any:
            return (
                watch.progress() if watch is not None else None,
                loads.count if page_progress else None,
            )

        def describe() -> str:
            seen = [f"waiting for {selector!r}", loads.describe()]
            if watch is not None:
                seen.append(watch.describe())
            return "\n".join(seen)

        return wait_until(
            found, bound, describe, progress=progress, stall=STALL, first=0, longest=0
        )


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    found = shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed: run `make install-test`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=found, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
