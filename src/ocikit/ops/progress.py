"""What long operations report, so the CLI can draw a bar and the library stays quiet."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def begin(self, total: int, description: str) -> None: ...
    def step(self, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def end(self) -> None: ...


class NullProgress:
    def begin(self, total: int, description: str) -> None:
        pass

    def step(self, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def end(self) -> None:
        pass
