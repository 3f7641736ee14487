"""An HTTP response body as a readable stream, for the engine's save stream and registry blobs.

Chunks are taken as they arrive (``iter_raw()`` without a size: httpx's re-chunking would
copy every byte once more). When the connection breaks, ``on_break(offset, error)`` decides:
it returns a response that goes on from ``offset`` (a ``Range`` request), or raises.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx


class ResponseStream(io.RawIOBase):
    def __init__(
        self,
        response: httpx.Response,
        on_break: Callable[[int, httpx.HTTPError], httpx.Response],
    ) -> None:
        super().__init__()
        self._response: httpx.Response | None = response
        self._chunks = response.iter_raw()
        self._on_break = on_break
        self._offset = 0
        self._cur = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._cur:
            try:
                self._cur = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except httpx.HTTPError as e:
                self._drop()
                self._response = self._on_break(self._offset, e)
                self._chunks = self._response.iter_raw()
        n = min(len(buffer), len(self._cur))
        buffer[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        self._offset += n
        return n

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()
