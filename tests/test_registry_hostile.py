"""A malicious registry: real sockets on 127.0.0.1 (``support.hostile``), answers of the test's
choosing. Oversized manifests and tokens (memory stays low: the RSS of a real ``ocikit``
process is measured), trickling headers and bodies in both directions (bounded time, one line,
exit 2), blob storage that challenges with a realm of its own (never gets the registry's
credentials), hostile challenges. Then the client's logic in-process through
``httpx.MockTransport``: bounded bodies, error messages, redirects, retries.

Deadlines are set short through the client's module constants (in-process tests), so the file
costs a few seconds."""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ocikit.transports import registry as registry_mod
from ocikit.transports import registry_client as rc
from ocikit.transports.httpstream import install_deadlines
from ocikit.transports.registry_client import AuthError, Credentials, RegistryClient, RegistryError
from support.hostile import Hostile, Request, TinyImage, basic
from support.inprocess import assert_one_line, run
from support.layouts import file, tar_bytes, write_layout
from support.rss import run_measured

USER, PASSWORD = "alice", "s3cret"
GOOD = basic(USER, PASSWORD)


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request may wait 1 s; a blob must average 256 KiB/s (over 1 s); 2 attempts."""
    monkeypatch.setattr(rc, "DEADLINE", 1.0, raising=False)
    monkeypatch.setattr(rc, "MIN_RATE", 256 << 10, raising=False)
    monkeypatch.setattr(rc, "RETRY_SECONDS", 2.0)
    monkeypatch.setattr(rc, "BACKOFF", 0.01)


def _one_line(code: int, stderr: str, contains: str) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert contains in stderr.lower(), stderr


# -- oversized answers: memory stays low ---------------------------------------------------------


def _megabytes(n: int, head: bytes = b"") -> Iterator[bytes]:
    yield head
    block = b"a" * (1 << 20)
    for _ in range(n):
        yield block


def test_oversized_manifest_and_token_keep_memory_low() -> None:
    """A 400 MB manifest (chunked, no length), a manifest announcing 400 MB, a 200 MB token:
    each stops at its limit with one line; the process stays within 40 MiB of a normal
    inspect's peak RSS (the old client held the whole body: 867 MB)."""
    image = TinyImage.make()

    def app(r: Request) -> None:
        if r.path.startswith("/v2/huge/"):
            r.stream(200, _megabytes(400, b'{"schemaVersion":2,"x":"'))
        elif r.path.startswith("/v2/announced/"):
            r.send_response(200)
            r.send_header("Content-Length", str(400 << 20))
            r.end_headers()
            r.wfile.write(b"{" * 1000)
            r.close_connection = True
        elif r.path.startswith("/v2/token-huge/"):
            if r.headers.get("Authorization", "").startswith("Bearer "):
                image.serve(r)
            else:
                realm = f"http://{reg.host}/token"
                r.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})
        elif r.path.startswith("/token"):
            r.stream(200, _megabytes(200, b'{"token":"'))
        elif not image.serve(r):
            r.answer(404)

    with Hostile(app) as reg:
        code, err, baseline = run_measured("inspect", f"docker://{reg.host}/fine/image:1")
        assert code == 0, err
        for repo, words in [
            ("huge", "too large"),
            ("announced", "too large"),
            ("token-huge", "too large"),
        ]:
            code, err, peak = run_measured("inspect", f"docker://{reg.host}/{repo}/image:1")
            _one_line(code, err, words)
            assert peak < baseline + 40, f"{repo}: peak RSS {peak} MiB, baseline {baseline} MiB"


# -- trickling: bounded time, one line, exit 2 ---------------------------------------------------


def _timed(*args: str) -> tuple[float, object]:
    started = time.monotonic()
    result = run(*args)
    return time.monotonic() - started, result


@pytest.mark.usefixtures("short_deadlines")
@pytest.mark.parametrize("where", ["manifest-headers", "manifest-body", "token", "blob"])
def test_trickling_answers_end_in_bounded_time(where: str, tmp_path: Path) -> None:
    """A registry trickling one byte every 50 ms, in the headers or the body of a manifest,
    a token or a layer: the pull ends within a few deadlines (1 s here) with one line, and a
    request that ran out of time is not retried."""
    image = TinyImage.make(os.urandom(1 << 20))

    def app(r: Request) -> None:
        if where == "token" and not r.headers.get("Authorization"):
            if r.path.startswith("/token"):
                r.trickle_body(4096, prefix=b'{"token":"')
                return
            realm = f"http://{reg.host}/token"
            r.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}"'})
            return
        if where == "manifest-headers" and "/manifests/" in r.path:
            r.trickle_headers()
        elif where == "manifest-body" and "/manifests/" in r.path:
            r.trickle_body(len(image.manifest) + 100, prefix=image.manifest[:20])
        elif where == "blob" and image.layer_digest in r.path:
            # 64 KiB at once, then a trickle: dropped once the credit is spent
            r.trickle_body(len(image.layer), prefix=image.layer[: 64 << 10])
        elif not image.serve(r):
            r.answer(404)

    with Hostile(app) as reg:
        elapsed, result = _timed(
            "copy", "-q", f"docker://{reg.host}/slow/one:1", f"oci:{tmp_path}/o"
        )
        assert_one_line(result)  # type: ignore[arg-type]
        assert elapsed < 8, f"took {elapsed:.1f} s"
        slow = {"manifest-headers": "/manifests/", "manifest-body": "/manifests/"}.get(where)
        if slow:
            assert reg.count("GET", slow) == 1, "a request out of time is not retried"
        if where == "token":
            assert reg.count("GET", "/token") == 1
    assert not (tmp_path / "o" / "index.json").exists()


@pytest.mark.usefixtures("short_deadlines")
def test_registry_reading_an_upload_slowly(tmp_path: Path) -> None:
    """A registry that takes the pushed layer one byte every 50 ms: the push ends in bounded
    time with one line (the layer is larger than the sockets' buffers)."""
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("big.bin", os.urandom(12 << 20))])])

    def app(r: Request) -> None:
        if r.command == "HEAD":
            r.answer(404)
        elif r.command == "POST":
            r.answer(202, b"", {"Location": "/v2/slow/push/blobs/uploads/1"})
        elif r.command in ("PUT", "PATCH"):
            r.read_body_slowly()
        else:
            r.answer(404)

    with Hostile(app) as reg:
        elapsed, result = _timed(
            "copy", "-q", "--jobs", "1", f"oci:{layout}", f"docker://{reg.host}/slow/push:1"
        )
        assert_one_line(result)  # type: ignore[arg-type]
        assert elapsed < 15, f"took {elapsed:.1f} s"


# -- credentials go only where they belong -------------------------------------------------------


@pytest.mark.parametrize("storage_kind", ["challenges", "serves"])
def test_blob_storage_never_gets_the_registry_credentials(
    storage_kind: str, tmp_path: Path
) -> None:
    """The registry (Basic auth) redirects blob downloads to storage on another host. Storage
    that answers 401 with a Bearer realm of its own is not answered with the registry's
    credentials (one line, exit 2); storage that serves gets no Authorization either."""
    image = TinyImage.make()

    def storage_app(r: Request) -> None:
        if storage_kind == "serves" and not r.path.startswith("/token"):
            image.serve(r)
            return
        if r.path.startswith("/token"):
            r.answer(200, json.dumps({"token": "storage-token"}).encode())
            return
        realm = f"http://{storage.host}/token"
        r.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="storage"'})

    def registry_app(r: Request) -> None:
        if r.headers.get("Authorization") != GOOD:
            r.answer(401, b"", {"WWW-Authenticate": 'Basic realm="registry"'})
        elif "/blobs/sha256:" in r.path:
            r.answer(307, b"", {"Location": f"http://{storage.host}{r.path}"})
        elif not image.serve(r):
            r.answer(404)

    with Hostile(storage_app) as storage, Hostile(registry_app) as reg:
        result = run(
            "copy",
            "-q",
            "--src-creds",
            f"{USER}:{PASSWORD}",
            f"docker://{reg.host}/redirect/one:1",
            f"oci:{tmp_path}/o",
        )
        assert storage.seen, "the blobs were redirected"
        assert storage.authorizations() == [None] * len(storage.seen), storage.seen
        assert GOOD in reg.authorizations()
        if storage_kind == "serves":
            assert result.code == 0, result.stderr
        else:
            assert_one_line(result, contains="storage")
            assert storage.count("GET", "/token") == 0


def test_token_realm_on_another_host_gets_the_credentials(tmp_path: Path) -> None:
    """The token realm the registry names may live elsewhere (Docker Hub's does): it gets the
    credentials, the registry gets the token, and nobody else gets anything."""
    image = TinyImage.make()

    def token_app(r: Request) -> None:
        ok = r.headers.get("Authorization") == GOOD
        r.answer(200 if ok else 401, json.dumps({"token": "T"}).encode() if ok else b"")

    def registry_app(r: Request) -> None:
        if r.headers.get("Authorization") != "Bearer T":
            realm = f"http://{tokens.host}/token"
            r.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})
        elif not image.serve(r):
            r.answer(404)

    with Hostile(token_app) as tokens, Hostile(registry_app) as reg:
        result = run(
            "copy",
            "-q",
            "--src-creds",
            f"{USER}:{PASSWORD}",
            f"docker://{reg.host}/tok/one:1",
            f"oci:{tmp_path}/o",
        )
        assert result.code == 0, result.stderr
        assert set(tokens.authorizations()) == {GOOD}
        assert GOOD not in reg.authorizations()


@pytest.mark.parametrize(
    "behaviour",
    [
        "always-401",
        "401-without-challenge",
        "bearer-without-realm",
        "token-server-500",
        "token-not-json",
        "token-a-list",
        "token-not-a-string",
        "token-nested-deep",
        "unknown-scheme",
    ],
)
def test_hostile_challenges(behaviour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Challenges and token servers that make no sense: one line, exit 2, few requests."""
    monkeypatch.setattr(rc, "BACKOFF", 0.01)
    image = TinyImage.make()
    token_bodies = {
        "token-not-json": b"<html>",
        "token-a-list": b'["token"]',
        "token-not-a-string": b'{"token": {"a": 1}, "expires_in": "soon"}',
        "token-nested-deep": b'{"token":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }

    def app(r: Request) -> None:
        if r.path.startswith("/token"):
            if behaviour == "token-server-500":
                r.answer(500, b"")
            else:
                r.answer(200, token_bodies.get(behaviour, b'{"token":"T"}'))
            return
        if behaviour != "always-401" and r.headers.get("Authorization") == "Bearer T":
            image.serve(r)
            return
        challenge = {
            "401-without-challenge": None,
            "bearer-without-realm": 'Bearer service="x"',
            "unknown-scheme": 'Negotiate realm="x"',
        }.get(behaviour, f'Bearer realm="http://{reg.host}/token"')
        r.answer(401, b"", {"WWW-Authenticate": challenge} if challenge else {})

    with Hostile(app) as reg:
        result = run("inspect", f"docker://{reg.host}/chal/one:1")
        assert_one_line(result)
        assert len(reg.seen) <= 10, reg.seen


# -- the client's logic, in-process --------------------------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw) -> RegistryClient:
    return RegistryClient("registry.test", transport=httpx.MockTransport(handler), **kw)


class _Body(httpx.SyncByteStream):
    """A response body that counts what the client pulled from it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += len(chunk)
            yield chunk


def _endless(block: bytes = b"a" * 65536) -> Iterator[bytes]:
    while True:
        yield block


def test_bodies_are_read_with_a_limit() -> None:
    """A body over its limit stops the read there; an announced length over it is refused
    before a byte is read; an error body is cut (its message needs no more)."""
    bodies: list[_Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = _Body(_endless())
        bodies.append(body)
        if "announced" in request.url.path:
            return httpx.Response(200, headers={"Content-Length": str(1 << 40)}, stream=body)
        status = 404 if "missing" in request.url.path else 200
        return httpx.Response(status, stream=body)

    client = _client(handler)
    for path in ("/v2/a/manifests/big", "/v2/a/manifests/announced"):
        with pytest.raises(RegistryError, match="too large"):
            client.request("GET", path, scopes=(), limit=4 << 20, what="m")
        assert bodies[-1].pulled <= (4 << 20) + 65536
    assert bodies[-1].pulled == 0
    response = client.request("GET", "/v2/a/manifests/missing", scopes=(), what="m")
    assert response.status_code == 404
    assert bodies[-1].pulled <= rc.MAX_ERROR_BODY + 65536


def test_head_answers_announce_the_blob_not_a_body() -> None:
    """A HEAD's Content-Length is the blob's size (gigabytes): nothing to read, no limit."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(5 << 30)})

    response = _client(handler).request("HEAD", "/v2/a/blobs/sha256:" + "a" * 64, scopes=())
    assert response.status_code == 200


def test_deadlines_are_installed() -> None:
    """The deadline hook sits in httpx's connection pool (a private attribute: an httpx
    upgrade that moves it fails here, not silently in use)."""
    client = RegistryClient("registry.test")
    assert install_deadlines(client._client)
    backend = client._client._transport._pool._network_backend  # type: ignore[attr-defined]
    assert type(backend).__name__ == "_DeadlineBackend"


def test_gzip_answers_are_bounded_after_decoding() -> None:
    """A gzip bomb as a manifest: the limit counts decoded bytes, and decoding stops there."""
    bomb = gzip.compress(b"{" * (64 << 20))

    def handler(request: httpx.Request) -> httpx.Response:
        gzipped = {"Content-Encoding": "gzip"}
        return httpx.Response(200, headers=gzipped, stream=httpx.ByteStream(bomb))

    with pytest.raises(RegistryError, match="too large"):
        _client(handler).request("GET", "/v2/a/manifests/x", scopes=(), limit=4 << 20)
    small = gzip.compress(b'{"ok":1}')
    client = _client(
        lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=small)
    )
    assert client.request("GET", "/v2/a/manifests/x", scopes=()).content == b'{"ok":1}'


def test_registry_errors_are_one_short_line() -> None:
    """A registry's error messages with newlines, terminal escapes and 50 KB of text become
    one short printable line."""
    errors = [{"code": "DENIED", "message": "line one\nline two\x1b[31m red\r" + "x" * 50_000}]
    errors += [{"code": 5, "message": ["not", "text"]}, "not an object"]
    body = json.dumps({"errors": errors}).encode()
    client = _client(lambda r: httpx.Response(403, content=body))
    response = client.request("GET", "/v2/a/manifests/x", scopes=())
    with pytest.raises(AuthError) as caught:
        rc.raise_for(response, "docker://registry.test/a:x")
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert len(message) < 1000 and "line one line two" in message


def test_a_challenge_from_a_redirect_target_is_not_answered() -> None:
    """The registry redirects to storage; storage's 401 and its realm get nothing, and the
    client's idea of the registry's challenge does not change."""
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.host == "storage.test":
            challenge = 'Bearer realm="https://storage.test/token",service="s"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.headers.get("Authorization") != GOOD:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": "https://storage.test/blob"})

    client = _client(handler, credentials=Credentials(USER, PASSWORD), tls_verify=True)
    with pytest.raises(AuthError, match=r"storage\.test"):
        client.request("GET", "/v2/a/blobs/sha256:" + "a" * 64, scopes=("repository:a:pull",))
    assert [a for u, a in seen if "storage.test" in u] == [None]
    assert not any("token" in u for u, _ in seen)


@pytest.mark.parametrize(
    ("url", "base", "same"),
    [
        ("https://reg.test/v2/", "https://reg.test", True),
        ("https://reg.test:443/v2/", "https://reg.test", True),
        ("http://reg.test/v2/", "https://reg.test", False),  # no credentials in clear text
        ("https://reg.test:8443/v2/", "https://reg.test", False),
        ("https://other.test/v2/", "https://reg.test", False),
        ("https://REG.test/v2/", "https://reg.test", True),
        ("https://reg.test.evil/v2/", "https://reg.test", False),
    ],
)
def test_same_origin(url: str, base: str, same: bool) -> None:
    assert rc._same_host(url, base) is same


def test_redirects_drop_credentials_to_another_origin() -> None:
    """A redirect to plain HTTP on the same host name, or to another port, is another origin:
    no Authorization goes there."""
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.path == "/v2/a/blobs/x":
            if request.headers.get("Authorization") != GOOD:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"Location": "http://reg.test/elsewhere"})
        if request.url.path == "/elsewhere":
            return httpx.Response(307, headers={"Location": "https://reg.test:8443/third"})
        return httpx.Response(200, content=b"blob")

    client = RegistryClient(
        "reg.test",
        credentials=Credentials(USER, PASSWORD),
        tls_verify=True,
        transport=httpx.MockTransport(handler),
    )
    response = client.request("GET", "/v2/a/blobs/x", scopes=())
    assert response.status_code == 200
    assert [a for u, a in seen if "/v2/" not in u] == [None, None]


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that always fails: RETRIES attempts at most, and the pauses between them
    stay within RETRY_SECONDS (nothing multiplies the budget)."""
    slept: list[float] = []
    monkeypatch.setattr(rc.time, "sleep", slept.append)
    for failure in ("503", "connect", "429-long"):
        slept.clear()
        attempts = 0

        def handler(request: httpx.Request, failure: str = failure) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            if failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            if failure == "429-long":
                return httpx.Response(429, headers={"Retry-After": "100000"})
            return httpx.Response(503)

        with pytest.raises(RegistryError):
            _client(handler).request("GET", "/v2/a/manifests/x", scopes=())
        assert 1 <= attempts <= rc.RETRIES
        assert sum(slept) <= rc.RETRY_SECONDS


def test_manifest_limit_in_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pull's manifest read uses the manifest limit (checked while reading)."""
    monkeypatch.setattr(registry_mod, "MAX_MANIFEST", 1000)
    seen: list[_Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(_Body(_endless()))
        return httpx.Response(200, stream=seen[-1])

    from ocikit.transports.reference import parse_reference

    monkeypatch.setattr(
        registry_mod,
        "_client",
        lambda ref, options: RegistryClient(
            "registry.test", transport=httpx.MockTransport(handler)
        ),
    )
    with pytest.raises(RegistryError, match="too large"):
        registry_mod.RegistrySource(parse_reference("docker://registry.test/a/b:1"))
    assert seen[0].pulled <= 1000 + 65536
