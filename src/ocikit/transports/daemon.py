"""``docker-daemon:NAME[:TAG]``: an image in a Docker engine, through its HTTP API.

As a source, the engine's ``save`` stream (``GET /images/{name}/get``) is read once by the
docker-archive reader, exactly as a ``docker save`` piped in. As a destination, the legacy
docker-archive that ``docker-archive:`` writes is streamed to ``POST /images/load`` as it is
made (a pipe between a writer thread and the request body: nothing spooled twice).

The engine is found as the ``docker`` command finds it: ``DOCKER_HOST`` (``unix://PATH`` or
``tcp://HOST:PORT``, plain HTTP), else ``unix:///var/run/docker.sock``.

Time (``httpstream.Budget``; a stalled engine ends in one line, never a hang). A save may take
``PREPARE`` s before its first byte (docker writes the whole image to a temporary directory
before it sends any), then must average ``MIN_RATE``, with at most ``IDLE`` s of credit: a
pause of ``IDLE`` s is always allowed, a stall or a trickle ends within about ``IDLE`` s. A
load's body goes at the same rate; then the engine loads, telling its progress (the load is
not ``quiet``): it may be silent ``IDLE`` s at a time and must be done within ``PREPARE`` s
plus one per ``LOAD_RATE`` bytes of the image. Time ocikit spends itself does not count.
Sizes: an error's body is read up to ``MAX_ERROR_BODY``, an event of the load's answer up to
``MAX_EVENT``; the engine's messages are printed as one line of printable text.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import quote

import httpcore
import httpx

from ..errors import DestinationError, InputError, NotFoundError, UsageError
from ..layer.streams import CHUNK
from ..model.jsondoc import SMALL_LIMIT, load_json, printable, show
from .archive import TarArchive, Tee
from .docker_archive import DockerArchiveDestination, DockerArchiveSource
from .httpstream import (
    Budget,
    ResponseStream,
    connection_failure,
    error_words,
    install_deadlines,
    one_line,
    read_bounded,
)
from .reference import Reference

DEFAULT_HOST = "unix:///var/run/docker.sock"
VERSION_SECONDS = 10.0  # an engine's answer to "what version are you", before a load
MAX_ERROR_BODY = 64 << 10  # what is read of an error answer (for its message)
MAX_EVENT = SMALL_LIMIT  # one line of the JSON stream that answers a load
TIMEOUT = httpx.Timeout(30.0, read=None)  # per socket operation; the budgets below cut them
IDLE = 60.0  # seconds the engine may stay silent in the middle of a stream
MIN_RATE = 32 << 10  # bytes a second a save or a load's body must average (see Budget)
PREPARE = 600.0  # seconds the engine may take before a save's first byte, or to load
LOAD_RATE = 1 << 20  # bytes a second the engine loads, at least, once it has them all


class _LoadBudget(Budget):
    """The time of a load. Its body goes as a save's comes (``MIN_RATE`` on average, with
    ``IDLE`` s of credit); then the engine answers as it loads (progress events): silent for
    ``IDLE`` s at most at a time, and done within ``PREPARE`` + body / ``LOAD_RATE`` s."""

    def __init__(self) -> None:
        super().__init__(IDLE, MIN_RATE)
        self.sent = 0  # bytes of the body
        self.answer_by: float | None = None  # set when the answer is first waited for
        self.silent = False  # the last wait was cut by IDLE, not by answer_by

    def allowance(self, timeout: float | None, error: type[Exception]) -> float:
        if error is httpcore.ReadTimeout and self.answer_by is None:
            self.answer_by = time.monotonic() + PREPARE + self.sent / LOAD_RATE
        if self.answer_by is None:
            return super().allowance(timeout, error)
        left = self.answer_by - time.monotonic()
        if left <= 0:
            self.expired, self.silent = True, False
            raise error(self.reason())
        self.silent = left > IDLE
        allowed = min(IDLE, left)
        return allowed if timeout is None else min(timeout, allowed)

    def spend(self, elapsed: float, moved: int = 0) -> None:
        if self.answer_by is None:  # answering, time is what answer_by says
            self.sent += moved
            super().spend(elapsed, moved)

    def reason(self) -> str:
        if self.answer_by is None:
            return f"the engine takes the image too slowly (under {MIN_RATE >> 10} KiB/s)"
        if self.silent:
            return f"the engine stopped answering (silent for {IDLE:g} s)"
        seconds = PREPARE + self.sent / LOAD_RATE
        return f"the engine did not finish loading within {seconds:.0f} s"


def _stream_reason() -> str:
    return f"the engine's stream is too slow (under {MIN_RATE >> 10} KiB/s on average)"


class Engine:
    """The few calls of the engine's API that ocikit needs, each within its time (module
    constants): a save may take ``PREPARE`` s to begin (docker prepares the whole image
    first), then must average ``MIN_RATE`` with ``IDLE`` s of credit (a pause of ``IDLE`` s
    is allowed to an engine that kept up); a load, see ``_LoadBudget``."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        if self.host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=self.host[len("unix://") :])
            base = "http://docker"
        elif self.host.startswith(("tcp://", "http://")):
            transport = httpx.HTTPTransport()
            base = "http://" + self.host.split("://", 1)[1]
        else:
            raise UsageError(
                f"DOCKER_HOST {show(self.host)}: expected unix://PATH or tcp://HOST:PORT"
            )
        self._client = httpx.Client(transport=transport, base_url=base, timeout=TIMEOUT)
        install_deadlines(self._client)

    def close(self) -> None:
        self._client.close()

    def version(self, seconds: float = 10.0) -> str:
        """``Docker 20.10.24 (API 1.41)``: what the engine says it is, within ``seconds``."""
        budget = Budget(seconds)
        with budget.active():
            try:
                response = self._client.send(
                    self._client.build_request("GET", "/version"), stream=True
                )
                with contextlib.closing(response):
                    if response.status_code != 200:
                        message = _engine_message(response)
                        raise InputError(f"docker engine at {self.host}: {message}")
                    raw, _ = read_bounded(response, SMALL_LIMIT, "the engine's version")
            except httpx.TransportError as e:
                if budget.expired:
                    raise InputError(f"docker engine at {self.host}: no answer") from None
                raise InputError(self._unreachable(e)) from None
        data = load_json(raw, "the engine's version", limit=SMALL_LIMIT)
        if not isinstance(data, dict):
            raise InputError(f"docker engine at {self.host}: its version is not an object")
        version = printable(str(data.get("Version", "?")), 40)
        api = printable(str(data.get("ApiVersion", "?")), 20)
        return f"Docker {version} (API {api})"

    def save(self, name: str) -> tuple[httpx.Response, Budget]:
        """The streaming response of ``docker save NAME``, and the budget to read it with."""
        what = f"docker-daemon:{name}"
        request = self._client.build_request("GET", f"/images/{quote(name)}/get")
        answer = Budget(PREPARE)  # docker prepares the whole image before it answers
        with answer.active():
            try:
                response = self._client.send(request, stream=True)
            except httpx.TransportError as e:
                if answer.expired:
                    raise InputError(
                        f"{what}: the engine sent nothing within {PREPARE:g} s"
                    ) from None
                raise InputError(self._unreachable(e)) from None
            if response.status_code != 200:
                message = _engine_message(response)
                response.close()
                if response.status_code == 404:
                    raise NotFoundError(f"{what}: {message}")
                raise InputError(f"{what}: the engine says: {message}")
        return response, Budget(IDLE, MIN_RATE)

    def load(self, body: Iterator[bytes], what: str) -> None:
        """``docker load`` of the archive ``body`` yields; the engine's error, if any, raised.
        Its progress events (not ``quiet``) say it is still at work."""
        request = self._client.build_request(
            "POST", "/images/load", headers={"Content-Type": "application/x-tar"}, content=body
        )
        budget = _LoadBudget()
        with budget.active():
            try:
                response = self._client.send(request, stream=True)
            except httpx.TransportError as e:
                raise DestinationError(f"{what}: {self._failure(budget, e)}") from None
            with contextlib.closing(response):
                if response.status_code != 200:
                    raise DestinationError(f"{what}: the engine says: {_engine_message(response)}")
                # a load that fails half-way still answers 200, with an error in the stream
                try:
                    for line in _lines(response, what):
                        with contextlib.suppress(InputError):
                            event = load_json(line, "the engine's answer", limit=MAX_EVENT)
                            if isinstance(event, dict) and event.get("error"):
                                message = one_line(str(event["error"]))
                                raise DestinationError(f"{what}: the engine says: {message}")
                except httpx.TransportError as e:
                    raise DestinationError(f"{what}: {self._failure(budget, e)}") from None

    def _failure(self, budget: Budget, error: httpx.TransportError) -> str:
        if budget.expired:
            return budget.reason()
        return self._unreachable(error)

    def _unreachable(self, error: httpx.TransportError) -> str:
        """``cannot reach the docker engine at HOST: WHY``, with a hint when nothing is
        listening there."""
        peer = self.host.split("://", 1)[1] if self.host.startswith("unix://") else self.host
        peer = peer.removeprefix("tcp://").removeprefix("http://")
        text, _ = connection_failure(error, peer)
        prefix = f"cannot reach {peer}: "
        if not text.startswith(prefix):
            return f"docker engine at {self.host}: {text}"
        why = text[len(prefix) :]
        if why in ("no such socket", "connection refused"):
            why += " (is dockerd running? DOCKER_HOST names the engine)"
        return f"cannot reach the docker engine at {self.host}: {why}"


def _lines(response: httpx.Response, what: str) -> Iterator[bytes]:
    """The lines of a streamed answer, none longer than ``MAX_EVENT``."""
    pending = b""
    for chunk in response.iter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
        if len(pending) > MAX_EVENT:
            raise DestinationError(f"{what}: the engine's answer has a line over 1 MiB")
    if pending:
        yield pending


def _engine_message(response: httpx.Response) -> str:
    """The engine's error (its JSON ``message``, else the text), as one printable line; at
    most ``MAX_ERROR_BODY`` of it is read, within the budget active."""
    try:
        body, _ = read_bounded(response, MAX_ERROR_BODY, "the engine's answer")
    except (httpx.HTTPError, InputError):
        body = b""
    try:
        data = load_json(body, "the engine's answer", limit=MAX_ERROR_BODY)
        message = data.get("message") if isinstance(data, dict) else None
    except InputError:
        message = None
    if not isinstance(message, str):
        message = body.decode(errors="replace")
    return one_line(message) or f"HTTP {response.status_code}"


def _response_stream(response: httpx.Response, what: str, budget: Budget) -> ResponseStream:
    """The engine's stream, read within ``budget``; it cannot be resumed: a break is an
    error."""

    def broke(_offset: int, error: httpx.HTTPError) -> httpx.Response:
        if budget.expired:
            raise InputError(f"{what}: {_stream_reason()}") from None
        raise InputError(f"{what}: the engine's stream broke: {error_words(error)}") from None

    return ResponseStream(response, broke, budget)


class DaemonSource(DockerArchiveSource):
    """An engine's image, read from its ``save`` stream in one pass."""

    def __init__(self, ref: Reference, tee: Tee | None = None) -> None:
        engine = Engine()
        what = str(ref)
        try:
            response, budget = engine.save(ref.path)
            try:
                stream = io.BufferedReader(_response_stream(response, what, budget), CHUNK)
                archive = TarArchive.from_stream(stream, what, tee)
            finally:
                response.close()
        finally:
            engine.close()
        try:  # the stream holds exactly the image asked for
            super().__init__(Reference("docker-archive", "-"), archive=archive, entry=0)
        except BaseException:
            archive.close()
            raise
        self.ref = ref
        self._owned = True


class DaemonDestination(DockerArchiveDestination):
    """``docker load`` of the legacy archive, streamed to the engine as it is written."""

    _writes_output = False  # to the engine, never to standard output
    _streams = False  # staged, then written to the engine's load at commit

    def ready(self) -> None:
        """The engine answers (its version asked for, within ``VERSION_SECONDS``)."""
        engine = Engine()
        try:
            engine.version(VERSION_SECONDS)
        except InputError as e:
            raise DestinationError(f"{self.ref}: {e}") from None
        finally:
            engine.close()

    def __init__(self, ref: Reference, additional_tags: Sequence[str] = ()) -> None:
        if ref.path.startswith("sha256:"):
            raise UsageError(f"{ref}: an image ID cannot be written to; name it NAME:TAG")
        super().__init__(Reference("docker-archive", "-", ref.path), additional_tags)
        self.ref = ref

    def commit(self) -> None:
        engine = Engine()
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def write() -> None:
            try:
                with os.fdopen(write_fd, "wb", buffering=CHUNK) as out:
                    try:
                        self._write_tar(out)
                    except BaseException:
                        if self._sink is not None:  # the engine must not load what went
                            with contextlib.suppress(Exception):  # (see _TarSink.poison)
                                self._sink.poison()
                        raise
            except BaseException as e:  # BrokenPipe if the engine gave up: its error wins
                failure.append(e)

        def body(reader: BinaryIO) -> Iterator[bytes]:
            while chunk := reader.read(CHUNK):
                yield chunk

        writer = threading.Thread(target=write, name="ocikit-load", daemon=True)
        try:
            with os.fdopen(read_fd, "rb", buffering=CHUNK) as reader:
                writer.start()
                try:
                    engine.load(body(reader), str(self.ref))
                finally:
                    reader.close()  # unblocks the writer if the engine stopped reading
                    writer.join()
            if failure and not isinstance(failure[0], BrokenPipeError):
                raise failure[0]
            if failure:
                raise DestinationError(f"{self.ref}: the engine stopped reading the image")
        finally:
            engine.close()
            self.abort()  # the staged blobs
