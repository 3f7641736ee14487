"""The build's pieces in-process: cache keys pinned (a refactoring that changes one byte of a
key makes every cache a miss: CACHE_FORMAT would have to change), and the cache store
(lookups proved by seals, entries written whole or not at all, nothing read by name)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ocikit
from ocikit.build import BuildError, BuildOptions
from ocikit.build.store import BuildCache
from ocikit.build.users import user_ids
from ocikit.model import Descriptor, Digest, Manifest, mutate
from ocikit.model import mediatypes as mt

REF_NAME = "org.opencontainers.image.ref.name"

#: a recipe whose keys depend on nothing of the host: its arch is given, its import's mode
#: too, and its strings are not all ASCII (the key's JSON escapes them; configs do not)
PINNED = """
images:
  app:
    from: scratch
    arch: amd64
    imports:
      - {src: hello.txt, dest: /srv/hello.txt, mode: "0644"}
    config:
      env: {GREETING: "grüß dich", PATH: /bin}
      labels: {"é": "ü"}
      entrypoint: [/bin/hello]
      user: "1000:1000"
      working_dir: /srv
      exposed_ports: ["80", "53/udp"]
      volumes: [/data]
      stop_signal: SIGTERM
    annotations: {a: b}
  child:
    from: {built: app}
    config:
      cmd: ["--verbose"]
      labels: {x: "y"}
"""

#: (image, layer type) -> (key, manifest digest), as ocikit computed them before the build
#: engine was split into modules; the same inputs must keep giving the same keys and bytes
PINNED_KEYS = {
    ("app", "tar"): (
        "026ea0fb2a5c539d4117a84aa47f5ac397741d2c1d3223d7b4bfc7cbe13b6339",
        "sha256:8a3f3a88a7aef6fb041384b4e7796a450d0aaf7d87f84174f74e6443c81a2893",
    ),
    ("child", "tar"): (
        "c85e5c9f7bc41caa198b6fd48b2f6cc01bbef43b197669e87988bf62bf50cb2e",
        "sha256:16837abcd92726f2165d429c5d45fcc2948a698682563158b1b364c672d4303a",
    ),
}


def pinned_project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "ocikit.yaml").write_text(PINNED)
    hello = ctx / "hello.txt"
    hello.write_bytes(b"hello\n")
    os.utime(hello, (1_000_000, 1_000_000))
    return ctx / "ocikit.yaml"


@pytest.mark.usefixtures("file_backend")  # the same keys and bytes on both paths
def test_cache_keys_and_digests_are_pinned(tmp_path: Path) -> None:
    options = BuildOptions(output=f"oci:{tmp_path / 'out'}", cache_dir=str(tmp_path / "cache"))
    result = ocikit.build(pinned_project(tmp_path), options)
    got = {(i.name, i.layer_type): (i.key, str(i.digest)) for i in result.images}
    assert got == PINNED_KEYS


# -- the store ------------------------------------------------------------------------------


def put_empty_image(store: BuildCache, tag: str, label: str) -> Manifest:
    """An image with no layer (its config says ``label``) written to the store as ``tag``."""
    with store.entry(tag) as entry:
        raw = mutate.encode(
            mutate.with_labels({"architecture": "amd64", "os": "linux"}, {"l": label})
        )
        config = Descriptor(mt.OCI_CONFIG, entry.put_bytes(raw), len(raw))
        manifest = Manifest.build(config, [])
        entry.put_image(manifest, mutate.to_config(raw))
        with entry.staged(manifest) as image:  # on disk, checkable, not named yet
            assert image.config.data["config"]["Labels"] == {"l": label}
        assert store.lookup(tag) is None
        entry.commit(manifest)
    return manifest


def named(cache: Path) -> dict[str, str]:
    if not (cache / "index.json").exists():
        return {}
    index = json.loads((cache / "index.json").read_bytes())
    return {d["annotations"][REF_NAME]: d["digest"] for d in index["manifests"]}


def test_an_entry_is_used_when_its_seal_proves_it(tmp_path: Path) -> None:
    store = BuildCache(tmp_path)
    try:
        made = put_empty_image(store, "cache-a", "a")
        assert store.lookup("cache-a") == made.descriptor  # made here: used at once
        store.seal()
    finally:
        store.close()
    assert named(tmp_path) == {"cache-a": str(made.digest)}
    store = BuildCache(tmp_path)
    try:
        assert store.lookup("cache-a") == made.descriptor and store.why == ""
        (tmp_path / "seals" / "cache-a").unlink()  # asked once per build: the answer is kept
        assert store.lookup("cache-a") == made.descriptor
        with store.open("cache-a") as image:
            assert image.digest == made.digest
    finally:
        store.close()
    store = BuildCache(tmp_path)
    try:
        assert store.lookup("cache-a") is None and store.why == ""  # never sealed: a miss
    finally:
        store.close()


@pytest.mark.parametrize("touched", [False, True])
def test_a_blob_copied_out_is_not_hashed_again_by_the_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, touched: bool
) -> None:
    """Copying an entry's blobs to an output reads each once, hashed: that read is the
    cache's hashing of the file, and the seal does not read it again, unless the file
    changed since (its identity; ``touched``) or the read came too soon after its ctime."""
    import time

    from ocikit.build import cache as cache_module
    from ocikit.transports.oci_layout import OciLayoutDestination
    from ocikit.transports.reference import Reference

    hashed: list[tuple[str, bool]] = []  # (digest, copied)
    hash_file = cache_module.Cache._hash_file

    def spy(self: cache_module.Cache, fd: int, digest: Digest, *args: object) -> object:
        hashed.append((str(digest), len(args) > 1))
        return hash_file(self, fd, digest, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module.Cache, "_hash_file", spy)
    cache, out = tmp_path / "cache", tmp_path / "out"
    cache.mkdir()
    store = BuildCache(cache)
    try:
        made = put_empty_image(store, "cache-a", "a")
        time.sleep(2 * cache_module.MARGIN_NS / 1e9)  # the files' ctimes old enough
        dest = OciLayoutDestination(Reference("oci", str(out), "a"))
        try:
            with store.open("cache-a") as image:
                store.copy_blobs(image, dest)
        finally:
            dest.abort()
        config = made.config.digest
        assert hashed == [(str(config), True)]
        if touched:
            os.utime(cache / "blobs" / "sha256" / config.hex)
            time.sleep(2 * cache_module.MARGIN_NS / 1e9)
        hashed.clear()
        store.seal()
        manifest = str(made.digest)
        assert hashed == [(manifest, False), *([(str(config), False)] if touched else [])]
    finally:
        store.close()
    store = BuildCache(cache)
    try:
        assert store.lookup("cache-a") == made.descriptor and store.why == ""
    finally:
        store.close()


def test_a_large_blob_is_copied_whole_and_hashed_in_order(tmp_path: Path) -> None:
    """A blob of several chunks (hashed on a thread beside the copy) reaches the sink whole,
    in order, and proves itself; one whose bytes changed (the same size) does not."""
    from ocikit.layer.streams import CHUNK

    data = os.urandom(CHUNK // 2) * 7 + b"end"  # 3.5 chunks: both buffers go round
    digest = Digest.of(data)
    blob = tmp_path / "blobs" / "sha256" / digest.hex
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    store = BuildCache(tmp_path)
    try:
        got = bytearray()
        assert store.layers.copy_blob(digest, len(data), got.extend)
        assert bytes(got) == data
        with open(blob, "r+b") as f:  # a byte flipped in the middle of the third chunk
            f.seek(2 * CHUNK + 5)
            f.write(bytes([data[2 * CHUNK + 5] ^ 1]))
        assert not store.layers.copy_blob(digest, len(data), lambda _chunk: None)
        assert not store.layers.copy_blob(digest, len(data) + 1, got.extend)  # not its size
    finally:
        store.close()


def test_what_the_seal_would_hash_is_hashed_ahead_once_old_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hash_ahead`` (while an output is fsynced) hashes the blobs whose ctimes are old
    enough and that were not hashed late enough after them; the seal then reads none.
    (The margin is set here: first an hour, files too new; then none, every file old
    enough.)"""
    from ocikit.build import cache as cache_module

    hashed: list[str] = []
    hash_file = cache_module.Cache._hash_file

    def spy(self: cache_module.Cache, fd: int, digest: Digest, *args: object) -> object:
        hashed.append(str(digest))
        return hash_file(self, fd, digest, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module.Cache, "_hash_file", spy)
    store = BuildCache(tmp_path)
    try:
        made = put_empty_image(store, "cache-a", "a")
        blobs = [made.descriptor, made.config]
        monkeypatch.setattr(cache_module, "MARGIN_NS", 3600 * 10**9)
        store.layers.hash_ahead(blobs)  # too soon: nothing (were it hashed now, not trusted)
        assert hashed == []
        monkeypatch.setattr(cache_module, "MARGIN_NS", 0)
        store.layers.hash_ahead(blobs)
        store.layers.hash_ahead(blobs)  # once
        assert sorted(hashed) == sorted(str(d.digest) for d in blobs)
        hashed.clear()
        store.seal()
        assert hashed == []
    finally:
        store.close()
    store = BuildCache(tmp_path)
    try:
        assert store.lookup("cache-a") == made.descriptor and store.why == ""
    finally:
        store.close()


def test_a_tampered_seal_or_a_moved_tag_is_a_miss(tmp_path: Path) -> None:
    store = BuildCache(tmp_path)
    try:
        made = put_empty_image(store, "cache-a", "a")
        other = put_empty_image(store, "cache-b", "b")
        store.seal()
    finally:
        store.close()
    seal = tmp_path / "seals" / "cache-a"
    record = json.loads(seal.read_bytes())
    record["manifest"]["digest"] = str(other.digest)
    seal.write_text(json.dumps(record))
    index = json.loads((tmp_path / "index.json").read_bytes())
    for d in index["manifests"]:  # cache-b's tag now names cache-a's image
        if d["annotations"][REF_NAME] == "cache-b":
            d["digest"], d["size"] = str(made.digest), made.descriptor.size
    (tmp_path / "index.json").write_text(json.dumps(index))
    store = BuildCache(tmp_path)
    try:
        assert store.lookup("cache-a") is None and "does not verify" in store.why
        assert store.lookup("cache-b") is None and "another image" in store.why
    finally:
        store.close()


def test_an_entry_left_without_commit_leaves_nothing_named(tmp_path: Path) -> None:
    store = BuildCache(tmp_path)
    try:
        with pytest.raises(RuntimeError), store.entry("cache-a") as entry:
            with entry.new_blob() as writer:
                writer.file.write(b"a layer")
                writer.commit(Digest.of(b"a layer"))
            raise RuntimeError("the build failed")
        assert store.lookup("cache-a") is None
        store.seal()  # nothing to seal
    finally:
        store.close()
    assert named(tmp_path) == {}
    assert not (tmp_path / "seals" / "cache-a").exists()
    assert not list(tmp_path.glob("blobs/sha256/*"))  # what nothing references is gone


# -- users -------------------------------------------------------------------------------------


def test_users_from_a_hostile_passwd_are_looked_up_or_refused_in_words(tmp_path: Path) -> None:
    """Rows whose ids are not decimal numbers (``abc``, ``12x``, ``²``) match nothing: the
    image's files are hostile input, never a crash."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:abc::/:/bin/sh\nbob:x:12x:5::/:/bin/sh\n"
        "ok:x:7:8::/:/bin/sh\ntwo:x:²:8::/:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("staff:x:5x:ok\nwheel:x:10:ok\nodd:x:²:ok\n")
    assert user_ids(tmp_path, "ok", "img") == (7, 8, [10])
    assert user_ids(tmp_path, "1000", "img") == (1000, 0, [])  # its row's gid is no number
    assert user_ids(tmp_path, "ok:wheel", "img") == (7, 10, [10])
    for user, said in [("app", "no user 'app'"), ("bob", "no user 'bob'"), ("two", "no user"),
                       ("ok:staff", "no group 'staff'"), ("ok:odd", "no group 'odd'"),
                       ("²", "no user")]:  # fmt: skip
        with pytest.raises(BuildError, match=said):
            user_ids(tmp_path, user, "img")


@pytest.mark.parametrize("fails", [False, True])
def test_a_base_read_during_the_step_gives_its_result_or_its_error(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """A run step's base is read in a thread while the step runs: the steps get its tree
    when they ask, or the error reading it raised there (a base that cannot be read still
    fails the build, after the step now); the base is closed either way."""
    from ocikit.build import engine
    from ocikit.errors import InputError
    from ocikit.layer.analyze import Tree
    from ocikit.ops.check import LowerLayers

    lower = LowerLayers(1, Tree(), [], 3)
    closed: list[bool] = []

    class Base:
        def __enter__(self) -> Base:
            return self

        def __exit__(self, *exc: object) -> None:
            closed.append(True)

    def analyze_lower(image: object) -> LowerLayers:
        if fails:
            raise InputError("layer 0: truncated")
        return lower

    monkeypatch.setattr(engine, "analyze_lower", analyze_lower)
    reading = engine._BaseRead(Base())  # type: ignore[arg-type]
    if fails:
        with pytest.raises(InputError, match="layer 0: truncated"):
            reading.result()
    else:
        assert reading.result() is lower
    assert closed == [True]
