"""Builds read each input once, and trust only what the cache proves (issue 12).

Inputs: what is hashed for the key is exactly what goes into the layer (or what a run step
sees): a file edited or swapped for a symlink between the two is a one-line error, never a
layer the key never saw; a directory swapped for a symlink during the walk is never followed;
a pinned tarball is extracted from the bytes that were pinned; a spooled member is checked
when it is written; a base in the context is copied from the read that gave its digest.

The cache: an entry is used only when its seal (written when it was made, keyed with a
secret only this user can read) verifies: a tag pointing a key at another image, a damaged
blob, a broken ``index.json`` or ``oci-layout``, a symlink anywhere in the cache, a tampered,
half-removed or planted extracted base layer are misses, rebuilt and replaced, never a wrong
image and never a failed build.

Race windows are opened deterministically by wrapping a function the build calls between
the two moments (``monkeypatch``), in process.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ocikit
from ocikit.build import engine
from ocikit.build import imports as imports_mod
from ocikit.build.imports import INLINE_MAX, read_import
from ocikit.build.placement import place, write_tar
from ocikit.build.recipe import Import
from ocikit.errors import InputError, OcikitError
from ocikit.layer.analyze import Tree
from support.layouts import directory, file, tar_bytes, write_layout

pytestmark = pytest.mark.usefixtures("file_backend")  # the native core and the Python path

REF_NAME = "org.opencontainers.image.ref.name"
BIG = INLINE_MAX * 2  # files this big are read again when the layer is written


def project(tmp: Path, recipe: str, files: dict[str, bytes] | None = None) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "ocikit.yaml").write_text(recipe)
    for name, data in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_bytes(data)
    return ctx


def build(ctx: Path, **options: Any) -> ocikit.BuildResult:
    options.setdefault("output", f"oci:{ctx.parent / 'out'}")
    options.setdefault("cache_dir", str(ctx.parent / "cache"))
    return ocikit.build(ctx / "ocikit.yaml", ocikit.BuildOptions(**options))


def tags(layout: Path) -> dict[str, str]:
    data = json.loads((layout / "index.json").read_bytes())
    return {d["annotations"][REF_NAME]: d["digest"] for d in data["manifests"]}


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def manifest(layout: Path, tag: str) -> dict[str, Any]:
    return json.loads(blob_path(layout, tags(layout)[tag]).read_bytes())


def last_layer(layout: Path, tag: str) -> dict[str, bytes]:
    data = gzip.decompress(
        blob_path(layout, manifest(layout, tag)["layers"][-1]["digest"]).read_bytes()
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name.rstrip("/"): (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def cache_tags(cache: Path) -> dict[str, str]:
    if not (cache / "index.json").exists():
        return {}
    return {t: d for t, d in tags(cache).items() if t.startswith("cache-")}


ONE_FILE = """
images:
  app:
    from: scratch
    imports:
      - {src: big.bin, dest: /big.bin}
"""


def around_place(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """``act`` runs after the imports were hashed for the key, before the layer is written."""
    real = engine.place

    def place_after(imports: Any, tree: Any) -> Any:
        act()
        return real(imports, tree)

    monkeypatch.setattr(engine, "place", place_after)


# -- inputs are read once ----------------------------------------------------------------------


@pytest.mark.parametrize("layer_type", ["tar", "squashfs"])
def test_an_import_edited_during_the_build_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer_type: str
) -> None:
    if layer_type == "squashfs" and (os.geteuid() != 0 or not shutil.which("mksquashfs")):
        pytest.skip("squashfs layers need mksquashfs")
    ctx = project(tmp_path, ONE_FILE, {"big.bin": b"a" * BIG})
    around_place(monkeypatch, lambda: (ctx / "big.bin").write_bytes(b"b" * BIG))  # saved
    threads = threading.active_count()
    with pytest.raises(InputError, match="changed while the build read it") as info:
        build(ctx, layer_types=(layer_type,))
    assert "\n" not in str(info.value)
    # the layer's compressor stopped with it (left running, it deadlocked a later build)
    assert threading.active_count() == threads
    assert cache_tags(tmp_path / "cache") == {}, "nothing cached for a key that saw other bytes"
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    result = build(ctx, layer_types=(layer_type,))
    assert not result.images[0].cached
    if layer_type == "tar":
        assert last_layer(tmp_path / "out", "app")["big.bin"] == b"b" * BIG


def test_an_import_swapped_for_a_symlink_out_of_the_context_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"S" * BIG)  # as long as the import: nothing would look short
    ctx = project(tmp_path, ONE_FILE, {"big.bin": b"a" * BIG})

    def swap() -> None:
        (ctx / "big.bin").unlink()
        (ctx / "big.bin").symlink_to(secret)

    around_place(monkeypatch, swap)
    with pytest.raises(InputError, match=r"big\.bin"):
        build(ctx)
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != secret:
            assert b"S" * 1024 not in path.read_bytes(), path


def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "tree/a").mkdir(parents=True)
    (ctx / "tree/b").mkdir()
    (ctx / "tree/a/f").write_text("f\n")
    (ctx / "tree/b/x").write_text("x\n")
    (tmp_path / "host").mkdir()
    (tmp_path / "host/secret.txt").write_text("host secret\n")
    real_entry = imports_mod.Entry

    class Swapping(real_entry):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            if self.kind == "dir" and self.rel == ("b",):  # listed as a directory, then swapped
                os.rename(ctx / "tree/b", ctx / "b.orig")
                os.symlink(tmp_path / "host", ctx / "tree/b")

    monkeypatch.setattr(imports_mod, "Entry", Swapping)
    spec = Import(src="tree", dest="/t")
    content = None
    with contextlib.suppress(InputError):  # refusing is fine; following is not
        content = read_import(spec, "images.app.imports[0] (tree)", ctx, 0)
    if content is not None:
        names = {"/".join(e.rel) for e in content.entries}
        assert "b/secret.txt" not in names
        assert names == {"a", "a/f", "b", "b/x"}
        content.close()


def tarball(entries: dict[str, bytes]) -> bytes:
    return gzip.compress(tar_bytes([file(n, d) for n, d in entries.items()]), mtime=0)


def test_a_pinned_tarball_is_extracted_from_the_bytes_that_were_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tarball({"app/run": b"pinned\n"})
    ctx = project(
        tmp_path, "", {"app.tar.gz": good, "evil.tar.gz": tarball({"app/run": b"evil\n"})}
    )
    spec = Import(src="app.tar.gz", dest="/opt", sha256=hashlib.sha256(good).hexdigest())
    real = imports_mod.private_tmp_dir

    def swap_then(*args: Any) -> Any:  # the spool is made after the pin was checked
        os.replace(ctx / "evil.tar.gz", ctx / "app.tar.gz")
        return real(*args)

    monkeypatch.setattr(imports_mod, "private_tmp_dir", swap_then)
    try:
        content = read_import(spec, "images.app.imports[0] (app.tar.gz)", ctx, 0)
    except ocikit.VerificationError:
        return  # refusing what does not match the pin is fine
    try:
        [entry] = [e for e in content.entries if e.kind == "file"]
        assert entry.sha256 == hashlib.sha256(b"pinned\n").hexdigest()
    finally:
        content.close()


def test_a_spooled_member_changed_before_it_is_written_stops_the_layer(tmp_path: Path) -> None:
    ctx = project(tmp_path, "", {"app.tar": tar_bytes([file("data", b"d" * BIG)])})
    content = read_import(Import(src="app.tar", dest="/opt"), "imports[0] (app.tar)", ctx, 0)
    try:
        [spool] = content.spools
        path = Path(spool.path) / "spool"
        path.write_bytes(b"x" * path.stat().st_size)
        with pytest.raises(InputError, match="changed while the build read it"):
            write_tar(place([content], Tree()), io.BytesIO())
    finally:
        content.close()


def test_a_base_in_the_context_is_copied_from_the_read_that_gave_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = project(
        tmp_path,
        """
images:
  app:
    from: oci:base:base
    imports:
      - {src: hello.txt, dest: /hello.txt}
""",
        {"hello.txt": b"hello\n"},
    )
    layer_a = tar_bytes([directory("etc"), file("etc/which", b"A\n")])
    layer_b = tar_bytes([directory("etc"), file("etc/which", b"B\n")])
    write_layout(ctx / "base", [layer_a], ref="base")
    write_layout(ctx / "base", [layer_b], ref="other")
    index_path = ctx / "base" / "index.json"
    real = engine.open_image

    def open_then_retag(ref: Any, *args: Any, **kw: Any) -> Any:
        image = real(ref, *args, **kw)
        if "base:base" in str(ref):  # the base's digest is read: now the tag moves
            index = json.loads(index_path.read_bytes())
            other = next(d for d in index["manifests"] if d["annotations"][REF_NAME] == "other")
            for d in index["manifests"]:
                if d["annotations"][REF_NAME] == "base":
                    d["digest"], d["size"] = other["digest"], other["size"]
            index_path.write_text(json.dumps(index))
        return image

    monkeypatch.setattr(engine, "open_image", open_then_retag)
    build(ctx)
    out = manifest(tmp_path / "out", "app")
    config = json.loads(blob_path(tmp_path / "out", out["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"][0] == "sha256:" + hashlib.sha256(layer_a).hexdigest()


# -- the cache is tamper-evident ---------------------------------------------------------------

TWO_IMAGES = """
images:
  one:
    from: scratch
    imports:
      - {src: one.txt, dest: /one.txt}
  two:
    from: {built: one}
    imports:
      - {src: two.txt, dest: /two.txt}
"""


def two_images(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    ctx = project(tmp_path, TWO_IMAGES, {"one.txt": b"one\n", "two.txt": b"two\n" * 10000})
    first = build(ctx)
    return ctx, {i.name: i.digest for i in first.images}


def rebuilt(ctx: Path, digests: dict[str, str], out: str = "out2") -> list[ocikit.ImageResult]:
    """A build to a fresh output: every image as it was first built."""
    result = build(ctx, output=f"oci:{ctx.parent / out}")
    assert {i.name: i.digest for i in result.images} == digests
    for image in result.images:
        layers = manifest(ctx.parent / out, image.name)["layers"]
        for d in layers:  # every blob the output got is what its digest says
            data = blob_path(ctx.parent / out, d["digest"]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"]
    return result.images


def test_a_tag_pointing_a_key_at_another_image_is_a_miss(tmp_path: Path) -> None:
    ctx, digests = two_images(tmp_path)
    cache = tmp_path / "cache"
    index = json.loads((cache / "index.json").read_bytes())
    entries = [d for d in index["manifests"] if d["annotations"][REF_NAME].startswith("cache-")]
    assert len(entries) == 2
    a, b = entries
    a["digest"], b["digest"] = b["digest"], a["digest"]
    a["size"], b["size"] = b["size"], a["size"]
    (cache / "index.json").write_text(json.dumps(index))
    images = rebuilt(ctx, digests)
    assert [(i.cached, "verif" in i.why) for i in images] == [(False, True), (False, True)]
    again = build(ctx)  # replaced: cached again
    assert [i.cached for i in again.images] == [True, True]


def test_a_damaged_blob_is_a_miss_rebuilt_and_replaced(tmp_path: Path) -> None:
    ctx, digests = two_images(tmp_path)
    cache = tmp_path / "cache"
    layer = blob_path(cache, manifest(tmp_path / "out", "two")["layers"][-1]["digest"])
    size = layer.stat().st_size
    layer.chmod(0o644)
    layer.write_bytes(b"\0" * size)  # same size: only its bytes tell
    images = rebuilt(ctx, digests)
    assert [i.cached for i in images] == [True, False]
    assert "verif" in images[1].why
    assert hashlib.sha256(layer.read_bytes()).hexdigest() == layer.name, "replaced"


def garbage_index(cache: Path) -> None:
    (cache / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": [')


def no_oci_layout(cache: Path) -> None:
    (cache / "oci-layout").unlink()


def blobs_elsewhere(cache: Path) -> None:
    elsewhere = cache.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(cache / "blobs", elsewhere / "blobs")
    shutil.rmtree(cache / "blobs")
    (cache / "blobs").symlink_to(elsewhere / "blobs")


def seal_forged(cache: Path) -> None:
    """Every entry retagged at the other image, with records written by someone without the
    cache's secret."""
    index = json.loads((cache / "index.json").read_bytes())
    entries = [d for d in index["manifests"] if d["annotations"][REF_NAME].startswith("cache-")]
    a, b = entries
    a["digest"], b["digest"] = b["digest"], a["digest"]
    a["size"], b["size"] = b["size"], a["size"]
    (cache / "index.json").write_text(json.dumps(index))
    seals = cache / "seals"
    if seals.is_dir():
        for seal in seals.iterdir():
            if seal.name.startswith("cache-"):
                record = json.loads(seal.read_bytes())
                other = next(d for d in entries if d["annotations"][REF_NAME] == seal.name)
                record["manifest"]["digest"] = other["digest"]
                record["manifest"]["size"] = other["size"]
                seal.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "tamper", [garbage_index, no_oci_layout, blobs_elsewhere, seal_forged], ids=lambda f: f.__name__
)
def test_a_broken_cache_is_rebuilt_never_a_failed_build(
    tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    ctx, digests = two_images(tmp_path)
    cache = tmp_path / "cache"
    (ctx / "two.txt").write_bytes(b"changed\n")  # a miss as well: something is written
    del digests["two"]
    tamper(cache)
    elsewhere = tmp_path / "elsewhere"
    before = sorted(p.name for p in elsewhere.rglob("*")) if elsewhere.exists() else []
    result = build(ctx, output=f"oci:{tmp_path / 'out2'}")
    assert {i.name: i.digest for i in result.images if i.name in digests} == digests
    assert (cache / "blobs").is_dir() and not (cache / "blobs").is_symlink()
    if elsewhere.exists():
        assert sorted(p.name for p in elsewhere.rglob("*")) == before, "nothing written there"
    assert [i.cached for i in build(ctx, output=f"oci:{tmp_path / 'out2'}").images] == [True, True]


# -- run steps: what they see is what was hashed; extracted base layers prove themselves ------

needs_runc = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc"), reason="run steps need root and runc"
)


def busybox_layer() -> bytes:
    from test_run_hostile import busybox_entries

    return tar_bytes([*busybox_entries(), file("etc/motd", b"from the base\n")])


STEP_INPUTS = """
images:
  app:
    from: oci:base:base
    imports:
      - {src: data}
    binds:
      - {src: inputs, dest: /mnt/in}
    run: >-
      cat /ocikit/imports/data/* > /root/from-import;
      cat /mnt/in/* > /root/from-bind;
      echo "a line for the log"
"""


@needs_runc
def test_a_step_sees_the_inputs_that_were_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = project(
        tmp_path, STEP_INPUTS, {"data/d.txt": b"import content\n", "inputs/in.txt": b"bind\n"}
    )
    write_layout(ctx / "base", [busybox_layer()], ref="base")
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret\n")
    sentinel = host / "log-target"
    sentinel.write_text("untouched\n")
    cache = tmp_path / "cache"
    (cache / "logs").mkdir(parents=True)
    (cache / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (cache / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    (cache / "logs" / "app.log").symlink_to(sentinel)  # planted in the cache
    real = engine._Builder._make
    edit: list[Callable[[], None]] = []

    def make_after_edits(self: Any, *args: Any, **kw: Any) -> Any:
        edit.pop()()  # the inputs were hashed for the key: now they change
        return real(self, *args, **kw)

    def swap_import() -> None:  # the import's directory becomes a symlink to the host
        os.rename(ctx / "data", ctx / "data.orig")
        (ctx / "data").symlink_to(host)

    monkeypatch.setattr(engine._Builder, "_make", make_after_edits)
    edit.append(swap_import)
    build(ctx)
    layer = last_layer(tmp_path / "out", "app")
    assert layer["root/from-import"] == b"import content\n"  # what was hashed, not the host
    assert layer["root/from-bind"] == b"bind\n"
    assert sentinel.read_text() == "untouched\n"
    assert not (cache / "logs" / "app.log").is_symlink(), "the planted link is removed"
    logs = sorted((cache / "logs").glob("*-app-tar-*.log"))  # one log per run
    assert len(logs) == 1 and b"a line for the log" in logs[0].read_bytes()

    os.unlink(ctx / "data")
    os.rename(ctx / "data.orig", ctx / "data")
    (ctx / "inputs" / "in.txt").write_text("second\n")  # a miss: the step runs again
    edit.append(lambda: (ctx / "inputs" / "in.txt").write_text("edited\n"))
    with pytest.raises(InputError, match="changed while the build read it") as info:
        build(ctx)
    assert "\n" not in str(info.value) and "binds[0]" in str(info.value)


def layer_trees(cache: Path) -> list[Path]:
    """The extracted base layers' root directories, whatever the cache's layout of them."""
    found = []
    for d in sorted((cache / "layers").iterdir()):
        if d.name.startswith("."):
            continue
        found.append(d / "root" if (d / "root" / "etc").is_dir() else d)
    return found


PEEK = """
images:
  app:
    from: oci:base:base
    cache: false
    run: >-
      cat /etc/motd > /root/motd;
      ls /etc > /root/etc;
      cat /etc/planted /secret.txt > /root/leak 2>/dev/null || true
"""


@needs_runc
def test_extracted_base_layers_prove_themselves(tmp_path: Path) -> None:
    ctx = project(tmp_path, PEEK)
    write_layout(ctx / "base", [busybox_layer()], ref="base")
    cache = tmp_path / "cache"
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret\n")
    (host / "etc").mkdir()
    (host / "etc" / "motd").write_text("host motd\n")

    def step_saw() -> dict[str, bytes]:
        build(ctx)
        layer = last_layer(tmp_path / "out", "app")
        assert layer["root/motd"] == b"from the base\n"
        assert b"planted" not in layer["root/etc"]
        assert layer.get("root/leak", b"") == b""
        return layer

    step_saw()
    [tree] = layer_trees(cache)
    inode = tree.stat().st_ino
    step_saw()
    assert layer_trees(cache)[0].stat().st_ino == inode, "a sound layer is not extracted again"

    (tree / "etc" / "motd").write_text("tampered\n")  # content changed
    step_saw()
    [tree] = layer_trees(cache)
    (tree / "etc" / "planted").write_text("planted\n")  # a file added
    step_saw()
    [tree] = layer_trees(cache)
    for path in sorted((tree / "usr" / "bin").iterdir())[len(APPLETS_KEPT) :]:
        path.unlink()  # half removed (an interrupted rm -rf)
    step_saw()
    [layer_dir] = [d for d in (cache / "layers").iterdir() if not d.name.startswith(".")]
    shutil.rmtree(layer_dir)
    layer_dir.symlink_to(host)  # a symlink planted where the layer was
    step_saw()
    assert sorted(p.name for p in host.iterdir()) == ["etc", "secret.txt"]
    shutil.rmtree(cache / "layers")
    (host / "layers").mkdir()
    (cache / "layers").symlink_to(host / "layers")  # the whole directory elsewhere
    step_saw()
    assert list((host / "layers").iterdir()) == [], "nothing extracted outside the cache"


APPLETS_KEPT = ("busybox", "cat")


def test_a_private_directory_swapped_for_a_symlink_is_removed_as_a_symlink(
    tmp_path: Path,
) -> None:
    """Whoever can write the cache's directory can rename a build's private directory and put
    a symlink in its place: removing it must remove the symlink, not what it leads to."""
    from ocikit.tempfiles import PrivateDir

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep\n")
    private = PrivateDir(str(tmp_path), ".ocikit-tmp-run-", "test")
    os.rename(private.path, tmp_path / "moved")
    os.symlink(victim, private.path)
    private.remove()
    assert (victim / "keep").read_text() == "keep\n"
    assert not os.path.lexists(private.path)


def test_a_directory_that_is_not_a_cache_is_left_alone(tmp_path: Path) -> None:
    """A cache whose ``oci-layout`` is missing is repaired only when it holds nothing but what
    a cache holds: a --cache-dir pointing at someone's directory gets nothing written."""
    ctx = project(tmp_path, ONE_FILE, {"big.bin": b"a"})
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    with pytest.raises(OcikitError, match="not an OCI layout") as info:
        build(ctx, cache_dir=str(home))
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
