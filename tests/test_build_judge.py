"""A built layer is checked as it is written (``build.judge``), not read back: the judgement
must be the one a check reading the written tar makes, entry for entry; and an output's
blobs are copied from the cache by their digests (``BuildCache.copy_blobs``), never a blob
that is not its digest."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import ocikit
from ocikit.build import BuildOptions, build
from ocikit.build.judge import LayerJudge
from ocikit.build.store import BuildCache
from ocikit.layer.analyze import Kind, LayerAnalyzer, Node, Tree
from ocikit.layer.tarstream import TarStream
from ocikit.layer.tarwriter import TarOutput, tar_header
from ocikit.layer.transcode import TranscodeResult
from ocikit.model import Compression, Digest
from ocikit.ops.check import LowerLayers
from ocikit.transports.oci_layout import OciLayoutDestination
from ocikit.transports.reference import Reference

R, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
#: (name, type, link target, uid, gid, devmajor, devminor): what a build writes, odd cases
#: included (each a finding or a header ustar cannot hold alone)
ENTRIES = [
    ("usr/", D, "", 0, 0, 0, 0),
    ("usr/bin/", D, "", 0, 0, 0, 0),
    ("bin", S, "usr/bin", 0, 0, 0, 0),
    ("bin/tool", R, "", 0, 0, 0, 0),  # through a symlinked directory
    ("usr/bin/a", R, "", 1000, 1000, 0, 0),
    ("usr/bin/a", R, "", 0, 0, 0, 0),  # a duplicate
    ("usr/bin/hard", L, "usr/bin/a", 0, 0, 0, 0),
    ("usr/bin/dangling", L, "usr/bin/none", 0, 0, 0, 0),
    ("etc/", D, "", 0, 0, 0, 0),
    ("etc/" + "x" * 150, R, "", 0, 0, 0, 0),  # a PAX path
    ("etc/l", S, "/" + "y" * 120, 0, 0, 0, 0),  # a PAX linkpath
    ("etc/grüß", R, "", 0, 0, 0, 0),  # not ASCII
    ("etc/\udcff-raw", R, "", 0, 0, 0, 0),  # not UTF-8
    ("etc/big-owner", R, "", 1 << 33, 5, 0, 0),  # beyond 32 bits: PAX numbers
    ("dev/", D, "", 0, 0, 0, 0),
    ("dev/null", tarfile.CHRTYPE, "", 0, 0, 1, 3),
    ("etc/.wh.gone", R, "", 0, 0, 0, 0),
    ("etc/.wh..wh..opq", R, "", 0, 0, 0, 0),
    ("../escape", R, "", 0, 0, 0, 0),
    ("/abs", R, "", 0, 0, 0, 0),
]


def _base() -> Tree:
    tree = Tree()
    assert tree.root.children is not None
    tree.root.children["gone"] = Node(Kind.FILE, 0)
    etc = Node(Kind.DIR, 0)
    assert etc.children is not None
    etc.children["gone"] = Node(Kind.FILE, 0)
    tree.root.children["etc"] = etc
    return tree


def _findings(found: list) -> list[tuple]:  # type: ignore[type-arg]
    return [(f.rule, f.message, f.layer, f.layer_digest, f.paths, f.resolved) for f in found]


def test_judged_as_read_back() -> None:
    """Every entry judged as it is written gives the findings, and the tree, that reading
    the tar written gives; a NUL in a name is left to the read-back."""
    out = io.BytesIO()
    tar = TarOutput(out)
    judge = LayerJudge(LowerLayers(1, _base(), [], 7))
    for name, kind, link, uid, gid, major, minor in ENTRIES:
        tar.header(tar_header(name, kind, 0, 0o644, uid, gid, 0, link, None, major, minor))
        judge.entry(name, kind, link, uid, gid, major, minor)
    tar.finish()
    digest = Digest("sha256:" + "ab" * 32)
    size = len(out.getvalue())
    judge.written(TranscodeResult(digest, size, digest, size), Compression.NONE, b"usr/")
    judged = judge.lower(2)
    assert judged is not None and judged.count == 2 and judged.entries == 7 + len(ENTRIES)

    tree = _base()
    reader = LayerAnalyzer(tree, 1, digest)
    for i, entry in enumerate(TarStream(io.BytesIO(out.getvalue()))):
        reader.feed(i, entry)
    reader.finish()
    assert _findings(judged.findings) == _findings(reader.findings)
    assert {f.rule for f in judged.findings} >= {"duplicate-path", "absolute-path"}
    assert [(p, n.kind, n.layer, n.target) for p, n in judged.tree.walk()] == [
        (p, n.kind, n.layer, n.target) for p, n in tree.walk()
    ]

    nul = LayerJudge(LowerLayers(0, Tree(), [], 0))
    nul.entry("a\0b", R, "", 0, 0)
    nul.written(TranscodeResult(digest, 1024, digest, 1024), Compression.NONE, b"a")
    assert nul.used and nul.lower(1) is None  # the image is read back whole


def test_bomb_and_compression_left_to_the_read_back() -> None:
    """A layer a reader would stop as a decompression bomb, or take for compressed, is
    judged by reading it."""
    digest = Digest("sha256:" + "cd" * 32)
    bomb = LayerJudge(LowerLayers(0, Tree(), [], 0))
    bomb.entry("f", R, "", 0, 0)
    bomb.written(TranscodeResult(digest, 1000, digest, 10**9), Compression.GZIP, b"f")
    assert bomb.lower(1) is None
    magic = LayerJudge(LowerLayers(0, Tree(), [], 0))
    magic.entry("\x1f\x8bx", R, "", 0, 0)
    magic.written(TranscodeResult(digest, 2048, digest, 2048), Compression.NONE, b"\x1f\x8bx\0")
    assert magic.lower(1) is None


def test_output_blobs_copied_by_digest(tmp_path: Path) -> None:
    """A cache blob that is not its digest (same size) is not copied to the output."""
    (tmp_path / "f.txt").write_text("hello\n")
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: scratch\n    imports:\n      - {src: f.txt, dest: /f}\n"
    )
    cache_dir = tmp_path / "cache"
    options = BuildOptions(output=f"oci:{tmp_path / 'out'}", cache_dir=str(cache_dir))
    [result] = build(tmp_path / "ocikit.yaml", options).images
    store = BuildCache(cache_dir)
    try:
        assert store.lookup(f"cache-{result.key}") is not None
        with store.open(f"cache-{result.key}") as image:
            layer = image.layers[0].descriptor
            config = image.manifest.config
            blob = cache_dir / "blobs" / "sha256" / layer.digest.hex
            for name in ("good", "bad"):
                if name == "bad":
                    data = bytearray(blob.read_bytes())
                    data[-9] ^= 0xFF  # the gzip trailer's CRC: the same size, another digest
                    blob.write_bytes(bytes(data))
                dest = OciLayoutDestination(Reference("oci", str(tmp_path / name)))
                try:
                    store.copy_blobs(image, dest)
                    blobs = tmp_path / name / "blobs" / "sha256"
                    assert (blobs / config.digest.hex).exists()
                    assert (blobs / layer.digest.hex).exists() is (name == "good")
                finally:
                    dest.abort()
    finally:
        store.close()


def test_uncompressed_layer_built_and_checked(tmp_path: Path) -> None:
    """An uncompressed layer (its tar is the blob) is judged as written, and checks."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a\n")
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: scratch\n    imports:\n      - {src: d, dest: /d}\n"
    )
    options = BuildOptions(
        output=f"oci:{tmp_path / 'out'}", cache_dir=str(tmp_path / "c"), compress=Compression.NONE
    )
    [result] = build(tmp_path / "ocikit.yaml", options).images
    report = ocikit.check(f"oci:{tmp_path / 'out'}:app")
    assert not report.errors and result.layers == 1
