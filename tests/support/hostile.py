"""A malicious registry of our own: a threaded HTTP/1.1 server on 127.0.0.1 whose every answer
is decided by the test (``app(request)``), which records the ``Authorization`` header of every
request it gets, and can trickle headers and bodies, stream huge bodies, read slowly.

    image = TinyImage.make()
    with Hostile(lambda r: image.serve(r) or r.answer(404)) as reg:
        ocikit inspect docker://{reg.host}/some/repo:1
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import socketserver
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MAX_TRICKLE = 20.0  # a trickle stops after this long, so a test of a client that never
# gives up fails instead of hanging


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class Request(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _dispatch(self) -> None:
        hostile = self.server.hostile
        with hostile.lock:
            hostile.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
        hostile.app(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- answers -----------------------------------------------------------------------------
    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def stream(
        self, status: int, chunks: Iterable[bytes], headers: dict[str, str] | None = None
    ) -> None:
        """A chunked body (no length announced), written until the client goes away."""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if self.server.hostile.stopped.is_set():
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def trickle_headers(self, interval: float = 0.05) -> None:
        """A status line, then a header one byte at a time, never finished."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        self._trickle(b"a", interval)

    def trickle_body(
        self,
        length: int,
        interval: float = 0.05,
        prefix: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """``length`` announced, ``prefix`` sent at once, then one byte per ``interval``."""
        self.send_response(200)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(prefix)
        self._trickle(b" ", interval, length - len(prefix))

    def _trickle(self, byte: bytes, interval: float, limit: int = 1 << 30) -> None:
        started = time.monotonic()
        hostile = self.server.hostile
        try:
            for _ in range(limit):
                if hostile.stopped.is_set() or time.monotonic() - started > MAX_TRICKLE:
                    break
                self.wfile.write(byte)
                self.wfile.flush()
                time.sleep(interval)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def read_body_slowly(self, interval: float = 0.05) -> None:
        """Take the request body one byte per ``interval`` (a registry that reads slowly)."""
        started = time.monotonic()
        left = int(self.headers.get("Content-Length") or 1 << 30)
        hostile = self.server.hostile
        try:
            while left > 0 and not hostile.stopped.is_set():
                if time.monotonic() - started > MAX_TRICKLE or not self.rfile.read(1):
                    break
                left -= 1
                time.sleep(interval)
        except (ConnectionResetError, TimeoutError):
            pass
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hostile: Hostile


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    hostile: Hostile


class _UnixRequest(Request):
    def address_string(self) -> str:
        return "unix"


class Hostile:
    """``app(request)`` answers every request; ``seen`` records them all. With ``unix`` (a
    path), it listens on that unix socket instead (a fake Docker engine: ``docker_host``)."""

    def __init__(self, app: Callable[[Request], None] | None = None, unix: str | None = None):
        self.app: Callable[[Request], None] = app or (lambda r: r.answer(404))
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._server: _Server | _UnixServer
        if unix is None:
            self._server = _Server(("127.0.0.1", 0), Request)
        else:
            self._server = _UnixServer(unix, _UnixRequest)
        self._server.hostile = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def docker_host(self) -> str:
        """``DOCKER_HOST`` for a server on a unix socket."""
        return f"unix://{self._server.server_address}"

    def authorizations(self) -> list[str | None]:
        with self.lock:
            return [s.authorization for s in self.seen]

    def count(self, method: str, part: str = "") -> int:
        with self.lock:
            return sum(1 for s in self.seen if s.method == method and part in s.path)

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()


# -- a small valid image, served as a registry serves it ------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class TinyImage:
    """One gzip layer holding ``data``, its config, its OCI manifest."""

    layer: bytes
    config: bytes
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def make(cls, data: bytes = b"hello\n") -> TinyImage:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("hello.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar_bytes = buf.getvalue()
        layer = gzip.compress(tar_bytes, mtime=0)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [_digest(tar_bytes)]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": [{"mediaType": LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}],
            }
        ).encode()
        return cls(layer, config, manifest, {_digest(layer): layer, _digest(config): config})

    @property
    def layer_digest(self) -> str:
        return _digest(self.layer)

    def serve(self, r: Request) -> bool:
        """Answer manifest and blob reads of any repository; False if ``r`` is not one."""
        if "/manifests/" in r.path and r.command in ("GET", "HEAD"):
            r.answer(200, self.manifest, {"Content-Type": OCI_MANIFEST})
            return True
        if "/blobs/sha256:" in r.path and r.command in ("GET", "HEAD"):
            blob = self.blobs.get(r.path.rsplit("/", 1)[1].split("?")[0])
            if blob is None:
                r.answer(404)
            else:
                r.answer(200, blob, {"Content-Type": "application/octet-stream"})
            return True
        return False
