"""The registry client's logic in-process: an OCI distribution registry in memory behind
``httpx.MockTransport`` (``RegistryOptions.transport``, ``RegistryClient(transport=)``), with
the faults a test asks for. Auth (Basic; Bearer tokens per scope, cached, renewed when
refused; a token realm elsewhere; the registry's credentials never sent to another host),
retries (5xx, 429 and broken connections retried with growing pauses, within their limits;
4xx not), resumed downloads (``Range``, the digest still verified), redirects, bounded
manifests, and uploads (``POST``, ``PATCH`` chunks, ``PUT``, relative and absolute
``Location``s, a chunk resumed where the registry got to).

No socket, no sleep (``time.sleep`` is recorded): the file costs well under a second or two.
What only a real registry can judge (``docker-registry``, skopeo's view) stays in
``test_registry.py``."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

import ocikit
from ocikit.errors import InputError, VerificationError
from ocikit.layer.streams import HashingReader
from ocikit.model import Descriptor, Digest
from ocikit.ops.validate import validate_image
from ocikit.transports import RegistryOptions, open_image, parse_reference
from ocikit.transports import registry as registry_mod
from ocikit.transports import registry_client as rc
from ocikit.transports.registry import RegistryDestination, RegistrySource
from ocikit.transports.registry_client import AuthError, Credentials, RegistryClient, RegistryError
from support.layouts import file, tar_bytes, write_layout
from support.registry import Registry

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
HOST = "reg.test"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

#: what a fault does to the request it meets: an answer's status, or a broken connection
Fault = str  # "500", "429", "404", "reset" (no answer), "cut" (the body breaks half-way)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    method: str
    url: str
    authorization: str | None
    headers: httpx.Headers


@dataclass
class FakeRegistry:
    """A registry in memory: blobs, manifests, upload sessions; ``auth`` ``None``,
    ``"basic"`` or ``"bearer"`` (tokens from ``https://auth.test/token``); ``storage``:
    blob downloads redirected to ``https://storage.test``; ``location``: upload locations
    ``relative``, ``absolute``, or on ``elsewhere`` (``https://upload.test``)."""

    auth: str | None = None
    storage: bool = False
    location: str = "relative"
    chunk_min: int | None = None
    range_resume: bool = True
    #: what an upload session's state says when it holds nothing: docker-registry says
    #: ``0-0`` (as for one byte); None: no ``Range``
    empty_range: str | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    tokens: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (auth, scopes)
    faults: list[tuple[re.Pattern[str], list[Fault | None]]] = field(default_factory=list)
    issued: int = 0
    refuse_tokens: set[str] = field(default_factory=set)
    realm: str = "https://auth.test/token"

    # -- the test's side ---------------------------------------------------------------------
    def options(self, **kw: object) -> RegistryOptions:
        return RegistryOptions(transport=httpx.MockTransport(self.handler), **kw)  # type: ignore[arg-type]

    def client(self, **kw: object) -> RegistryClient:
        return RegistryClient(HOST, transport=httpx.MockTransport(self.handler), **kw)  # type: ignore[arg-type]

    def inject(self, pattern: str, faults: list[Fault | None]) -> None:
        """The next requests whose ``METHOD URL`` matches meet these faults, in turn (None:
        served as usual)."""
        self.faults.append((re.compile(pattern), list(faults)))

    def count(self, method: str, part: str = "", host: str = HOST) -> int:
        return sum(
            1
            for s in self.seen
            if s.method == method and part in s.url and httpx.URL(s.url).host == host
        )

    def on(self, host: str) -> list[Seen]:
        return [s for s in self.seen if httpx.URL(s.url).host == host]

    def put_image(self, repo: str, tag: str, layers: list[bytes]) -> tuple[bytes, list[str]]:
        """An image (uncompressed layers, an OCI manifest) stored as if pushed."""
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [digest_of(x) for x in layers]},
            }
        ).encode()
        for blob in (config, *layers):
            self.blobs[digest_of(blob)] = blob
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest_of(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest_of(x),
                        "size": len(x),
                    }
                    for x in layers
                ],
            }
        ).encode()
        self.manifests[(repo, tag)] = (manifest, OCI_MANIFEST)
        self.manifests[(repo, digest_of(manifest))] = (manifest, OCI_MANIFEST)
        return manifest, [digest_of(x) for x in layers]

    # -- the registry's side -----------------------------------------------------------------
    def handler(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        self.seen.append(Seen(request.method, str(request.url), auth, request.headers))
        fault = self._fault(f"{request.method} {request.url}")
        if fault == "reset":
            raise httpx.ReadError("connection reset by peer", request=request)
        if fault is not None and fault != "cut":
            return httpx.Response(int(fault))
        host = request.url.host
        if host == "auth.test":
            return self._token(request)
        if host == "storage.test":
            return self._blob(request, request.url.path.rsplit("/", 1)[1], cut=fault == "cut")
        if host not in (HOST, "upload.test"):
            return httpx.Response(404)
        challenge = self._challenge(auth) if host == HOST else None  # upload.test: signed URLs
        if challenge is not None:
            return challenge
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if m and m.group(3) != "uploads":
            repo, kind, ref = m.groups()
            if kind == "manifests":
                return self._manifest(request, repo, ref)
            if self.storage and request.method == "GET":
                return httpx.Response(307, headers={"Location": f"https://storage.test/b/{ref}"})
            return self._blob(request, ref, cut=fault == "cut")
        m = re.fullmatch(r"/v2/(.+)/blobs/uploads/([^/]*)", path)
        if m:
            return self._upload(request, m.group(1), m.group(2), cut=fault == "cut")
        return httpx.Response(404)

    def _fault(self, line: str) -> Fault | None:
        for pattern, faults in self.faults:
            if faults and pattern.search(line):
                return faults.pop(0)
        return None

    def _challenge(self, auth: str | None) -> httpx.Response | None:
        if self.auth == "basic" and auth != BASIC:
            return httpx.Response(401, headers={"WWW-Authenticate": f'Basic realm="{HOST}"'})
        if self.auth == "bearer":
            valid = (
                auth is not None
                and auth.startswith("Bearer T")
                and auth[7:] not in self.refuse_tokens
            )
            if not valid:
                header = f'Bearer realm="{self.realm}",service="{HOST}"'
                return httpx.Response(401, headers={"WWW-Authenticate": header})
        return None

    def _token(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.url.query.decode())
        assert query.get("service") == [HOST]
        self.tokens.append((request.headers.get("Authorization"), query.get("scope", [])))
        if request.headers.get("Authorization") not in (None, BASIC):
            return httpx.Response(401)
        self.issued += 1
        return httpx.Response(200, json={"token": f"T{self.issued}", "expires_in": 300})

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            body = request.read()
            media_type = request.headers.get("Content-Type", "")
            self.manifests[(repo, ref)] = (body, media_type)
            self.manifests[(repo, digest_of(body))] = (body, media_type)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest_of(body)})
        found = self.manifests.get((repo, ref))
        if found is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body, media_type = found
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})

    def _blob(self, request: httpx.Request, digest: str, *, cut: bool = False) -> httpx.Response:
        data = self.blobs.get(digest)
        if data is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        start, status = 0, 200
        wanted = request.headers.get("Range")
        if wanted and self.range_resume:
            start, status = int(wanted.removeprefix("bytes=").rstrip("-")), 206
        body = data[start:]
        if cut:  # half the rest, then the connection breaks
            return httpx.Response(status, stream=_Body(body[: max(1, len(body) // 2)], broken=True))
        return httpx.Response(status, stream=_Body(body))

    def _location(self, repo: str, session: str) -> str:
        path = f"/v2/{repo}/blobs/uploads/{session}?state=s{len(self.uploads[session])}"
        if self.location == "relative":
            return path
        host = "upload.test" if self.location == "elsewhere" else HOST
        return f"https://{host}{path}"

    def _upload(
        self, request: httpx.Request, repo: str, session: str, *, cut: bool = False
    ) -> httpx.Response:
        """``cut``: a PATCH whose connection breaks half-way (the half kept, no answer)."""
        if request.method == "POST":
            mount = request.url.params.get("mount")
            if mount is not None and mount in self.blobs:
                return httpx.Response(201)
            session = uuid.uuid4().hex
            self.uploads[session] = bytearray()
            headers = {"Location": self._location(repo, session), "Range": "0-0"}
            if self.chunk_min is not None:
                headers["OCI-Chunk-Min-Length"] = str(self.chunk_min)
            return httpx.Response(202, headers=headers)
        got = self.uploads.get(session)
        if got is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        if request.method == "GET":
            headers = {"Location": self._location(repo, session)}
            if got:
                headers["Range"] = f"0-{len(got) - 1}"
            elif self.empty_range is not None:
                headers["Range"] = self.empty_range
            return httpx.Response(204, headers=headers)
        body = request.read()
        if request.method == "PATCH":
            first = int(request.headers["Content-Range"].split("-")[0])
            if first != len(got):
                return httpx.Response(416)
            if cut:
                got += body[: len(body) // 2]
                raise httpx.WriteError("connection reset by peer", request=request)
            got += body
            headers = {"Location": self._location(repo, session), "Range": f"0-{len(got) - 1}"}
            return httpx.Response(202, headers=headers)
        if request.method == "PUT":
            got += body
            digest = request.url.params.get("digest")
            if digest != digest_of(bytes(got)):
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = bytes(got)
            del self.uploads[session]
            return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{digest}"})
        return httpx.Response(405)


class _Body(httpx.SyncByteStream):
    """A body streamed in 64 KiB pieces (as a socket gives it; ``content=`` would be read
    whole at once); ``broken``: the connection breaks after it, as a reset does."""

    def __init__(self, data: bytes, *, broken: bool = False) -> None:
        self.data = data
        self.broken = broken

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 65536):
            yield self.data[i : i + 65536]
        if self.broken:
            raise httpx.ReadError("connection reset by peer")


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's pauses between retries, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(rc.time, "sleep", slept.append)
    return slept


def _source(reg: FakeRegistry, ref: str = f"docker://{HOST}/a/b:1", **kw: object) -> RegistrySource:
    return RegistrySource(parse_reference(ref), None, reg.options(**kw))


def _read_blob(source: RegistrySource, digest: str, data: bytes) -> bytes:
    """The blob read through the verifying reader every consumer uses (``Image.open_blob``)."""
    desc = Descriptor("application/octet-stream", Digest(digest), len(data))
    with source.open_blob(desc) as raw:
        reader = HashingReader(
            raw,  # type: ignore[arg-type]
            what=f"blob {digest}",
            expected_digest=desc.digest,
            expected_size=desc.size,
        )
        return reader.read()


# ---------------------------------------------------------------------------- auth


def test_bearer_tokens_per_scope_cached() -> None:
    """401 -> the realm asked for a token for the service and the request's scope, with the
    credentials; the token reused for every request of that scope; another scope, another
    token. The registry never sees the password, the token server never a token."""
    reg = FakeRegistry(auth="bearer")
    reg.put_image("a/b", "1", [tar_bytes([file("x", "1")]), tar_bytes([file("y", "2")])])
    creds = Credentials(USER, PASSWORD)
    with open_image(f"docker://{HOST}/a/b:1", registry=reg.options(credentials=creds)) as image:
        for layer in image.layers:
            with image.open_blob(layer.descriptor) as f:
                f.read()
    assert reg.tokens == [(BASIC, ["repository:a/b:pull"])]
    registry_auth = {s.authorization for s in reg.on(HOST)}
    assert registry_auth == {None, "Bearer T1"}
    dest = RegistryDestination(
        parse_reference(f"docker://{HOST}/a/c:1"), (), reg.options(credentials=creds)
    )
    try:
        dest.ready()
    finally:
        dest.abort()
    assert reg.tokens[-1] == (BASIC, ["repository:a/c:pull,push"])
    assert all(s.authorization is None or s.authorization == BASIC for s in reg.on("auth.test"))


def test_a_refused_token_is_renewed_once() -> None:
    reg = FakeRegistry(auth="bearer")
    client = reg.client()
    assert client.request("GET", "/v2/", scopes=("s",)).status_code == 200
    reg.refuse_tokens.add("T1")
    assert client.request("GET", "/v2/", scopes=("s",)).status_code == 200
    assert reg.issued == 2
    reg.refuse_tokens.update({"T2", "T3"})
    with pytest.raises(AuthError, match="authentication failed"):
        client.request("GET", "/v2/", scopes=("s",))
    assert reg.issued == 3, "one new token per refusal, not a loop"


def test_a_plain_http_realm_of_an_https_registry_gets_no_credentials() -> None:
    """The registry is spoken to over HTTPS but names a token realm on plain HTTP: the
    password would cross the network in clear. Refused before anything is sent there;
    anonymous tokens are still fetched."""
    reg = FakeRegistry(auth="bearer", realm="http://auth.test/token")
    with pytest.raises(AuthError, match="plain HTTP"):
        reg.client(credentials=Credentials(USER, PASSWORD)).request("GET", "/v2/", scopes=("s",))
    assert reg.on("auth.test") == [], "the token server saw nothing"
    anonymous = FakeRegistry(auth="bearer", realm="http://auth.test/token")
    assert (
        anonymous.client(authfile="/dev/null").request("GET", "/v2/", scopes=("s",)).status_code
        == 200
    )


def test_basic_auth() -> None:
    """Basic: sent after the challenge; without credentials one line says none were given."""
    reg = FakeRegistry(auth="basic")
    client = reg.client(credentials=Credentials(USER, PASSWORD))
    assert client.request("GET", "/v2/", scopes=()).status_code == 200
    assert client.request("GET", "/v2/", scopes=()).status_code == 200
    assert [s.authorization for s in reg.seen] == [None, BASIC, BASIC], "the challenge is kept"
    with pytest.raises(AuthError, match="no credentials given"):
        FakeRegistry(auth="basic").client(authfile="/dev/null").request("GET", "/v2/", scopes=())
    wrong = FakeRegistry(auth="basic").client(credentials=Credentials(USER, "wrong"))
    with pytest.raises(AuthError, match=r"authentication failed$"):
        wrong.request("GET", "/v2/", scopes=())


def test_blob_storage_elsewhere_gets_no_credentials() -> None:
    """Blob downloads redirected to storage on another host: the pull completes (digests
    verified), and the storage never sees the registry's credentials or its token."""
    reg = FakeRegistry(auth="basic", storage=True)
    reg.put_image("a/b", "1", [tar_bytes([file("x", "1" * 5000)])])
    options = reg.options(credentials=Credentials(USER, PASSWORD))
    assert validate_image(f"docker://{HOST}/a/b:1", registry=options) == []
    assert reg.on("storage.test") and {s.authorization for s in reg.on("storage.test")} == {None}


# ---------------------------------------------------------------------------- retries


def test_server_errors_and_resets_are_retried_with_growing_pauses(no_sleep: list[float]) -> None:
    reg = FakeRegistry()
    reg.inject("GET .*/v2/$", ["500", "reset", "429", "503", None])
    assert reg.client().request("GET", "/v2/", scopes=()).status_code == 200
    assert len(reg.seen) == 5
    assert no_sleep == [rc.BACKOFF * 2**i for i in range(4)]


def test_retry_after_is_honoured_within_the_limits(no_sleep: list[float]) -> None:
    reg = FakeRegistry()

    def handler(request: httpx.Request) -> httpx.Response:
        reg.seen.append(Seen(request.method, str(request.url), None, request.headers))
        if len(reg.seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "3"})
        return httpx.Response(200)

    client = RegistryClient(HOST, transport=httpx.MockTransport(handler))
    assert client.request("GET", "/v2/", scopes=()).status_code == 200
    assert no_sleep == [3.0]


def test_client_errors_are_not_retried(no_sleep: list[float]) -> None:
    """4xx: the caller's answer at once (one request, no pause)."""
    for status in ("400", "403", "404", "405"):
        reg = FakeRegistry()
        reg.inject("GET", [status] * 3)
        response = reg.client().request("GET", "/v2/a/manifests/x", scopes=())
        assert response.status_code == int(status)
        assert len(reg.seen) == 1
    assert no_sleep == []


def test_retries_give_up_in_one_line(no_sleep: list[float]) -> None:
    reg = FakeRegistry()
    reg.inject("GET", ["502"] * 50)
    with pytest.raises(RegistryError, match=rf"HTTP 502 after {rc.RETRIES} attempts$"):
        reg.client().request("GET", "/v2/", scopes=())
    assert len(reg.seen) == rc.RETRIES and sum(no_sleep) <= rc.RETRY_SECONDS


# ---------------------------------------------------------------------------- downloads


def test_a_broken_download_resumes_with_range() -> None:
    """The connection breaks twice in the middle of a blob: the download goes on from the
    byte it got to (``Range``), and the digest of the whole is still verified."""
    data = bytes(range(256)) * 4096  # 1 MiB
    reg = FakeRegistry()
    reg.blobs[digest_of(data)] = data
    reg.inject("GET .*/blobs/sha256:", ["cut", "cut", None])
    got = _read_blob(_manifestless_source(reg), digest_of(data), data)
    assert got == data
    ranges = [s.headers.get("Range") for s in reg.seen if "/blobs/" in s.url]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"
    assert ranges[2] == f"bytes={len(data) // 2 + len(data) // 4}-"


def test_a_resumed_download_that_lies_is_refused() -> None:
    """A registry that answers a ``Range`` with different bytes: the digest check fails."""
    data = b"A" * 100_000
    reg = FakeRegistry()
    reg.blobs[digest_of(data)] = data
    reg.inject("GET .*/blobs/sha256:", ["cut", None])
    source = _manifestless_source(reg)
    reg.blobs[digest_of(data)] = b"B" * 100_000  # what the registry serves from now on
    with pytest.raises(VerificationError, match="does not match"):
        _read_blob(source, digest_of(data), data)


def test_a_registry_that_cannot_resume() -> None:
    """A registry answering the ``Range`` request with the whole blob (200): one line."""
    data = b"C" * 100_000
    reg = FakeRegistry(range_resume=False)
    reg.blobs[digest_of(data)] = data
    reg.inject("GET .*/blobs/sha256:", ["cut"])
    with pytest.raises(InputError, match="cannot resume"):
        _read_blob(_manifestless_source(reg), digest_of(data), data)


def test_resumes_are_bounded() -> None:
    data = b"D" * 100_000
    reg = FakeRegistry()
    reg.blobs[digest_of(data)] = data
    reg.inject("GET .*/blobs/sha256:", ["cut"] * 50)
    with pytest.raises(InputError, match="the download broke"):
        _read_blob(_manifestless_source(reg), digest_of(data), data)
    assert reg.count("GET", "/blobs/") == registry_mod.RESUMES + 1


def _manifestless_source(reg: FakeRegistry) -> RegistrySource:
    """A source over the fake (its manifest: any small image)."""
    reg.put_image("a/b", "1", [b""])
    return _source(reg)


def test_an_oversized_manifest_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "MAX_MANIFEST", 2000)
    reg = FakeRegistry()
    reg.manifests[("a/b", "1")] = (b'{"schemaVersion":2,' + b" " * 5000 + b"}", OCI_MANIFEST)
    with pytest.raises(RegistryError, match="too large"):
        _source(reg)


# ---------------------------------------------------------------------------- uploads


def _push(reg: FakeRegistry, tmp_path: Path, size: int, **kw: object) -> str:
    """An image with one layer of ``size`` random-ish bytes, pushed to the fake."""
    layout = tmp_path / f"layout-{size}"
    data = random.Random(size).randbytes(size)  # incompressible: the blob is this large
    write_layout(layout, [tar_bytes([file("big.bin", data)])], compression="none")
    ref = f"docker://{HOST}/up/one:1"
    ocikit.copy(f"oci:{layout}:t", ref, dest_registry=reg.options(**kw))
    return ref


@pytest.mark.parametrize("location", ["relative", "absolute", "elsewhere"])
def test_chunked_upload(location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the single-PUT size: POST, PATCH chunks (``Content-Range``, each to the
    ``Location`` the last answer gave), PUT with the digest; an upload location on
    another host gets no credentials. The image reads back whole."""
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 64 << 10)
    monkeypatch.setattr(registry_mod, "UPLOAD_CHUNK", 64 << 10)
    reg = FakeRegistry(location=location, auth="basic")
    ref = _push(reg, tmp_path, 200 << 10, credentials=Credentials(USER, PASSWORD), jobs=1)
    upload_host = "upload.test" if location == "elsewhere" else HOST
    patches = [s for s in reg.seen if s.method == "PATCH"]
    assert len(patches) == 4  # 200 KiB of layer and tar headers in 64 KiB chunks
    states = [parse_qs(httpx.URL(s.url).query.decode())["state"][0] for s in patches]
    assert states == ["s0", "s65536", "s131072", "s196608"], "each to the Location given"
    assert reg.count("PUT", "digest=sha256", upload_host) >= 2  # the layer, the config
    if location == "elsewhere":
        assert {s.authorization for s in reg.on("upload.test")} == {None}
    assert validate_image(ref, registry=reg.options(credentials=Credentials(USER, PASSWORD))) == []


def test_chunk_minimum_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 16 << 10)
    monkeypatch.setattr(registry_mod, "UPLOAD_CHUNK", 16 << 10)
    reg = FakeRegistry(chunk_min=100 << 10)
    _push(reg, tmp_path, 300 << 10, jobs=1)
    sizes = [int(s.headers["Content-Length"]) for s in reg.seen if s.method == "PATCH"]
    assert sizes[:-1] and all(n == 100 << 10 for n in sizes[:-1])


def test_a_failed_chunk_resumes_where_the_registry_got_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PATCH that fails after its retries: the session's state is asked (GET, ``Range``)
    and the upload goes on from there in the same session."""
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 64 << 10)
    monkeypatch.setattr(registry_mod, "UPLOAD_CHUNK", 64 << 10)
    reg = FakeRegistry()
    reg.inject("PATCH", [None, *["500"] * rc.RETRIES])
    ref = _push(reg, tmp_path, 200 << 10, jobs=1)
    assert reg.count("POST", "/blobs/uploads/") == 2  # the layer's session, the config's
    assert reg.count("GET", "/blobs/uploads/") == 1
    assert validate_image(ref, registry=reg.options()) == []


def test_a_large_blob_goes_in_one_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the single-PUT size: one PATCH carries the whole blob (``Content-Range`` and
    ``Content-Length`` of all of it), as docker and skopeo send it, then the PUT."""
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 64 << 10)
    reg = FakeRegistry()
    ref = _push(reg, tmp_path, 20 << 20, jobs=1)  # over 16 MiB, the chunk it used to take
    patches = [s for s in reg.seen if s.method == "PATCH"]
    size = int(patches[0].headers["Content-Length"])
    assert len(patches) == 1 and size > 20 << 20
    assert patches[0].headers["Content-Range"] == f"0-{size - 1}"
    assert validate_image(ref, registry=reg.options()) == []


def test_a_broken_patch_sends_only_what_the_registry_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks half-way through the one PATCH: it is not sent again from the
    start; the registry is asked where it got to and the rest goes from there."""
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 64 << 10)
    reg = FakeRegistry()
    reg.inject("PATCH", ["cut"])
    ref = _push(reg, tmp_path, 300 << 10, jobs=1)
    ranges = [s.headers["Content-Range"] for s in reg.seen if s.method == "PATCH"]
    first_end = int(ranges[0].split("-")[1])
    assert len(ranges) == 2, ranges
    assert ranges[1] == f"{(first_end + 1) // 2}-{first_end}", "the second half only"
    assert reg.count("GET", "/blobs/uploads/") == 1
    assert validate_image(ref, registry=reg.options()) == []


def test_an_empty_session_said_0_0_resumes_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-registry says ``Range: 0-0`` of a session holding nothing (and of one holding
    a byte): the PATCH that failed all its retries is sent again from byte 0, in the same
    session, not from byte 1 (a blob missing its first byte, refused, a new session)."""
    monkeypatch.setattr(registry_mod, "MONOLITHIC_MAX", 64 << 10)
    reg = FakeRegistry(empty_range="0-0")
    reg.inject("PATCH", ["500"] * rc.RETRIES)
    ref = _push(reg, tmp_path, 200 << 10, jobs=1)
    assert reg.count("GET", "/blobs/uploads/") == 1
    assert reg.count("POST", "/blobs/uploads/") == 2, "the layer's session, the config's"
    assert validate_image(ref, registry=reg.options()) == []


def test_small_blobs_go_in_one_put(tmp_path: Path) -> None:
    reg = FakeRegistry(location="absolute")
    _push(reg, tmp_path, 10 << 10)
    assert reg.count("PATCH") == 0
    assert reg.count("PUT", "/blobs/uploads/") == 2
    puts = [s for s in reg.seen if s.method == "PUT" and "/blobs/" in s.url]
    assert all(parse_qs(httpx.URL(s.url).query.decode())["state"] for s in puts), "state kept"


def test_a_second_push_sends_no_blob(tmp_path: Path) -> None:
    reg = FakeRegistry()
    _push(reg, tmp_path, 10 << 10)
    reg.seen.clear()
    _push(reg, tmp_path, 10 << 10)
    assert reg.count("POST") == 0 and reg.count("PUT", "/blobs/") == 0
    assert reg.count("HEAD", "/blobs/") == 2 and reg.count("PUT", "/manifests/") == 1


def test_a_plain_http_registry_loads_no_certificates_until_https() -> None:
    """A registry on this machine speaks plain HTTP: its client makes no TLS context (loading
    the CA store costs ~20 ms a command) until a request goes to HTTPS (a redirect to
    storage), which is verified as ever; both connection pools keep their deadlines."""
    import ssl

    client = RegistryClient("127.0.0.1:5000")
    transport = client._client._transport
    assert getattr(transport, "_tls", "missing") is None
    pool = transport.tls()._pool  # type: ignore[attr-defined]
    assert pool._ssl_context.verify_mode == ssl.CERT_REQUIRED
    for inner in (transport._plain, transport._tls):  # type: ignore[attr-defined]
        assert type(inner._pool._network_backend).__name__ == "_DeadlineBackend"
    client.close()
    insecure = RegistryClient("127.0.0.1:5000", tls_verify=False)
    tls = insecure._client._transport.tls()  # type: ignore[attr-defined]
    assert tls._pool._ssl_context.verify_mode == ssl.CERT_NONE
    insecure.close()


def test_a_head_keeps_its_connection_for_the_next_request(registry: Registry) -> None:
    """A HEAD's answer has no body, but the connection is done with it only once its end is
    read: closing it unread would drop the connection, and a re-push (a HEAD per blob) would
    connect once per blob. Every request here goes over the one connection the first made."""
    client = RegistryClient(registry.host)
    pool = client._client._transport._plain._pool  # type: ignore[attr-defined]
    try:
        seen = set()
        for method, target in [("GET", "/v2/")] + [("HEAD", f"/v2/r/blobs/{_SOME}")] * 3:
            response = client.request(method, target, scopes=[])
            assert response.status_code in (200, 404)
            assert len(pool.connections) == 1, (method, pool.connections)
            seen.add(id(pool.connections[0]))
        assert len(seen) == 1
    finally:
        client.close()


_SOME = "sha256:" + "0" * 64
