"""HTTP for the OCI distribution API: authentication, retries, redirects.

- Auth: anonymous first; on ``401`` the ``WWW-Authenticate`` challenge decides. ``Basic``
  sends the credentials (if any); ``Bearer`` asks the token ``realm`` for a token for the
  ``service`` and the request's scopes (with the credentials, if any), caches it per scope set
  and fetches a new one when it expires or is refused once.
- Credentials: ``USER:PASS`` given by the caller, else what the user keeps for the host
  (``auth``: the auth files docker and skopeo share, the credential helpers they name),
  looked up when the registry first asks for credentials.
- Only the registry's own challenges are answered: a ``401`` from another host (the storage
  a blob download is redirected to, an upload location elsewhere) fails the request, and
  its realm gets nothing. The token realm the registry names may be anywhere, but a
  registry spoken to over HTTPS never gets its credentials sent to a plain-HTTP realm.
- Retries with exponential backoff on connection errors, ``429`` and ``5xx``: at most
  ``RETRIES`` attempts and ``RETRY_SECONDS`` in all per request (``Retry-After`` honoured).
  A request that ran out of time is not retried.
- Deadlines (``httpstream.Budget``): every request may wait ``DEADLINE`` s in all for the
  registry (connecting, sending, the answer's headers and its body), however the registry
  trickles. A blob transfer (download, upload) must average ``MIN_RATE``: it starts with
  ``DEADLINE`` s and each byte earns ``1/MIN_RATE`` s, never more than ``DEADLINE`` s ahead;
  retries and resumed downloads share that budget, so a trickle ends within about
  ``DEADLINE`` s and a blob of N bytes within ``DEADLINE`` + N/``MIN_RATE`` s of waiting.
- Sizes: a body is read with a limit (``limit``: manifests 4 MiB, tokens ``MAX_TOKEN``,
  anything else ``MAX_ANSWER``; an error's body is cut at ``MAX_ERROR_BODY``), an announced
  length over it reads nothing, gzip is decoded only up to it. JSON goes through the model's
  bounded loader; a registry's messages are made one printable line.
- Redirects (blob downloads go to storage) are followed by hand: credentials go only to the
  registry's own origin (scheme, host and port).
- TLS by default; plain HTTP for ``localhost``/``127.0.0.1`` or when TLS verification is off
  and HTTPS does not answer.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import InputError, NotFoundError, Option
from ..model.jsondoc import SMALL_LIMIT, counted, load_json, size_text
from .httpstream import (
    Budget,
    PlainFirstTransport,
    connection_failure,
    error_words,
    install_deadlines,
    one_line,
    read_bounded,
    untrusted_certificate,
)
from .registry_options import Credentials as Credentials

RETRIES = 6
RETRY_SECONDS = 60.0
BACKOFF = 0.2
MAX_REDIRECTS = 5
DEADLINE = 60.0  # seconds one request may wait for the registry, in all
MIN_RATE = 32 << 10  # bytes a second a blob transfer must average (see Budget)
MAX_TOKEN = SMALL_LIMIT  # a token server's answer
MAX_ANSWER = 64 << 10  # a successful answer's body that is not a manifest
MAX_ERROR_BODY = 64 << 10  # what is read of an error's body (for its message)
TIMEOUT = httpx.Timeout(60.0, connect=15.0)  # per socket operation; DEADLINE cuts them
USER_AGENT = "ocikit"


class RegistryError(InputError):
    """The registry refused or failed a request."""


class AuthError(RegistryError):
    """Credentials missing or refused."""


class DeadlineError(RegistryError):
    """The registry took too long: a request's ``DEADLINE`` passed, or a blob transfer fell
    under ``MIN_RATE`` (not retried: it would take as long again)."""


def api_host(host: str) -> str:
    return "registry-1.docker.io" if host == "docker.io" else host


def credentials_from_authfile(host: str, authfile: str | None = None) -> Credentials | None:
    """The credentials the user keeps for ``host`` (auth files, credential helpers: see
    ``auth``), if any."""
    from .auth import credentials_from_authfile as lookup

    return lookup(host, authfile)


_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(params))


Body = bytes | Callable[[], Iterable[bytes]] | None


class RegistryClient:
    """One registry host; requests by path (``/v2/...``) or by absolute URL (upload
    locations), authenticated for the scopes given."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        tls_verify: bool | None = None,
        authfile: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``: httpx's by default (the tests give a mock)."""
        self.host = host
        self.api = api_host(host)
        bare = self.api.rsplit(":", 1)[0] if not self.api.startswith("[") else self.api
        local = bare in ("localhost", "127.0.0.1", "[::1]")
        self.scheme = "http" if local and tls_verify is not True else "https"
        self._may_fall_back = tls_verify is False and not local
        if transport is None and self.scheme == "http":  # no TLS context until HTTPS
            transport = PlainFirstTransport(tls_verify is not False)
        self._client = httpx.Client(
            verify=tls_verify is not False,
            timeout=TIMEOUT,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            transport=transport,
        )
        install_deadlines(self._client)
        self._given = credentials
        self._pending: list[Any] = []  # auth.Candidate: the files are read now (errors said)
        if credentials is None:
            from .auth import candidates

            self._pending = candidates(host, authfile)
        self._looked_up = credentials is not None
        self._creds_lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.requests = 0  # sent, retries included (for tests and benchmarks)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.api}"

    # -- auth ----------------------------------------------------------------------------
    @property
    def _credentials(self) -> Credentials | None:
        """The credentials given, else the user's for this host, looked up when the registry
        first asks (a credential helper runs only then, and once)."""
        if not self._looked_up:
            with self._creds_lock:
                if not self._looked_up:
                    from .auth import resolve

                    self._given = resolve(self.host, self._pending)
                    self._looked_up = True
        return self._given

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        if self._challenge is None:
            return None
        scheme, params = self._challenge
        if scheme == "basic":
            return self._credentials.basic() if self._credentials else None
        if scheme == "bearer":
            with self._lock:  # parallel uploads share one token per scope set
                cached = self._tokens.get(scopes)
                if cached is None or cached[1] <= time.monotonic():
                    cached = self._fetch_token(params, scopes)
                    self._tokens[scopes] = cached
            return f"Bearer {cached[0]}"
        return None

    def _fetch_token(self, params: Mapping[str, str], scopes: Sequence[str]) -> tuple[str, float]:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"{self.host}: a Bearer challenge without a realm")
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {}
        if self._credentials is not None:
            if self.scheme == "https" and not realm.lower().startswith("https://"):
                raise AuthError(
                    f"{self.host}: its token server {one_line(realm, 100)} is plain HTTP; "
                    f"the credentials are not sent there in clear"
                )
            headers["Authorization"] = self._credentials.basic()
        what = f"{self.host}: the token server's answer"
        budget = Budget(DEADLINE)
        try:
            with budget.active():
                request = self._client.build_request("GET", realm, params=query, headers=headers)
                response = self._client.send(request, stream=True)
                status = response.status_code
                raw, more = read_bounded(response, MAX_TOKEN, what)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            if budget.expired:
                reason = budget.reason()
            elif isinstance(e, httpx.TransportError):
                reason = connection_failure(e, _peer(realm))[0]
            else:
                reason = error_words(e)
            raise AuthError(
                f"{self.host}: token server {one_line(realm, 100)}: {reason}", *_tls_hint(e)
            ) from None
        if status in (401, 403):
            raise AuthError(f"{self.host}: the token server refused the credentials")
        if status != 200:
            raise AuthError(f"{self.host}: token server answered HTTP {status}")
        if more:
            raise AuthError(f"{what} is too large (over {size_text(MAX_TOKEN)})")
        data = load_json(raw, what, limit=MAX_TOKEN)
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{self.host}: the token server gave no token")
        if not _TOKEN_RE.match(token):
            raise AuthError(f"{self.host}: the token server gave a token that cannot be sent")
        expires = data.get("expires_in")
        lifetime = 60.0
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
            lifetime = min(float(expires), 86400.0)
        return token, time.monotonic() + max(1.0, lifetime - 10.0)

    # -- requests ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        target: str,
        *,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
        what: str = "",
        limit: int = MAX_ANSWER,
        budget: Budget | None = None,
        resend: bool = True,
    ) -> httpx.Response:
        """Send, authenticating and retrying as needed. Any status is returned (the caller
        decides what it means) except 401 after authenticating, which raises AuthError.
        With ``stream`` the body is not read: the caller closes the response. Else a
        successful answer's body is read up to ``limit`` bytes (more: RegistryError), an
        error's up to ``MAX_ERROR_BODY`` (its message). ``budget``: the time all attempts
        share (a blob transfer's); by default each attempt may wait ``DEADLINE`` s. ``resend``:
        False for an upload whose caller asks the registry what arrived: a connection broken
        on the way raises at once (one never made is still tried again)."""
        key = tuple(scopes)
        url = target if target.startswith(("http://", "https://")) else self.base + target
        what = what or self.host
        started = time.monotonic()
        attempt = 0
        authenticated = False
        while True:
            attempt += 1
            headers_now = dict(headers or {})
            auth = self._authorization(key)
            if auth is not None and _same_host(url, self.base):
                headers_now["Authorization"] = auth
            content = body() if callable(body) else body
            spent = budget or Budget(DEADLINE)
            try:
                with spent.active():
                    response = self._send_following(method, url, headers_now, content, params)
                    if response.status_code == 401:
                        read_bounded(response, MAX_ERROR_BODY, what)
                    elif not stream and response.status_code != 429 and response.status_code < 500:
                        response = self._read(response, limit, what)
            except httpx.TransportError as e:
                if spent.expired:
                    raise DeadlineError(f"{what}: {spent.reason()}") from None
                if self._fall_back(e):
                    url = url.replace("https://", "http://", 1)
                    continue
                reason, may_help = connection_failure(e, _peer(url))
                may_help = may_help and (resend or isinstance(e, httpx.ConnectError))
                if may_help and self._retry(attempt, started, None):
                    continue
                raise RegistryError(f"{what}: {reason}", *_tls_hint(e)) from None
            except httpx.InvalidURL as e:
                raise RegistryError(
                    f"{what}: the registry sent an invalid URL ({one_line(str(e), 200)})"
                ) from None
            if response.status_code == 401:
                answered_by = str(response.request.url)
                if not _same_host(answered_by, self.base):
                    raise AuthError(
                        f"{what}: {urlsplit(answered_by).netloc}, where the registry sent the "
                        f"request (its storage), asks for credentials; the registry's are "
                        f"only ever sent to the registry"
                    )
                header = response.headers.get("WWW-Authenticate")
                if header and not authenticated:  # learn the challenge; one more try
                    authenticated = True
                    self._challenge = parse_challenge(header)
                    with self._lock:  # the token refused (not one another thread renewed)
                        cached = self._tokens.get(key)
                        if cached is not None and auth == f"Bearer {cached[0]}":
                            del self._tokens[key]
                    scheme = self._challenge[0]
                    if scheme == "bearer" or (scheme == "basic" and self._credentials):
                        continue
                raise AuthError(
                    f"{what}: authentication failed"
                    + ("" if self._credentials else " (no credentials given)")
                )
            if response.status_code == 429 or response.status_code >= 500:
                delay = _retry_after(response)
                response.close()
                if self._retry(attempt, started, delay):
                    continue
                tries = counted(attempt, "attempt")
                raise RegistryError(f"{what}: HTTP {response.status_code} after {tries}")
            return response

    @staticmethod
    def _read(response: httpx.Response, limit: int, what: str) -> httpx.Response:
        """The response with its body read (within the limits of ``request``)."""
        ok = response.is_success
        data, more = read_bounded(response, limit if ok else MAX_ERROR_BODY, what)
        if more and ok:
            raise RegistryError(f"{what}: the answer is too large (over {size_text(limit)})")
        return with_body(response, data)

    def _send_following(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | Iterable[bytes] | None,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            self.requests += 1
            request = self._client.build_request(
                method, url, headers=headers, content=content, params=params
            )
            response = self._client.send(request, stream=True)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location")
            response.close()
            if not location:
                return response
            url = urljoin(url, location)
            _origin(url)  # httpx.InvalidURL if the registry sent garbage
            params = None
            if not _same_host(url, self.base):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host}: too many redirects")

    def _fall_back(self, error: Exception) -> bool:
        if self._may_fall_back and self.scheme == "https" and isinstance(error, httpx.ConnectError):
            self.scheme = "http"
            return True
        return False

    @staticmethod
    def _retry(attempt: int, started: float, delay: float | None) -> bool:
        if attempt >= RETRIES:
            return False
        pause = delay if delay is not None else BACKOFF * (2 ** (attempt - 1))
        pause = min(pause, 10.0)
        if time.monotonic() - started + pause > RETRY_SECONDS:
            return False
        time.sleep(pause)
        return True


def _tls_hint(error: BaseException) -> tuple[object, ...]:
    """The option that accepts a certificate that did not verify, after its message."""
    if untrusted_certificate(error):
        return ("; ", Option("tls_verify=False"), " accepts it")
    return ()


def _same_host(url: str, base: str) -> bool:
    """Whether ``url`` is on the origin of ``base``: same scheme, host and port (a redirect
    from HTTPS to plain HTTP on the same host is another origin)."""
    try:
        return _origin(url) == _origin(base)
    except (httpx.InvalidURL, ValueError):
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host.lower(), u.port or {"http": 80, "https": 443}.get(u.scheme)


_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # what a header value can carry as is


def with_body(response: httpx.Response, data: bytes) -> httpx.Response:
    """A copy of a streamed ``response`` holding ``data`` as its (decoded) body."""
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=data, request=response.request
    )


def read_error(response: httpx.Response, what: str) -> httpx.Response:
    """A streamed error answer with its body read (``MAX_ERROR_BODY`` at most), for
    ``raise_for``."""
    try:
        data, _ = read_bounded(response, MAX_ERROR_BODY, what)
    except (httpx.HTTPError, InputError):
        data = b""
    return with_body(response, data)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    with contextlib.suppress(ValueError, TypeError):
        return max(0.0, float(value))
    return None


def _peer(url: str) -> str:
    """``HOST:PORT`` of ``url`` (the scheme's port when it names none)."""
    try:
        _scheme, host, port = _origin(url)
    except (httpx.InvalidURL, ValueError):
        return urlsplit(url).netloc or url
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port is not None else host


def error_message(response: httpx.Response) -> str:
    """The registry's error (its JSON ``errors``), as one short printable line."""
    try:
        data: Any = load_json(response.content[:MAX_ERROR_BODY], "error", limit=MAX_ERROR_BODY)
    except (InputError, httpx.ResponseNotRead):
        data = None
    errors = data.get("errors") if isinstance(data, Mapping) else None
    if isinstance(errors, list):
        parts = []
        for e in errors[:5]:
            if isinstance(e, Mapping):
                fields = (e.get("code"), e.get("message"))
                text = ": ".join(f for f in fields if isinstance(f, str) and f)
                if text:
                    parts.append(text)
        if parts:
            return one_line("; ".join(parts))
    return f"HTTP {response.status_code}"


def raise_for(response: httpx.Response, what: str) -> None:
    """A clear error for a status the caller did not expect."""
    message = error_message(response)
    if response.status_code == 404:
        raise NotFoundError(f"{what}: not found ({message})")
    if response.status_code == 403:
        raise AuthError(f"{what}: denied ({message})")
    raise RegistryError(f"{what}: {message}")
