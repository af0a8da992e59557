"""Console output for the CLI: a rich progress bar on terminals, plain lines otherwise (CI, pipes, NO_COLOR)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from negmine.trainer import PlainReporter


def make_reporter(quiet: bool = False) -> Any:
    """A rich progress bar when stderr is a terminal and not under CI; plain lines otherwise."""
    if quiet or not sys.stderr.isatty() or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return PlainReporter(quiet=quiet)
    return RichReporter()


class RichReporter:
    """Progress bar with loss, rate and ETA; logs and warnings printed above it."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = None
        self.task_id = None

    def start(self, total_steps: int, done_steps: int, run_dir: Path) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(f"run directory: [bold]{run_dir}[/]")
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} step/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=total_steps, completed=done_steps, stage="",
                                              loss="-", rate="-")

    def step(self, step: int, total: int, metrics: Mapping[str, Any], log_line: bool) -> None:
        self.progress.update(self.task_id, completed=step, stage=str(metrics.get("stage", "")),
                             loss=f"{metrics['loss']:.4f}", rate=f"{metrics.get('steps_per_s', 0):.1f}")

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
