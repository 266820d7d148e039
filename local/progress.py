"""Numbered steps for ``factoryhub-local up``: a step that did something prints what and how
long it took; one that found everything in place prints nothing; a long one says every
``heartbeat_s`` seconds that it still runs (the same shape as install.sh's output)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Step:
    """What a step did, set by its body (empty: nothing was to do)."""

    did: list[str] = field(default_factory=list)


def seconds(elapsed: float) -> str:
    """``0.4 s`` below 10 s, ``84 s`` above (as install.sh prints them)."""
    return f"{elapsed:.1f} s" if elapsed < 10 else f"{elapsed:.0f} s"


class Progress:
    def __init__(self, total: int, say: Callable[[str], None], heartbeat_s: float = 20) -> None:
        self.total = total
        self.say = say
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.done: list[str] = []

    @contextmanager
    def step(self, number: int, title: str, still: str) -> Iterator[Step]:
        """Run the body as step ``number``; ``still`` completes "still ... (40 s)"."""
        step = Step()
        began = time.monotonic()
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.heartbeat_s):
                self.say(f"      still {still} ({time.monotonic() - began:.0f} s)")

        beat = threading.Thread(target=heartbeat, name=f"progress-{number}", daemon=True)
        beat.start()
        try:
            yield step
        finally:
            stop.set()
            beat.join()
        if step.did:
            took = seconds(time.monotonic() - began)
            self.say(f"[{number}/{self.total}] {title}: {'; '.join(step.did)} ({took})")
            self.done.append(title)

    def summary(self, verb: str) -> str:
        """The closing line: ``<verb> in 23 s``, or that everything was already there."""
        took = seconds(time.monotonic() - self.started)
        if self.done:
            return f"{verb} in {took}"
        return f"everything was already running; nothing to do ({took})"
