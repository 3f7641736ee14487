"""HTTP bodies read within bounds: in time (``Budget``), in size (``read_bounded``), and as
streams (``ResponseStream``, for the engine's save stream and registry blobs).

Time. httpx's timeouts are per socket operation: a peer sending one byte every few seconds
never trips them. A ``Budget`` is what one transfer may spend waiting on the network; while
it is active (``with budget.active():``, in the thread that does the I/O), every connect,
send and receive of the clients given to ``install_deadlines`` is cut to what is left of it,
and a send is made in pieces so that a peer reading slowly cannot stretch one call. Time
spent by the reader between reads (decompressing, writing to disk) is not counted.

Size. ``read_bounded`` reads at most ``limit`` bytes of a body (after gzip or deflate
decoding, which stops at the limit too), and says whether there was more.

Streams. Chunks are taken as they arrive (``iter_raw()`` without a size: httpx's
re-chunking would copy every byte once more). When the connection breaks, ``on_break(offset,
error)`` decides: it returns a response that goes on from ``offset`` (a ``Range`` request),
or raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import httpcore
import httpx

from ..errors import InputError
from ..model.jsondoc import one_line, quote

__all__ = [
    "Budget",
    "PlainFirstTransport",
    "ResponseStream",
    "connection_failure",
    "error_words",
    "install_deadlines",
    "one_line",
    "read_bounded",
]

# bytes handed to one send: a slow reader stalls one piece, not a chunk (8 s at MIN_RATE);
# pieces of 16 KiB cost 0.27 CPU s to upload 480 MB, 256 KiB 0.14 s
SEND_PIECE = 256 << 10
# bytes asked of one receive (httpcore asks 64 KiB: 480 MB of blobs cost 0.28 CPU s to
# download through h11 then, 0.15-0.19 s in 256 KiB receives; 1 MiB is slower again)
RECV_SIZE = 256 << 10

_ACTIVE: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "ocikit_budget", default=None
)


class Budget:
    """How long one transfer may wait on its peer.

    ``seconds``: the waiting (connecting, sending, receiving) it may do in all. With ``rate``
    (bytes a second), each byte moved earns ``1/rate`` s more, never more than ``seconds``
    ahead: the peer must keep an average of ``rate``; one that stalls or trickles is dropped
    within about ``seconds``, and moving N bytes may take ``seconds`` + N/``rate`` at most.
    A budget may be shared by successive requests (retries, resumed downloads): a trickle
    spends it once for all of them."""

    def __init__(self, seconds: float, rate: float | None = None) -> None:
        self.seconds = seconds
        self.rate = rate
        self.left = seconds
        self.expired = False

    def allowance(self, timeout: float | None, error: type[Exception]) -> float:
        """The timeout for the next socket operation; ``error`` if nothing is left."""
        if self.left <= 0:
            self.expired = True
            raise error(self.reason())
        return self.left if timeout is None else min(timeout, self.left)

    def spend(self, elapsed: float, moved: int = 0) -> None:
        self.left -= elapsed
        if self.rate and moved:
            self.left = min(self.seconds, self.left + moved / self.rate)
        if self.left <= 0:
            self.expired = True

    def timed_out(self, allowed: float, timeout: float | None) -> None:
        """A socket operation given ``allowed`` timed out: the budget's doing if it had cut
        the operation's own ``timeout``."""
        if timeout is None or allowed < timeout:
            self.expired = True

    def reason(self) -> str:
        if self.rate:
            return f"the transfer is too slow (under {_rate_text(self.rate)} on average)"
        return f"no complete answer within {self.seconds:g} s"

    @contextlib.contextmanager
    def active(self) -> Iterator[Budget]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def _rate_text(rate: float) -> str:
    return f"{rate / 1024:g} KiB/s" if rate >= 1024 else f"{rate:g} bytes/s"


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _ACTIVE.get()
        max_bytes = max(max_bytes, RECV_SIZE)
        if budget is None:
            return self._inner.read(max_bytes, timeout)
        allowed = budget.allowance(timeout, httpcore.ReadTimeout)
        started = time.monotonic()
        data = b""
        try:
            data = self._inner.read(max_bytes, allowed)
        except httpcore.TimeoutException:
            budget.timed_out(allowed, timeout)
            raise
        finally:
            budget.spend(time.monotonic() - started, len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget = _ACTIVE.get()
        if budget is None:
            self._inner.write(buffer, timeout)
            return
        view = memoryview(buffer)
        while view:
            piece = view[:SEND_PIECE]
            allowed = budget.allowance(timeout, httpcore.WriteTimeout)
            started = time.monotonic()
            sent = 0
            try:
                self._inner.write(piece, allowed)  # type: ignore[arg-type]
                sent = len(piece)
            except httpcore.TimeoutException:
                budget.timed_out(allowed, timeout)
                raise
            finally:
                budget.spend(time.monotonic() - started, sent)
            view = view[len(piece) :]

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        budget = _ACTIVE.get()
        if budget is not None:
            timeout = budget.allowance(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def _timed(
        self, timeout: float | None, connect: Callable[[float | None], httpcore.NetworkStream]
    ) -> httpcore.NetworkStream:
        budget = _ACTIVE.get()
        if budget is None:
            return _DeadlineStream(connect(timeout))
        allowed = budget.allowance(timeout, httpcore.ConnectTimeout)
        started = time.monotonic()
        try:
            return _DeadlineStream(connect(allowed))
        except httpcore.TimeoutException:
            budget.timed_out(allowed, timeout)
            raise
        finally:
            budget.spend(time.monotonic() - started)

    def connect_tcp(
        self, host: str, port: int, timeout=None, local_address=None, socket_options=None
    ) -> httpcore.NetworkStream:
        return self._timed(
            timeout, lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout=None, socket_options=None
    ) -> httpcore.NetworkStream:
        return self._timed(
            timeout, lambda t: self._inner.connect_unix_socket(path, t, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PlainFirstTransport(httpx.BaseTransport):
    """httpx's transport, with the TLS context (loading the CA store: ~20 ms) made at the
    first HTTPS request: a plain-HTTP registry on this machine never pays for it. Plain
    HTTP goes through a pool that has no use for a context; HTTPS through one verifying as
    ``verify`` says. Both honour the active ``Budget``."""

    def __init__(self, verify: bool) -> None:
        self._verify = verify
        self._plain = httpx.HTTPTransport(verify=False)  # its context never used: no TLS
        _install(self._plain)
        self._tls: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def tls(self) -> httpx.HTTPTransport:
        with self._lock:
            if self._tls is None:
                self._tls = httpx.HTTPTransport(verify=self._verify)
                _install(self._tls)
            return self._tls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return self._plain.handle_request(request)
        return self.tls().handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()


def _install(transport: httpx.BaseTransport | None) -> bool:
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, _DeadlineBackend):
        return True
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
        return True
    return isinstance(transport, PlainFirstTransport)  # installed on its own


def install_deadlines(client: httpx.Client) -> bool:
    """Make every connection of ``client`` (its proxies' too) honour the active ``Budget``.

    httpx has no total deadline and exposes no network backend: this sets httpcore's
    connection pool backend, a private attribute (the tests check it is still there).
    False if ``client`` does not use httpx's own transport (a test's mock)."""
    transports = [client._transport, *client._mounts.values()]
    installed = False
    for transport in transports:
        installed = _install(transport) or installed
    return installed


# -- bodies ----------------------------------------------------------------------------------


LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
# name resolution errors that say the name does not exist (trying again cannot help)
_NO_SUCH_NAME = {
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY", "EAI_FAIL")
    if hasattr(socket, name)
}


def connection_failure(error: BaseException, peer: str) -> tuple[str, bool]:
    """What a failure to talk to ``peer`` (``HOST:PORT``, or a socket's path) means, in
    words (``cannot reach HOST:PORT: connection refused``), and whether trying again may
    help. The words come from the socket's own error, however httpx wrapped it. Not retried:
    a name that does not exist, a refused connection to this machine (nothing listens),
    a missing socket, a certificate that is not trusted."""
    cause = _socket_error(error)
    host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 or peer.startswith("[") else peer
    if isinstance(cause, socket.gaierror):
        if cause.errno in _NO_SUCH_NAME:
            return f"cannot resolve {host}: no such host", False
        return f"cannot resolve {host}: {error_words(cause)}", True
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = one_line(getattr(cause, "verify_message", "") or error_words(cause), 200)
        reason = f"certificate verify failed: {reason}" if "verify failed" not in reason else reason
        return f"cannot reach {peer}: its TLS certificate is not trusted ({reason})", False
    if isinstance(cause, ssl.SSLError):
        return f"cannot reach {peer}: the TLS handshake failed ({error_words(cause)})", False
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot reach {peer}: connection refused", host not in LOOPBACK
    if isinstance(cause, FileNotFoundError):
        return f"cannot reach {peer}: no such socket", False
    if isinstance(cause, PermissionError):
        return f"cannot reach {peer}: permission denied", False
    if isinstance(error, httpx.TimeoutException) or isinstance(cause, TimeoutError):
        return f"cannot reach {peer}: no answer (timed out)", True
    if isinstance(error, httpx.ConnectError) or isinstance(cause, OSError):
        return f"cannot reach {peer}: {error_words(cause or error)}", True
    # the connection was made, then broke (a reset, an answer cut short)
    return f"the connection to {peer} broke: {error_words(cause or error)}", True


def untrusted_certificate(error: BaseException) -> bool:
    """Whether ``error`` is a TLS certificate that did not verify (``tls_verify`` helps)."""
    return isinstance(_socket_error(error), ssl.SSLCertVerificationError)


def _socket_error(error: BaseException) -> BaseException | None:
    """The OSError (or ssl error) under httpx's and httpcore's wrappers, if any."""
    seen = 0
    node: BaseException | None = error
    while node is not None and seen < 10:
        if isinstance(node, OSError):
            return node
        node = node.__cause__ or node.__context__
        seen += 1
    return None


def error_words(error: BaseException) -> str:
    """An error's text without ``[Errno N]``, lowercase first letter: ``no route to host``."""
    if isinstance(error, OSError) and error.strerror and not isinstance(error, ssl.SSLError):
        text = error.strerror
    elif isinstance(error, OSError) and error.errno in errno.errorcode and not error.args[1:]:
        text = str(error)
    else:
        text = str(error) or type(error).__name__
    text = one_line(text.split("] ", 1)[-1] if text.startswith("[") else text, 200)
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def read_bounded(response: httpx.Response, limit: int, what: str) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body (decoded if the server gzipped it), and whether
    there was more; an announced length over the limit reads nothing. Closes the response."""
    with contextlib.closing(response):
        if response.request.method == "HEAD":  # no body; Content-Length is the resource's
            if not response.is_stream_consumed:  # its end read: the connection is reused
                for _ in response.iter_raw():  # (closed unread, it would be dropped)
                    break  # never: an answer to a HEAD has no body (h11 reads none)
            return b"", False
        if response.is_stream_consumed:  # read already (a test's mock): httpx decoded it
            return response.content[:limit], len(response.content) > limit
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        decoder = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, told by the header
        elif encoding not in ("", "identity"):
            raise InputError(f"{what}: the answer has an unknown encoding {quote(encoding, 40)}")
        else:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                return b"", True
        out = bytearray()
        for chunk in response.iter_raw():
            if decoder is not None:
                try:
                    chunk = decoder.decompress(chunk, limit + 1 - len(out))
                except zlib.error as e:
                    raise InputError(f"{what}: the answer's {encoding} is corrupt ({e})") from None
                if decoder.unconsumed_tail:
                    out += chunk
                    return bytes(out[:limit]), True
            out += chunk
            if len(out) > limit:
                return bytes(out[:limit]), True
        return bytes(out), False


class ResponseStream(io.RawIOBase):
    def __init__(
        self,
        response: httpx.Response,
        on_break: Callable[[int, httpx.HTTPError], httpx.Response],
        budget: Budget | None = None,
    ) -> None:
        """``budget``: the transfer's time (see ``Budget``), active while reading."""
        super().__init__()
        self._response: httpx.Response | None = response
        self._chunks = response.iter_raw()
        self._on_break = on_break
        self._budget = budget
        self._offset = 0
        self._cur = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._cur:
            try:
                self._cur = memoryview(self._next())
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

    def _next(self) -> bytes:
        if self._budget is None:
            return next(self._chunks)
        with self._budget.active():
            return next(self._chunks)

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()
