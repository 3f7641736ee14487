"""A progress bar on stderr when it is a terminal; silence otherwise."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from ..model.jsondoc import printable

if TYPE_CHECKING:  # (the operations load when a command runs one)
    from rich.progress import TaskID

    from ..ops.progress import ProgressReporter


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
            redirect_stdout=False,  # data on stdout is never moved to stderr
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()  # a line printed never races the bar's start or stop

    def begin(self, total: int, description: str) -> None:
        """Start (or restart, for the next phase) the one bar."""
        description = printable(description, 80)  # it may hold a name from the input
        with self._lock:
            if self._task is None:
                self._progress.start()
            else:  # a new task, not a reset: a reset keeps the last total when it is unknown
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total or None)

    def step(self, description: str) -> None:
        if self._task is not None:
            description = printable(description, 80)
            self._progress.update(self._task, description=description)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def end(self) -> None:
        """Stop and erase the bar (a later ``begin`` starts a new one)."""
        with self._lock:
            task, self._task = self._task, None
            self._progress.stop()
            if task is not None:
                self._progress.remove_task(task)

    def print(self, line: str) -> bool:
        """``line`` (printable already) above the bar, whole; False if no bar is drawn."""
        from rich.text import Text

        with self._lock:
            if self._task is None:
                return False
            self._progress.console.print(Text(line), soft_wrap=True, highlight=False)
            return True


def reporter(quiet: bool) -> ProgressReporter:
    if quiet or not sys.stderr.isatty():
        from ..ops.progress import NullProgress

        return NullProgress()
    return RichProgress()


def say_through(progress: ProgressReporter, line: str) -> bool:
    """``line`` printed above ``progress``'s bar if one is drawn (True), else nothing."""
    return isinstance(progress, RichProgress) and progress.print(line)
