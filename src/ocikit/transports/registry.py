"""``docker://HOST/REPO[:TAG|@DIGEST]``: a registry speaking the OCI distribution API.

Pull: the manifest (OCI or Docker schema 2; an index or manifest list picks a platform) and
its blobs, streamed and verified like any other source's. Push: blobs first, each checked
with ``HEAD`` and skipped if present, else mounted from another repository of the registry
(the source's, or ``mount_from``), else uploaded from its staged file, several at once: one
``PUT`` for small blobs, ``PATCH`` chunks (at least ``OCI-Chunk-Min-Length``) for large ones,
resumed where the registry says it got to after a failure. The manifest goes last, under each
tag: until then no tag points at the new image.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

import httpx

from ..errors import (
    DestinationError,
    InputError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ..layer.streams import CHUNK
from ..model import Descriptor, Digest, ImageConfig, Manifest, Platform
from ..model import mediatypes as mt
from ..model.manifest import parse_manifest_or_index
from .base import BlobWriter, ImageDestination, ImageSource, select_platform
from .reference import Reference
from .registry_client import (
    AuthError,
    Credentials,
    RegistryClient,
    RegistryError,
    error_message,
    raise_for,
)

MAX_MANIFEST = 4 << 20
MONOLITHIC_MAX = 32 << 20  # blobs up to this size go in one PUT
UPLOAD_CHUNK = 16 << 20
DEFAULT_JOBS = 4
SESSIONS = 3  # upload sessions tried per blob
ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: one set for the source side, one for the destination."""

    credentials: Credentials | None = None
    tls_verify: bool | None = None  # None: TLS, except plain HTTP for localhost
    authfile: str | None = None
    mount_from: tuple[str, ...] = ()  # repositories (HOST/REPO or REPO) to mount blobs from
    jobs: int = DEFAULT_JOBS


def split(ref: Reference) -> tuple[str, str]:
    host, _, repo = ref.path.partition("/")
    return host, repo


def _client(ref: Reference, options: RegistryOptions) -> RegistryClient:
    host, _ = split(ref)
    return RegistryClient(
        host,
        credentials=options.credentials,
        tls_verify=options.tls_verify,
        authfile=options.authfile,
    )


# -- pull --------------------------------------------------------------------------------------


class RegistrySource(ImageSource):
    def __init__(
        self,
        ref: Reference,
        platform: Platform | None = None,
        options: RegistryOptions | None = None,
    ) -> None:
        super().__init__(ref)
        self.host, self.repo = split(ref)
        self.client = _client(ref, options or RegistryOptions())
        self.scopes = (f"repository:{self.repo}:pull",)
        try:
            self._manifest = self._resolve(platform)
        except BaseException:
            self.client.close()
            raise

    def _get_manifest(self, reference: str) -> tuple[bytes, str]:
        what = f"{self.ref}"
        response = self.client.request(
            "GET",
            f"/v2/{self.repo}/manifests/{reference}",
            scopes=self.scopes,
            headers={"Accept": ACCEPT},
            what=what,
        )
        if response.status_code != 200:
            raise_for(response, what)
        raw = response.content
        if len(raw) > MAX_MANIFEST:
            raise InputError(f"{what}: the manifest is too large ({len(raw)} bytes)")
        if reference.startswith("sha256:") and Digest.of(raw) != Digest(reference):
            raise VerificationError(f"{what}: the manifest does not match its digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return raw, media_type

    def _resolve(self, platform: Platform | None) -> Manifest:
        raw, media_type = self._get_manifest(self.ref.name or "latest")
        for _ in range(4):
            doc = parse_manifest_or_index(raw, media_type or None, f"{self.ref}")
            if isinstance(doc, Manifest):
                return doc
            desc = select_platform(doc.manifests, platform, f"{self.ref}")
            raw, media_type = self._get_manifest(str(desc.digest))
            media_type = media_type or desc.media_type
        raise InputError(f"{self.ref}: indexes nest too deeply")

    def manifest(self) -> Manifest:
        return self._manifest

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        what = f"{self.ref}: blob {descriptor.digest}"
        response = self.client.request(
            "GET",
            f"/v2/{self.repo}/blobs/{descriptor.digest}",
            scopes=self.scopes,
            stream=True,
            what=what,
        )
        if response.status_code != 200:
            response.read()
            response.close()
            raise_for(response, what)
        return io.BufferedReader(_Body(response, what), CHUNK)  # type: ignore[return-value]

    def repo_tags(self) -> list[str]:
        name = self.ref.name
        return [f"{self.ref.path}:{name}"] if name and ":" not in name else []

    def close(self) -> None:
        self.client.close()


class _Body(io.RawIOBase):
    def __init__(self, response: httpx.Response, what: str) -> None:
        super().__init__()
        self._response = response
        self._chunks = response.iter_raw(CHUNK)
        self._what = what
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
                raise InputError(f"{self._what}: the download broke ({e})") from None
        n = min(len(buffer), len(self._cur))
        buffer[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


# -- push --------------------------------------------------------------------------------------


class _StagedBlob(BlobWriter):
    """A blob written to a temporary file, uploaded when committed (the file is the retry
    buffer: nothing is held in memory)."""

    def __init__(self, dest: RegistryDestination) -> None:
        self._dest = dest
        fd, self.path = tempfile.mkstemp(prefix="ocikit-push-")
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)

    def commit(self, digest: Digest) -> None:
        self.file.close()
        self._dest.upload(self.path, digest)

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class RegistryDestination(ImageDestination):
    def __init__(
        self,
        ref: Reference,
        additional_tags: Sequence[str] = (),
        options: RegistryOptions | None = None,
    ) -> None:
        super().__init__(ref)
        options = options or RegistryOptions()
        self.host, self.repo = split(ref)
        self.client = _client(ref, options)
        self.mount_from = [self._repo_of(r) for r in options.mount_from]
        self.mount_from = [r for r in self.mount_from if r and r != self.repo]
        self.scopes = (
            f"repository:{self.repo}:pull,push",
            *(f"repository:{r}:pull" for r in self.mount_from),
        )
        self._pool = ThreadPoolExecutor(max(1, options.jobs), thread_name_prefix="ocikit-push")
        self._uploads: list[Future[None]] = []
        self._present: set[Digest] = set()
        self._absent: set[Digest] = set()  # asked already: neither there nor mountable
        self._staged: set[str] = set()  # files waiting for their upload
        self._manifests: list[Manifest] = []
        self._tags = [ref.name] if ref.name else []
        for tag in additional_tags:
            if not tag or "/" in tag or ":" in tag:
                raise UsageError(f"{ref}: --additional-tag takes a tag here, got {tag!r}")
            self._tags.append(tag)
        self.stats = {"uploaded_bytes": 0, "mounted": 0, "skipped": 0}

    def _repo_of(self, name: str) -> str | None:
        """``HOST/REPO`` of this registry, or a bare ``REPO``: the repository; else None."""
        host, slash, rest = name.partition("/")
        if slash and ("." in host or ":" in host or host == "localhost"):
            return rest if host == self.host else None
        return name

    # -- blobs -----------------------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        if digest in self._present:
            return True
        if self._head(digest) or self._mount(digest):
            self._present.add(digest)
            return True
        self._absent.add(digest)
        return False

    def _head(self, digest: Digest) -> bool:
        response = self.client.request(
            "HEAD", f"/v2/{self.repo}/blobs/{digest}", scopes=self.scopes, what=str(self.ref)
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise_for(response, f"{self.ref}: blob {digest}")
        return False  # pragma: no cover

    def _mount(self, digest: Digest) -> bool:
        for source in self.mount_from:
            response = self.client.request(
                "POST",
                f"/v2/{self.repo}/blobs/uploads/",
                params={"mount": str(digest), "from": source},
                scopes=self.scopes,
                what=str(self.ref),
            )
            if response.status_code == 201:
                self.stats["mounted"] += 1
                return True
            location = response.headers.get("Location")
            if response.status_code == 202 and location:  # not mounted: drop that session
                with contextlib.suppress(RegistryError):
                    self.client.request("DELETE", location, scopes=self.scopes)
        return False

    def new_blob(self) -> BlobWriter:
        return _StagedBlob(self)

    def upload(self, path: str, digest: Digest) -> None:
        """Upload the staged file ``path`` (then removed) in the background."""
        self._staged.add(path)
        self._uploads.append(self._pool.submit(self._upload, path, digest))

    def _upload(self, path: str, digest: Digest) -> None:
        try:
            if digest not in self._absent and self.has_blob(digest):
                self.stats["skipped"] += 1
                return
            size = os.path.getsize(path)
            for session in range(1, SESSIONS + 1):  # a session a failure spoiled: a new one
                location, minimum = self._start()
                try:
                    if size <= max(MONOLITHIC_MAX, minimum):
                        self._put_whole(location, path, size, digest)
                    else:
                        chunk = max(UPLOAD_CHUNK, minimum)
                        self._put_chunks(location, path, size, digest, chunk)
                    break
                except AuthError:
                    raise
                except (RegistryError, NotFoundError):  # 404: the session is gone
                    if self._head(digest):  # it got there after all
                        break
                    if session == SESSIONS:
                        raise
            self.stats["uploaded_bytes"] += size
            self._present.add(digest)
        finally:
            self._staged.discard(path)
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _start(self) -> tuple[str, int]:
        response = self.client.request(
            "POST", f"/v2/{self.repo}/blobs/uploads/", scopes=self.scopes, what=str(self.ref)
        )
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise_for(response, f"{self.ref}: starting an upload")
        minimum = response.headers.get("OCI-Chunk-Min-Length", "0")
        return _absolute(self.client.base, location), int(minimum) if minimum.isdigit() else 0

    def _put_whole(self, location: str, path: str, size: int, digest: Digest) -> None:
        response = self.client.request(
            "PUT",
            _with_digest(location, digest),
            scopes=self.scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=lambda: _file_chunks(path, 0, size),
            what=f"{self.ref}: blob {digest}",
        )
        if response.status_code not in (201, 204):
            raise_for(response, f"{self.ref}: uploading {digest}")

    def _put_chunks(self, location: str, path: str, size: int, digest: Digest, chunk: int) -> None:
        what = f"{self.ref}: blob {digest}"
        offset = 0
        stalls = 0
        while offset < size:
            n = min(chunk, size - offset)
            start = offset
            try:
                response = self.client.request(
                    "PATCH",
                    location,
                    scopes=self.scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{start}-{start + n - 1}",
                        "Content-Length": str(n),
                    },
                    body=lambda s=start, k=n: _file_chunks(path, s, k),
                    what=what,
                )
                ok = response.status_code == 202
            except AuthError:
                raise
            except RegistryError:
                ok, response = False, None
            if ok and response is not None:
                location = _absolute(self.client.base, response.headers.get("Location", location))
                offset = start + n
                stalls = 0
                continue
            # where did the registry get to? resume from there (its new state in the URL)
            got, location = self._received(location)
            if got is None:  # it cannot say (distribution's location expires): a new session
                raise RegistryError(f"{what}: the upload session was lost")
            stalls = stalls + 1 if got <= start else 0
            if stalls > 3:
                raise RegistryError(f"{what}: the upload makes no progress")
            offset = got
        response = self.client.request(
            "PUT",
            _with_digest(location, digest),
            scopes=self.scopes,
            headers={"Content-Length": "0"},
            body=b"",
            what=what,
        )
        if response.status_code not in (201, 204):
            raise_for(response, f"{what}: closing the upload")

    def _received(self, location: str) -> tuple[int | None, str]:
        """How many bytes the upload session holds (``Range: 0-N``), if it can say, and the
        location to go on with (registries keep the session's state in it)."""
        try:
            response = self.client.request("GET", location, scopes=self.scopes)
        except RegistryError:
            return None, location
        if response.status_code != 204:
            return None, location
        location = _absolute(self.client.base, response.headers.get("Location", location))
        header = response.headers.get("Range", "")
        if "-" not in header:
            return 0, location
        with contextlib.suppress(ValueError):
            return int(header.split("-", 1)[1]) + 1, location
        return None, location

    def _wait(self) -> None:
        pending, self._uploads = self._uploads, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if e is not None:
                raise e

    # -- manifests -------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest, config: ImageConfig, tags: Sequence[str]) -> None:
        del config, tags  # the config is a blob already; tags come from the reference
        self._manifests.append(manifest)

    def commit(self) -> None:
        try:
            self._wait()  # every blob is there before any manifest names it
            for manifest in self._manifests:
                for reference in self._tags or [str(manifest.digest)]:
                    if reference.startswith("sha256:") and reference != str(manifest.digest):
                        raise DestinationError(
                            f"{self.ref}: the image's manifest is {manifest.digest}, not the "
                            f"digest in the reference"
                        )
                    self._put_manifest(manifest, reference)
        finally:
            self._pool.shutdown(wait=True)
            self.client.close()

    def _put_manifest(self, manifest: Manifest, reference: str) -> None:
        response = self.client.request(
            "PUT",
            f"/v2/{self.repo}/manifests/{reference}",
            scopes=self.scopes,
            headers={"Content-Type": manifest.media_type},
            body=manifest.raw,
            what=f"{self.ref}",
        )
        if response.status_code not in (200, 201, 202):
            raise RegistryError(f"{self.ref}: manifest refused: {error_message(response)}")

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for path in list(self._staged):  # uploads that never started
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._staged.clear()
        self.client.close()


def _absolute(base: str, location: str) -> str:
    if location.startswith(("http://", "https://")):
        return location
    return base + ("" if location.startswith("/") else "/") + location


def _with_digest(location: str, digest: Digest) -> str:
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}digest={quote(str(digest))}"


def _file_chunks(path: str, offset: int, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise DestinationError(f"{path}: the staged blob is shorter than expected")
            left -= len(data)
            yield data
