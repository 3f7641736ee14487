"""HTTP for the OCI distribution API: authentication, retries, redirects.

- Auth: anonymous first; on ``401`` the ``WWW-Authenticate`` challenge decides. ``Basic``
  sends the credentials (if any); ``Bearer`` asks the token ``realm`` for a token for the
  ``service`` and the request's scopes (with the credentials, if any), caches it per scope set
  and fetches a new one when it expires or is refused once.
- Credentials: ``USER:PASS`` given by the caller, else the auth file (``--authfile``,
  ``REGISTRY_AUTH_FILE``, ``~/.docker/config.json``; its ``auths``).
- Retries with exponential backoff on connection errors, ``429`` and ``5xx``: at most
  ``RETRIES`` attempts and ``RETRY_SECONDS`` in all per request (``Retry-After`` honoured).
- Redirects (blob downloads go to storage) are followed by hand: credentials go only to the
  registry's own host.
- TLS by default; plain HTTP for ``localhost``/``127.0.0.1`` or when TLS verification is off
  and HTTPS does not answer.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import InputError, NotFoundError, UsageError

RETRIES = 6
RETRY_SECONDS = 60.0
BACKOFF = 0.2
MAX_REDIRECTS = 5
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
USER_AGENT = "ocikit"


class RegistryError(InputError):
    """The registry refused or failed a request."""


class AuthError(RegistryError):
    """Credentials missing or refused."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def parse(cls, text: str, what: str = "--creds") -> Credentials:
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise UsageError(f"{what}: expected USER:PASSWORD")
        return cls(user, password)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def api_host(host: str) -> str:
    return "registry-1.docker.io" if host == "docker.io" else host


def credentials_from_authfile(host: str, authfile: str | None = None) -> Credentials | None:
    """The ``auths`` entry for ``host`` in a docker/containers auth file, if any."""
    paths = [authfile] if authfile else []
    if not paths:
        env = os.environ.get("REGISTRY_AUTH_FILE")
        paths = [env] if env else []
        paths.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(1 << 20))
        except FileNotFoundError:
            if authfile:
                raise UsageError(f"{authfile}: no such auth file") from None
            continue
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: not a readable auth file ({e})") from None
        auths = data.get("auths") if isinstance(data, Mapping) else None
        if not isinstance(auths, Mapping):
            continue
        keys = [host, f"https://{host}", f"http://{host}"]
        if host == "docker.io":
            keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
        for key in keys:
            entry = auths.get(key) or auths.get(key.rstrip("/"))
            if isinstance(entry, Mapping) and isinstance(entry.get("auth"), str):
                try:
                    decoded = base64.b64decode(entry["auth"]).decode()
                except (ValueError, UnicodeDecodeError):
                    raise UsageError(f"{path}: the entry for {key} is not base64") from None
                return Credentials.parse(decoded, f"{path}: {key}")
    return None


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
    ) -> None:
        self.host = host
        self.api = api_host(host)
        bare = self.api.rsplit(":", 1)[0] if not self.api.startswith("[") else self.api
        local = bare in ("localhost", "127.0.0.1", "[::1]")
        self.scheme = "http" if local and tls_verify is not True else "https"
        self._may_fall_back = tls_verify is False and not local
        self._client = httpx.Client(
            verify=tls_verify is not False,
            timeout=TIMEOUT,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._credentials = credentials or credentials_from_authfile(host, authfile)
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
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic()
        try:
            response = self._client.get(realm, params=query, headers=headers)
        except httpx.HTTPError as e:
            raise AuthError(f"{self.host}: token server {realm}: {_reason(e)}") from None
        if response.status_code in (401, 403):
            raise AuthError(f"{self.host}: the token server refused the credentials")
        if response.status_code != 200:
            raise AuthError(f"{self.host}: token server answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise AuthError(f"{self.host}: the token server's answer is not JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{self.host}: the token server gave no token")
        expires = data.get("expires_in", 60)
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 60.0
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
    ) -> httpx.Response:
        """Send, authenticating and retrying as needed. Any status is returned (the caller
        decides what it means) except 401 after authenticating, which raises AuthError.
        With ``stream`` the body is not read: the caller closes the response."""
        key = tuple(scopes)
        url = target if target.startswith(("http://", "https://")) else self.base + target
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
            try:
                response = self._send_following(method, url, headers_now, content, params)
            except httpx.TransportError as e:
                if self._fall_back(e):
                    url = url.replace("https://", "http://", 1)
                    continue
                if self._retry(attempt, started, None):
                    continue
                raise RegistryError(f"{what or self.host}: {_reason(e)}") from None
            if response.status_code == 401:
                response.read()
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
                    f"{what or self.host}: authentication failed"
                    + ("" if self._credentials else " (no credentials given)")
                )
            if response.status_code == 429 or response.status_code >= 500:
                delay = _retry_after(response)
                response.close()
                if self._retry(attempt, started, delay):
                    continue
                raise RegistryError(
                    f"{what or self.host}: HTTP {response.status_code} after {attempt} attempts"
                )
            if not stream:
                response.read()
            return response

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


def _same_host(url: str, base: str) -> bool:
    return urlsplit(url).netloc == urlsplit(base).netloc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    with contextlib.suppress(ValueError, TypeError):
        return max(0.0, float(value))  # type: ignore[arg-type]
    return None


def _reason(e: Exception) -> str:
    text = (str(e) or type(e).__name__).splitlines()[0]
    return re.sub(r"^\[Errno \d+\] ", "", text)


def error_message(response: httpx.Response) -> str:
    """The registry's error (its JSON ``errors``), one line."""
    try:
        data: Any = json.loads(response.content[:65536])
        errors = data.get("errors") if isinstance(data, dict) else None
        if errors:
            parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
            return "; ".join(parts)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        pass
    return f"HTTP {response.status_code}"


def raise_for(response: httpx.Response, what: str) -> None:
    """A clear error for a status the caller did not expect."""
    message = error_message(response)
    if response.status_code == 404:
        raise NotFoundError(f"{what}: not found ({message})")
    if response.status_code == 403:
        raise AuthError(f"{what}: denied ({message})")
    raise RegistryError(f"{what}: {message}")
