"""A real ``docker-registry`` (distribution) on 127.0.0.1 for the tests, optionally behind
htpasswd, and a small forwarding proxy that counts what clients send through it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGISTRY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (another
    process, an xdist worker's registry say, may have taken the port meanwhile)."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


class _PortTaken(Exception):
    pass


class Registry:
    """``docker-registry serve CONFIG`` on 127.0.0.1:PORT, storage in a temp directory."""

    def __init__(self, *, users: dict[str, str] | None = None) -> None:
        self.users = users
        self.dir = Path(tempfile.mkdtemp(prefix="ocikit-registry-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        """Start it; on a port another process took first, again on another port."""
        for _ in range(5):
            try:
                return self._start()
            except _PortTaken:
                self.stop(remove=False)
                self.port = free_port()
        raise RuntimeError(f"docker-registry found no free port: {self.log_tail()}")

    def _start(self) -> Registry:
        auth = ""
        if self.users:
            lines = []
            for user, password in self.users.items():
                out = subprocess.run(
                    ["htpasswd", "-Bbn", user, password], check=True, capture_output=True
                )
                lines.append(out.stdout.decode().strip())
            (self.dir / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = (
                f"auth:\n  htpasswd:\n    realm: ocikit-test\n    path: {self.dir / 'htpasswd'}\n"
            )
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + auth
        )
        with (self.dir / "registry.log").open("wb") as log:
            self._proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "address already in use" in self.log_tail():
                    raise _PortTaken()
                raise RuntimeError(f"docker-registry exited: {self.log_tail()}")
            if listens(self._proc.pid, self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start: {self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        path = self.dir / "registry.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop(self, remove: bool = True) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CountingProxy:
    """Forwards every request to ``upstream`` (host:port) and counts requests by method and
    the request body bytes sent by blob uploads (``PATCH``/``PUT`` under ``/blobs/uploads``).

    ``bearer``: users (name -> password) of a token server the proxy runs at ``/token``; every
    ``/v2/`` request then needs ``Authorization: Bearer <token>`` (the registry behind sees
    none). ``inject(faults, match)``: the next requests whose path contains ``match`` get
    these faults in turn: ``reset`` (connection closed, no answer), ``500``, ``429``, ``cut``
    (half the request body forwarded, then the connection closed), ``truncate`` (the answer's
    headers and half its body sent, then the connection closed), None (passed through)."""

    def __init__(
        self,
        upstream: str,
        *,
        bearer: dict[str, str] | None = None,
        redirect_blobs: str | None = None,
    ) -> None:
        """``redirect_blobs``: blob downloads are answered with a redirect to this host:port
        (as registries send clients to their storage); ``authorizations`` records the
        ``Authorization`` header of every request (None: there was none)."""
        self.upstream = upstream
        self.redirect_blobs = redirect_blobs
        self.authorizations: list[str | None] = []
        self.requests: list[tuple[str, str]] = []
        self.upload_bytes = 0
        self.bearer = bearer
        self.tokens: dict[str, str] = {}  # token -> scope it was issued for
        self.token_requests: list[tuple[str | None, list[str]]] = []  # (user, scopes)
        self._faults: list[str | None] = []
        self._match = ""
        self.faults_done: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _token(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    import base64

                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if proxy.bearer is None or proxy.bearer.get(user) != password:
                        self._answer(401, b'{"details":"bad credentials"}')
                        return
                proxy.token_requests.append((user, scopes))
                if user is None:
                    self._answer(401, b'{"details":"credentials required"}')
                    return
                token = f"tok-{len(proxy.tokens)}-{os.getpid()}"
                proxy.tokens[token] = " ".join(scopes)
                self._answer(200, json.dumps({"token": token, "expires_in": 300}).encode())

            def _forward(self) -> None:
                if self.path.startswith("/token"):
                    self._token()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    proxy.authorizations.append(self.headers.get("Authorization"))
                    fault = None
                    if proxy._faults and proxy._match in self.path:
                        fault = proxy._faults.pop(0)
                        if fault:
                            proxy.faults_done.append(f"{fault} {self.command} {self.path}")
                if proxy.bearer is not None:
                    auth = self.headers.get("Authorization", "")
                    if not (auth.startswith("Bearer ") and auth[7:] in proxy.tokens):
                        realm = f"http://{proxy.host}/token"
                        self._answer(
                            401,
                            b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                            WWW_Authenticate=f'Bearer realm="{realm}",service="ocikit-test"',
                        )
                        return
                if fault == "reset":
                    self.close_connection = True
                    return
                if proxy.redirect_blobs and self.command == "GET" and "/blobs/sha256:" in self.path:
                    self._answer(307, Location=f"http://{proxy.redirect_blobs}{self.path}")
                    return
                if fault in ("500", "429"):
                    self._answer(int(fault), b"injected", Retry_After="0")
                    return
                if fault == "cut" and body:
                    body = body[: len(body) // 2]
                with proxy._lock:
                    if "/blobs/uploads" in self.path and self.command in ("PATCH", "PUT"):
                        proxy.upload_bytes += len(body)
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "transfer-encoding", "content-length")
                }
                headers["Host"] = proxy.upstream
                if body or self.command in ("PUT", "PATCH", "POST"):
                    headers["Content-Length"] = str(len(body))
                if fault == "cut":
                    headers.pop("Content-Range", None)
                    headers.pop("content-range", None)
                    headers["Content-Length"] = str(len(body))
                # the registry may answer before reading it all: then relay its answer
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                try:
                    response = conn.getresponse()
                except (http.client.HTTPException, OSError):
                    self.close_connection = True
                    return
                if fault == "cut":  # the registry got half; the client gets nothing
                    response.read()
                    conn.close()
                    self.close_connection = True
                    return
                data = response.read()
                if fault == "truncate":  # full length announced, half of it sent
                    self.send_response(response.status)
                    for k, v in response.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    conn.close()
                    self.close_connection = True
                    return
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, proxy.host)
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def inject(self, faults: list[str | None], match: str = "") -> None:
        with self._lock:
            self._faults = list(faults)
            self._match = match

    def count(self, method: str, part: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and part in p)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.upload_bytes = 0

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _read_chunked(rfile) -> bytes:  # type: ignore[no-untyped-def]
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            rfile.readline()
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def can_run() -> str | None:
    if not os.path.exists(REGISTRY):
        return "docker-registry is not installed"
    return None
