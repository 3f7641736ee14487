"""``docker://HOST/REPO[:TAG|@DIGEST]``: a registry speaking the OCI distribution API.

Pull: the manifest (OCI or Docker schema 2; an index or manifest list picks a platform) and
its blobs, streamed and verified like any other source's. Push: blobs first, each checked
with ``HEAD`` and skipped if present, else mounted from another repository of the registry
(the source's, or ``mount_from``), else uploaded from its staged file, several at once: one
``PUT`` for small blobs, one ``PATCH`` of the whole blob for large ones (as docker and skopeo
send them; chunks of ``UPLOAD_CHUNK`` if set, at least ``OCI-Chunk-Min-Length``), resumed
where the registry says it got to after a failure. The manifest goes last, under each
tag: until then no tag points at the new image.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO
from urllib.parse import quote

import httpx

from ..errors import (
    DestinationError,
    InputError,
    NotFoundError,
    Option,
    UsageError,
    VerificationError,
)
from ..layer.streams import CHUNK
from ..model import Descriptor, Digest, ImageConfig, Index, Manifest, Platform
from ..model import mediatypes as mt
from ..model.jsondoc import MANIFEST_LIMIT, show
from ..model.manifest import parse_manifest_or_index
from . import registry_client as rc
from .base import (
    BlobWriter,
    DestinationProperties,
    Flavor,
    ImageDestination,
    ImageSource,
    IndexSource,
    SourceProperties,
    select_platform,
)
from .fsutil import PrivateDir, private_tmp_dir
from .httpstream import Budget, ResponseStream
from .kinds import REGISTRY_JOBS
from .reference import Reference
from .registry_client import (
    AuthError,
    DeadlineError,
    RegistryClient,
    RegistryError,
    error_message,
    raise_for,
    read_error,
)
from .registry_options import Credentials as Credentials
from .registry_options import RegistryOptions as RegistryOptions
from .tempblob import TempBlob

MAX_MANIFEST = MANIFEST_LIMIT
MONOLITHIC_MAX = 32 << 20  # blobs up to this size go in one PUT
#: bytes one PATCH carries at most; None: the rest of the blob (measured against
#: docker-registry: 16 MiB chunks cost 56 requests and ~10 % more time for 480 MB than one
#: PATCH a blob)
UPLOAD_CHUNK: int | None = None
DEFAULT_JOBS = REGISTRY_JOBS  # the registry transport's default_jobs
SESSIONS = 3  # upload sessions tried per blob
RESUMES = 5  # a broken download goes on from where it stopped, this many times
ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])


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
        transport=options.transport,
    )


# -- pull --------------------------------------------------------------------------------------


class RegistrySource(ImageSource):
    properties = SourceProperties(concurrent=True)

    def __init__(
        self,
        ref: Reference,
        platform: Platform | None = None,
        options: RegistryOptions | None = None,
        *,
        descriptor: Descriptor | None = None,
        client: RegistryClient | None = None,
    ) -> None:
        """``descriptor``: read this manifest of the repository (an index's entry) instead
        of the reference's; ``client``: share a connection (then not closed here)."""
        super().__init__(ref)
        self.host, self.repo = split(ref)
        self._owns_client = client is None
        self.client = client or _client(ref, options or RegistryOptions())
        self.scopes = (f"repository:{self.repo}:pull",)
        try:
            start = str(descriptor.digest) if descriptor else None
            self._manifest = self._resolve(platform, start)
        except BaseException:
            self.close()
            raise

    def _get_manifest(self, reference: str) -> tuple[bytes, str]:
        what = f"{self.ref}"
        response = self.client.request(
            "GET",
            f"/v2/{self.repo}/manifests/{reference}",
            scopes=self.scopes,
            headers={"Accept": ACCEPT},
            what=what,
            limit=MAX_MANIFEST,
        )
        if response.status_code != 200:
            raise_for(response, what)
        raw = response.content
        if reference.startswith("sha256:") and Digest.of(raw) != Digest(reference):
            raise VerificationError(f"{what}: the manifest does not match its digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return raw, media_type

    def _resolve(self, platform: Platform | None, start: str | None = None) -> Manifest:
        raw, media_type = self._get_manifest(start or self.ref.name or "latest")
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
        """The blob streamed; a download that breaks goes on from the byte it got to (a
        ``Range`` request), ``RESUMES`` times at most, each after the client's retries. The
        whole download, resumes included, must average the client's ``MIN_RATE``."""
        what = f"{self.ref}: blob {descriptor.digest}"
        resumes = 0
        budget = Budget(rc.DEADLINE, rc.MIN_RATE)

        def resume(offset: int, error: httpx.HTTPError) -> httpx.Response:
            nonlocal resumes
            if budget.expired:
                raise DeadlineError(f"{what}: {budget.reason()}") from None
            resumes += 1
            if resumes > RESUMES:
                raise InputError(f"{what}: the download broke ({error})") from None
            return self._get_blob(descriptor, offset, what, budget)

        body = ResponseStream(self._get_blob(descriptor, 0, what, budget), resume, budget)
        return io.BufferedReader(body, CHUNK)

    def _get_blob(
        self, descriptor: Descriptor, offset: int, what: str, budget: Budget
    ) -> httpx.Response:
        """The blob's bytes from ``offset`` on (a ``Range`` request to resume a download)."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        response = self.client.request(
            "GET",
            f"/v2/{self.repo}/blobs/{descriptor.digest}",
            scopes=self.scopes,
            headers=headers,
            stream=True,
            what=what,
            budget=budget,
        )
        expected = 206 if offset else 200
        if response.status_code != expected:
            response = read_error(response, what)
            if offset and response.status_code == 200:
                raise InputError(f"{what}: the download broke and the registry cannot resume it")
            raise_for(response, what)
        return response

    def repo_tags(self) -> list[str]:
        name = self.ref.name
        return [f"{self.ref.path}:{name}"] if name and ":" not in name else []

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


class RegistryIndex(IndexSource):
    """The index a ``docker://`` reference names, and each image of it."""

    def __init__(self, ref: Reference, options: RegistryOptions | None = None) -> None:
        self.ref = ref
        self._options = options or RegistryOptions()
        self.client = _client(ref, self._options)
        self.host, self.repo = split(ref)
        try:
            response = self.client.request(
                "GET",
                f"/v2/{self.repo}/manifests/{ref.name or 'latest'}",
                scopes=(f"repository:{self.repo}:pull",),
                headers={"Accept": ACCEPT},
                what=str(ref),
                limit=MAX_MANIFEST,
            )
            if response.status_code != 200:
                raise_for(response, str(ref))
            raw = response.content
            name = ref.name or ""
            if name.startswith("sha256:") and Digest.of(raw) != Digest(name):
                raise VerificationError(f"{ref}: the manifest does not match its digest")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            doc = parse_manifest_or_index(raw, media_type or None, str(ref))
            self.index = doc if isinstance(doc, Index) else None
        except BaseException:
            self.client.close()
            raise

    def open_child(self, descriptor: Descriptor) -> ImageSource:
        return RegistrySource(
            self.ref, None, self._options, descriptor=descriptor, client=self.client
        )

    def close(self) -> None:
        self.client.close()


# -- push --------------------------------------------------------------------------------------


class RegistryDestination(ImageDestination):
    #: a registry-to-registry copy keeps every digest; a source's file is sent as it is
    properties = DestinationProperties(
        flavor=Flavor.SOURCE, concurrent=True, takes_files=True, holds_index=True
    )

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
        repos = [self._repo_of(r) for r in options.mount_from]
        self.mount_from = [r for r in repos if r and r != self.repo]
        self.scopes = (
            f"repository:{self.repo}:pull,push",
            *(f"repository:{r}:pull" for r in self.mount_from),
        )
        self._pool = ThreadPoolExecutor(max(1, options.jobs), thread_name_prefix="ocikit-push")
        self._uploads: list[Future[None]] = []
        self._present: set[Digest] = set()
        self._absent: set[Digest] = set()  # asked already: neither there nor mountable
        self._staged: set[str] = set()  # files waiting for their upload
        # converted blobs are staged in a private directory of $TMPDIR (made when needed,
        # reclaimed by the next run or ocikit gc if this process dies)
        self._staging: PrivateDir | None = None
        self._staging_lock = threading.Lock()
        self._manifests: list[Manifest | Index] = []  # tagged
        self._children: list[Manifest] = []  # named by an index: pushed by digest, first
        self._tags = [ref.name] if ref.name else []
        for tag in additional_tags:
            if not tag or "/" in tag or ":" in tag:
                raise UsageError(
                    f"{ref}: ", Option("additional_tags"), f" takes a tag here, got {show(tag)}"
                )
            self._tags.append(tag)
        self.stats = {"uploaded_bytes": 0, "mounted": 0, "skipped": 0}

    def ready(self) -> None:
        """The registry answers the API's base (``GET /v2/``) with the push scopes: it is
        reachable, speaks the distribution API, and takes the credentials."""
        response = self.client.request("GET", "/v2/", scopes=self.scopes, what=str(self.ref))
        if response.status_code == 404:
            raise RegistryError(f"{self.ref}: {self.host} does not answer as a registry (no /v2/)")

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
        """Written to a temporary file, uploaded when committed (the file is the retry
        buffer: nothing is held in memory)."""
        staging = self.staging()
        return TempBlob(staging.path, staging.what, lambda path, d, _size: self.upload(path, d))

    def put_blob_file(self, path: str, digest: Digest) -> None:
        """Upload a source's own blob file in the background (it is not removed)."""
        self._uploads.append(self._pool.submit(self._upload, path, digest, False))

    def put_blob_bytes(self, data: bytes) -> Digest:
        """Upload a small blob (a config) from memory, in the background."""
        digest = Digest.of(data)
        self._uploads.append(self._pool.submit(self._upload, data, digest, False))
        return digest

    def upload(self, path: str, digest: Digest) -> None:
        """Upload the staged file ``path`` (then removed) in the background."""
        self._staged.add(path)
        self._uploads.append(self._pool.submit(self._upload, path, digest))

    def _upload(self, path: str | bytes, digest: Digest, staged: bool = True) -> None:
        """Upload the blob in the file ``path`` (or these bytes); a staged file is removed."""
        try:
            if digest not in self._absent and self.has_blob(digest):
                self.stats["skipped"] += 1
                return
            size = len(path) if isinstance(path, bytes) else os.path.getsize(path)
            for session in range(1, SESSIONS + 1):  # a session a failure spoiled: a new one
                location, minimum = self._start()
                try:
                    if size <= max(MONOLITHIC_MAX, minimum):
                        self._put_whole(location, path, size, digest)
                    else:
                        chunk = max(UPLOAD_CHUNK or size, minimum)
                        self._put_chunks(location, path, size, digest, chunk)
                    break
                except (AuthError, DeadlineError):
                    raise
                except (RegistryError, NotFoundError):  # 404: the session is gone
                    if self._head(digest):  # it got there after all
                        break
                    if session == SESSIONS:
                        raise
            self.stats["uploaded_bytes"] += size
            self._present.add(digest)
        finally:
            if staged and isinstance(path, str):
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

    def _put_whole(self, location: str, path: str | bytes, size: int, digest: Digest) -> None:
        response = self.client.request(
            "PUT",
            _with_digest(location, digest),
            scopes=self.scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=lambda: _chunks(path, 0, size),
            what=f"{self.ref}: blob {digest}",
            budget=Budget(rc.DEADLINE, rc.MIN_RATE),
        )
        if response.status_code not in (201, 204):
            raise_for(response, f"{self.ref}: uploading {digest}")

    def _put_chunks(
        self, location: str, path: str | bytes, size: int, digest: Digest, chunk: int
    ) -> None:
        what = f"{self.ref}: blob {digest}"
        offset = 0
        stalls = 0
        budget = Budget(rc.DEADLINE, rc.MIN_RATE)  # the session's chunks must average MIN_RATE
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
                    body=functools.partial(_chunks, path, start, n),
                    what=what,
                    budget=budget,
                    resend=False,  # broken off: ask what arrived (below), send only the rest
                )
                ok = response.status_code == 202
            except AuthError:
                raise
            except RegistryError:
                if budget.expired:  # too slow: resuming would only be slower
                    raise
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
            budget=budget,
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
        header = response.headers.get("Range", "").strip()
        # docker-registry says 0-0 of an empty session (and of one byte): taken as empty (a
        # session holding one byte refuses the PATCH from 0; a new session then)
        if "-" not in header or header == "0-0":
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

    def put_child_manifest(self, manifest: Manifest) -> None:
        self._children.append(manifest)

    def put_index(self, index: Index, tags: Sequence[str]) -> None:
        del tags
        self._manifests.append(index)

    def commit(self) -> None:
        try:
            self._wait()  # every blob is there before any manifest names it
            for child in self._children:  # every manifest before the index naming it
                self._put_manifest(child, str(child.digest))
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
            self._remove_staging()

    def staging(self) -> PrivateDir:
        with self._staging_lock:
            if self._staging is None:
                self._staging = private_tmp_dir("push", str(self.ref))
            return self._staging

    def _remove_staging(self) -> None:
        with self._staging_lock:
            if self._staging is not None:
                self._staging.remove()

    def _put_manifest(self, manifest: Manifest | Index, reference: str) -> None:
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
        self._remove_staging()


def _absolute(base: str, location: str) -> str:
    if location.startswith(("http://", "https://")):
        return location
    return base + ("" if location.startswith("/") else "/") + location


def _with_digest(location: str, digest: Digest) -> str:
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}digest={quote(str(digest))}"


def _chunks(path: str | bytes, offset: int, size: int) -> Iterator[bytes]:
    """``size`` bytes from ``offset`` of the file ``path`` (or of these bytes), 1 MiB at once."""
    if isinstance(path, bytes):
        for start in range(offset, offset + size, CHUNK):
            yield path[start : min(start + CHUNK, offset + size)]
        return
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise DestinationError(f"{path}: the staged blob is shorter than expected")
            left -= len(data)
            yield data
