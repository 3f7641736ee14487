"""``docker-daemon:NAME[:TAG]``: an image in a Docker engine, through its HTTP API.

As a source, the engine's ``save`` stream (``GET /images/{name}/get``) is read once by the
docker-archive reader, exactly as a ``docker save`` piped in. As a destination, the legacy
docker-archive that ``docker-archive:`` writes is streamed to ``POST /images/load`` as it is
made (a pipe between a writer thread and the request body: nothing spooled twice).

The engine is found as the ``docker`` command finds it: ``DOCKER_HOST`` (``unix://PATH`` or
``tcp://HOST:PORT``, plain HTTP), else ``unix:///var/run/docker.sock``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import quote

import httpx

from ..errors import DestinationError, InputError, NotFoundError, UsageError
from ..layer.streams import CHUNK
from .archive import TarArchive, Tee
from .docker_archive import DockerArchiveDestination, DockerArchiveSource
from .httpstream import ResponseStream
from .reference import Reference

DEFAULT_HOST = "unix:///var/run/docker.sock"
TIMEOUT = httpx.Timeout(30.0, read=None)  # a save or load of a big image takes its time


class Engine:
    """The few calls of the engine's API that ocikit needs."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        if self.host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=self.host[len("unix://") :])
            base = "http://docker"
        elif self.host.startswith(("tcp://", "http://")):
            transport = httpx.HTTPTransport()
            base = "http://" + self.host.split("://", 1)[1]
        else:
            raise UsageError(f"DOCKER_HOST {self.host!r}: expected unix://PATH or tcp://HOST:PORT")
        self._client = httpx.Client(transport=transport, base_url=base, timeout=TIMEOUT)

    def close(self) -> None:
        self._client.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._client.send(request, stream=True)
        except httpx.TransportError as e:
            raise InputError(f"docker engine at {self.host}: {_reason(e)}") from None

    def save(self, name: str) -> httpx.Response:
        """The streaming response of ``docker save NAME``."""
        response = self._send(self._client.build_request("GET", f"/images/{quote(name)}/get"))
        if response.status_code != 200:
            message = _engine_message(response)
            response.close()
            if response.status_code == 404:
                raise NotFoundError(f"docker-daemon:{name}: {message}")
            raise InputError(f"docker-daemon:{name}: the engine says: {message}")
        return response

    def load(self, body: Iterator[bytes], what: str) -> None:
        """``docker load`` of the archive ``body`` yields; the engine's error, if any, raised."""
        request = self._client.build_request(
            "POST",
            "/images/load",
            params={"quiet": "1"},
            headers={"Content-Type": "application/x-tar"},
            content=body,
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as e:
            raise DestinationError(f"{what}: docker engine at {self.host}: {_reason(e)}") from None
        with contextlib.closing(response):
            if response.status_code != 200:
                raise DestinationError(f"{what}: the engine says: {_engine_message(response)}")
            # a load that fails half-way still answers 200, with an error in the JSON stream
            for line in response.iter_lines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("error"):
                        raise DestinationError(f"{what}: the engine says: {event['error']}")


def _reason(e: Exception) -> str:
    text = (str(e) or type(e).__name__).splitlines()[0]
    text = re.sub(r"^\[Errno \d+\] ", "", text)
    return f"cannot connect: {text}" if isinstance(e, httpx.ConnectError) else text


def _engine_message(response: httpx.Response) -> str:
    body = response.read()[:65536]
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    text = message or body.decode(errors="replace").strip() or f"HTTP {response.status_code}"
    return " ".join(str(text).split())


def _response_stream(response: httpx.Response, what: str) -> ResponseStream:
    """The engine's stream; it cannot be resumed: a break is an error."""

    def broke(_offset: int, error: httpx.HTTPError) -> httpx.Response:
        raise InputError(f"{what}: the engine's stream broke: {_reason(error)}") from None

    return ResponseStream(response, broke)


class DaemonSource(DockerArchiveSource):
    """An engine's image, read from its ``save`` stream in one pass."""

    def __init__(self, ref: Reference, tee: Tee | None = None) -> None:
        engine = Engine()
        what = str(ref)
        try:
            response = engine.save(ref.path)
            try:
                stream = io.BufferedReader(_response_stream(response, what), CHUNK)
                archive = TarArchive.from_stream(stream, what, tee)  # type: ignore[arg-type]
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
                    self._write_tar(out)
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


def parse_daemon(text: str, rest: str) -> Reference:
    """``docker-daemon:NAME[:TAG]`` (``:latest`` added) or ``docker-daemon:sha256:<id>``."""
    from .reference import _DOCKER_NAME_RE

    if rest.startswith("sha256:"):
        if len(rest) != 71 or any(c not in "0123456789abcdef" for c in rest[7:]):
            raise UsageError(f"invalid reference {text!r}: bad image ID")
        return Reference("docker-daemon", rest)
    name = rest if ":" in rest.rsplit("/", 1)[-1] else rest + ":latest"
    if not _DOCKER_NAME_RE.match(name):
        raise UsageError(f"invalid reference {text!r}: {rest!r} is not a valid NAME[:TAG]")
    return Reference("docker-daemon", name)
