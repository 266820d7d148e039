"""factoryhub-local up's step lines: printed only when a step did something, with its time;
a heartbeat while a long step runs; the closing line."""

from __future__ import annotations

import time

from factoryhub.local import progress


def test_a_step_that_did_something_prints_one_line_with_its_time() -> None:
    lines: list[str] = []
    steps = progress.Progress(4, lines.append)
    with steps.step(2, "hub", "starting the hub") as step:
        step.did.append("started (pid 42)")
    assert len(lines) == 1
    assert lines[0].startswith("[2/4] hub: started (pid 42) (") and lines[0].endswith(" s)")
    assert steps.summary("up").startswith("up in ")


def test_nothing_to_do_prints_nothing_but_the_summary() -> None:
    lines: list[str] = []
    steps = progress.Progress(4, lines.append)
    for number in range(1, 5):
        with steps.step(number, f"step {number}", "working"):
            pass
    assert lines == []
    assert steps.summary("up").startswith("everything was already running; nothing to do (")


def test_a_long_step_says_that_it_still_runs() -> None:
    lines: list[str] = []
    steps = progress.Progress(1, lines.append, heartbeat_s=0.1)
    with steps.step(1, "Slurm daemons", "starting the Slurm daemons") as step:
        time.sleep(0.35)
        step.did.append("started munged 1")
    beats = [ln for ln in lines if "still starting the Slurm daemons" in ln]
    assert len(beats) >= 2, lines
    assert lines[-1].startswith("[1/1] Slurm daemons: started munged 1 (")
    time.sleep(0.25)  # the heartbeat stopped with the step
    assert lines[-1].startswith("[1/1] Slurm daemons")


def test_a_failing_step_stops_its_heartbeat_and_prints_no_result() -> None:
    lines: list[str] = []
    steps = progress.Progress(1, lines.append, heartbeat_s=0.05)
    try:
        with steps.step(1, "hub", "starting the hub") as step:
            step.did.append("half")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count
    assert not any(ln.startswith("[1/1]") for ln in lines)


def test_seconds() -> None:
    assert progress.seconds(0.44) == "0.4 s"
    assert progress.seconds(84.2) == "84 s"
