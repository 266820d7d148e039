"""A small job monitor for any notebook: your Slurm jobs, their state, node, time, a cancel
button each. ``display(JobMonitor())`` and it refreshes itself.

    from factoryhub.helpers.job_monitor import JobMonitor
    JobMonitor()
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable

import ipywidgets as widgets

from factoryhub.helpers import slurm_jobs
from factoryhub.helpers.slurm_jobs import MyJob, SlurmError, SlurmUnavailable

STATE_COLOURS = {"RUNNING": "#1a7f37", "PENDING": "#9a6700", "COMPLETING": "#57606a"}


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def describe(job: MyJob) -> list[str]:
    """The cells of one row: id, what, name, state (with the reason), node, elapsed, left."""
    info = job.info
    state = info.state + (f" ({info.reason})" if info.pending and info.reason else "")
    return [
        info.job_id,
        job.kind,
        info.name,
        state,
        info.nodes or "-",
        human_seconds(job.elapsed_s),
        human_seconds(job.remaining_s),
    ]


HEADER = ["job", "what", "name", "state", "node", "elapsed", "left"]


class JobMonitor(widgets.VBox):
    """Your jobs (server, Dask workers, trainings, reports), refreshed every ``every`` s."""

    def __init__(
        self,
        every: float = 5.0,
        list_jobs: Callable[[], list[MyJob]] = slurm_jobs.my_jobs,
        cancel: Callable[[str], None] = slurm_jobs.cancel,
    ) -> None:
        self.every = every
        self._list_jobs, self._cancel = list_jobs, cancel
        self.status = widgets.HTML()
        self.table = widgets.GridBox(layout=widgets.Layout(grid_gap="2px 12px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.auto = widgets.Checkbox(value=True, description="refresh by itself", indent=False)
        super().__init__([widgets.HBox([self.refresh_button, self.auto, self.status]), self.table])
        self.jobs: list[MyJob] = []
        self._task: asyncio.Task[None] | None = None
        self.refresh()
        self._start_timer()

    def _start_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a kernel: refresh by hand
            return
        self._task = loop.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if self.auto.value:
                self.refresh()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        super().close()

    def refresh(self) -> None:
        try:
            self.jobs = self._list_jobs()
        except SlurmUnavailable as e:
            self.status.value = (
                f"<span style='color:#9a6700'>Slurm did not answer; trying again. ({e})</span>"
            )
            return
        except SlurmError as e:
            self.status.value = f"<span style='color:#cf222e'>{html.escape(str(e))}</span>"
            return
        count = len(self.jobs)
        self.status.value = f"{count} job{'s' if count != 1 else ''}" if count else "no jobs"
        self._render()

    def _render(self) -> None:
        cells: list[widgets.Widget] = [widgets.HTML(f"<b>{h}</b>") for h in [*HEADER, ""]]
        for job in self.jobs:
            row = describe(job)
            colour = STATE_COLOURS.get(job.info.state, "#cf222e")
            for i, text in enumerate(row):
                style = f" style='color:{colour}'" if i == 3 else ""
                cells.append(widgets.HTML(f"<span{style}>{html.escape(text)}</span>"))
            button = widgets.Button(
                description="Cancel",
                button_style="danger",
                layout=widgets.Layout(width="80px"),
                tooltip=f"scancel {job.info.job_id}",
            )
            button.on_click(lambda _, job_id=job.info.job_id: self.cancel(job_id))
            cells.append(button)
        self.table.layout.grid_template_columns = f"repeat({len(HEADER) + 1}, auto)"
        self.table.children = cells

    def cancel(self, job_id: str) -> None:
        try:
            self._cancel(job_id)
        except (SlurmError, SlurmUnavailable, ValueError) as e:
            self.status.value = f"<span style='color:#cf222e'>{html.escape(str(e))}</span>"
            return
        self.refresh()
        self.status.value = f"cancelled job {html.escape(job_id)}; " + self.status.value
