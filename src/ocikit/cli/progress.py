"""A progress bar on stderr when it is a terminal; silence otherwise."""

from __future__ import annotations

import sys

from ..model.jsondoc import printable
from ..ops.progress import NullProgress, ProgressReporter


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: int | None = None

    def begin(self, total: int, description: str) -> None:
        """Start (or restart, for the next phase) the one bar."""
        description = printable(description, 80)  # it may hold a name from the input
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(description, total=total or None)
        else:
            self._progress.reset(self._task, total=total or None, description=description)

    def step(self, description: str) -> None:
        if self._task is not None:
            description = printable(description, 80)
            self._progress.update(self._task, description=description)  # type: ignore[arg-type]

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)  # type: ignore[arg-type]

    def end(self) -> None:
        self._progress.stop()


def reporter(quiet: bool) -> ProgressReporter:
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()
