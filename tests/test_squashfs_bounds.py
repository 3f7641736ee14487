"""squashfs layers get the bounds of tar layers: size, entries, ratio and time.

``check`` reads a squashfs layer's entries from its own tables (``layer.squashfs_format``),
never extracting it; the build's run steps judge a squashfs base layer the same way before
``unsquashfs`` writes anything, and give ``unsquashfs`` a time limit. The reader is held to
``unsquashfs`` itself: the entries of the tree it extracts (``overlay_entries``) must be the
reader's, for every compression and layout mksquashfs writes.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ocikit
from ocikit.errors import InputError
from ocikit.layer import squashfs
from ocikit.layer import squashfs_format as sf
from ocikit.layer.overlay import overlay_entries
from ocikit.layer.scan import DecompressionBomb
from support.cli import assert_one_line_error
from support.cli import ocikit as ocikit_cli
from support.layouts import Blob, write_layout
from support.verify import sha256

pytestmark = pytest.mark.skipif(
    shutil.which("mksquashfs") is None or os.geteuid() != 0,
    reason="squashfs-tools and root (devices, trusted xattrs) needed",
)
SQUASHFS_GZIP = "application/vnd.stacker.image.layer.squashfs+gzip"
MB = 1 << 20


def mksquashfs(src: Path, out: Path, *options: str) -> Path:
    subprocess.run(
        ["mksquashfs", str(src), str(out), "-noappend", "-quiet", "-no-progress", *options],
        check=True,
        capture_output=True,
    )
    return out


def squashfs_layout(path: Path, blob: Path, ref: str = "t") -> Path:
    """An OCI layout of one image whose only layer is the squashfs ``blob``."""
    data = blob.read_bytes()
    digest = sha256(data)
    write_layout(path, [Blob(blob, SQUASHFS_GZIP, digest, digest, len(data))], ref=ref)
    return path


def rules(report: ocikit.CheckReport) -> set[str]:
    return {f.rule for f in report.findings}


@pytest.fixture(scope="module")
def rich_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of entry a squashfs layer holds: files (empty, small, several blocks, sparse),
    hardlinks, symlinks, whiteouts, an opaque directory, devices, a fifo, a large directory,
    odd names, owners, a file capability."""
    src = tmp_path_factory.mktemp("rich") / "src"
    (src / "d" / "many").mkdir(parents=True)
    (src / "opq").mkdir()
    (src / "empty-dir").mkdir()
    (src / "d" / "a").write_text("hi\n")
    (src / "d" / "big").write_bytes(random.Random(1).randbytes(300_000))
    (src / "empty").write_bytes(b"")
    os.link(src / "d" / "a", src / "d" / "a-link")
    os.link(src / "d" / "a", src / "a-link2")
    os.symlink("../d/a", src / "d" / "sym")
    os.symlink("/abs/target", src / "abs")
    os.mknod(src / "gone", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout
    os.mknod(src / "cdev", 0o600 | 0o020000, os.makedev(4, 70000))
    os.mknod(src / "bdev", 0o600 | 0o060000, os.makedev(259, 3))
    os.mkfifo(src / "fifo")
    os.setxattr(src / "opq", "trusted.overlay.opaque", b"y")
    (src / "opq" / "é x\tü").write_text("odd")
    (src / ("n" * 255)).write_text("long name")
    for i in range(700):  # directory headers of 256 entries, an indexed directory
        (src / "d" / "many" / f"f{i:04}").write_text(str(i))
    with open(src / "sparse", "wb") as f:
        f.truncate(3 * MB + 5)
        f.seek(MB)
        f.write(b"data in the middle")
    os.chown(src / "d" / "a", 1000, 2000)
    os.chmod(src / "d", 0o1750)
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(src / "d" / "big")], check=False)
    return src


def read(blob: Path, budget: int | None = None, verify: bool = True) -> list:
    with open(blob, "rb") as f:
        return list(sf.entries(sf.SquashfsImage(f.fileno(), str(blob)), budget, verify))


@pytest.mark.parametrize(
    "options",
    [
        ("-comp", "gzip"),
        ("-comp", "xz"),
        ("-comp", "zstd", "-b", "1M"),
        ("-b", "4K"),
        ("-noI", "-noD", "-noF", "-noX"),
        ("-no-fragments",),
        ("-always-use-fragments", "-exports"),
        ("-no-xattrs",),
    ],
    ids=lambda o: " ".join(o),
)
def test_entries_are_what_unsquashfs_extracts(
    rich_tree: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    blob = mksquashfs(rich_tree, tmp_path / "layer.sqfs", *options)
    subprocess.run(
        ["unsquashfs", "-q", "-no-progress", "-d", str(tmp_path / "x"), str(blob)],
        check=True,
        capture_output=True,
    )
    extracted = [entry for entry, _data, _xattrs in overlay_entries(tmp_path / "x")]
    assert read(blob) == extracted
    assert len(extracted) > 700


def test_lz4_and_lzo_are_refused_with_one_line(rich_tree: Path, tmp_path: Path) -> None:
    """A documented limit: the reader decompresses gzip, xz, lzma and zstd only."""
    blob = mksquashfs(rich_tree, tmp_path / "layer.sqfs", "-comp", "lz4")
    with pytest.raises(InputError, match="lz4; ocikit reads gzip, xz, lzma and zstd"):
        read(blob)


@pytest.fixture(scope="module")
def sparse_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A squashfs of a few KB holding a 1 GiB sparse file."""
    tmp = tmp_path_factory.mktemp("bomb")
    (tmp / "src").mkdir()
    with open(tmp / "src" / "zeros", "wb") as f:
        f.truncate(1 << 30)
    blob = mksquashfs(tmp / "src", tmp / "bomb.sqfs")
    assert blob.stat().st_size < 64 << 10
    return blob


def test_check_finds_a_squashfs_bomb_without_expanding_it(
    sparse_bomb: Path, tmp_path: Path
) -> None:
    """Before: unsquashfs expanded it into $TMPDIR and check said nothing."""
    layout = squashfs_layout(tmp_path / "oci", sparse_bomb)
    started = time.process_time()
    report = ocikit.check(f"oci:{layout}:t")
    assert time.process_time() - started < 5
    bomb = [f for f in report.findings if f.rule == "decompression-bomb"]
    assert len(bomb) == 1 and bomb[0].layer == 0, report.findings
    assert "expands beyond" in bomb[0].message
    assert report.exit_code() == 1


def test_many_entries_count_against_the_ratio(tmp_path: Path) -> None:
    """Entries cost what they cost in a tar (a 512-byte header each): 140,000 hardlinks in
    a squashfs of a few hundred KB stand for 70 MB; with --max-ratio 10 that is a bomb, as
    the same entries in a gzip tar are. Before: max_ratio was not applied to squashfs."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(140_000):
        if i % 50_000 == 0:  # ext4 allows 65,000 links to a file
            first = src / f"l{i}"
            first.write_bytes(b"x")
        else:
            os.link(first, src / f"l{i}")
    blob = mksquashfs(src, tmp_path / "many.sqfs")
    layout = squashfs_layout(tmp_path / "oci", blob)
    shutil.rmtree(src)
    report = ocikit.check(f"oci:{layout}:t", max_ratio=10)
    assert "decompression-bomb" in rules(report), report.findings
    assert ocikit.check(f"oci:{layout}:t").findings == []  # within the default ratio


@contextlib.contextmanager
def small_tmpdir(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    old = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = old
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_check_needs_room_for_the_blob_only(tmp_path: Path) -> None:
    """A 48 MB file of text squashed to ~50 KB: check spools the blob, never the files (in
    an 8 MiB $TMPDIR). Before: unsquashfs filled $TMPDIR and the layer was "unreadable"."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "text", "wb") as f:
        for _ in range(48):
            f.write(b"a line of text\n" * (MB // 15))
    blob = mksquashfs(src, tmp_path / "text.sqfs")
    layout = squashfs_layout(tmp_path / "oci", blob)
    with small_tmpdir(tmp_path / "tmp", "8m") as tmp:
        report = ocikit.check(f"oci:{layout}:t")
        assert os.listdir(tmp) == []
    assert report.findings == [] and report.entries == 1


def test_a_corrupt_data_block_is_unreadable(tmp_path: Path) -> None:
    """As unsquashfs would fail on it (and a broken gzip tar is ``layer-unreadable``)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(random.Random(2).randbytes(50_000).hex().encode())
    blob = mksquashfs(src, tmp_path / "x.sqfs", "-no-fragments")
    data = bytearray(blob.read_bytes())
    data[200:210] = b"\xff" * 10  # inside the first (compressed) data block
    blob.write_bytes(data)
    report = ocikit.check(f"oci:{squashfs_layout(tmp_path / 'oci', blob)}:t")
    assert rules(report) == {"layer-unreadable"}, report.findings


def test_extract_refuses_a_bomb_before_writing(sparse_bomb: Path, tmp_path: Path) -> None:
    """The run steps' extraction of a squashfs base layer. Before: extracted regardless."""
    with pytest.raises(DecompressionBomb):
        squashfs.extract(sparse_bomb, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_run_steps_squashfs_base_bomb_stops_the_build(sparse_bomb: Path, tmp_path: Path) -> None:
    """A run step on a base whose squashfs layer is a bomb: one line, nothing extracted.
    Before: the layer was unsquashed into the cache."""
    layout = squashfs_layout(tmp_path / "oci", sparse_bomb)
    (tmp_path / "ocikit.yaml").write_text(
        f"images:\n  app:\n    from: oci:{layout}:t\n    run: 'true'\n"
    )
    proc = ocikit_cli(
        "build", "-f", "ocikit.yaml", "--cache-dir", "cache", "--output", "oci:out", cwd=tmp_path
    )
    assert_one_line_error(proc, contains="expands beyond")
    layers = tmp_path / "cache" / "layers"
    assert not layers.exists() or os.listdir(layers) == []


def test_unsquashfs_gets_a_time_limit(
    rich_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsquashfs that does not finish is stopped. Before: waited for ever."""
    blob = mksquashfs(rich_tree, tmp_path / "layer.sqfs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unsquashfs").write_text("#!/bin/sh\nexec sleep 8\n")
    (bin_dir / "unsquashfs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(squashfs, "extract_deadline", lambda size: 1, raising=False)
    started = time.monotonic()
    with pytest.raises(InputError, match="unsquashfs"):
        squashfs.extract(blob, tmp_path / "target")
    assert time.monotonic() - started < 6


def test_hostile_metadata_is_one_error_never_a_crash(rich_tree: Path, tmp_path: Path) -> None:
    """Bytes of the tables flipped at random (uncompressed tables: every flip reaches a
    field): each image is read to its end or refused with an InputError, within a bounded
    time and budget: never another exception, never a hang."""
    blob = mksquashfs(rich_tree, tmp_path / "layer.sqfs", "-noI", "-noD", "-noF", "-noX")
    good = blob.read_bytes()
    with open(blob, "rb") as f:
        sb = sf.SquashfsImage(f.fileno(), "x").sb
    tables = range(sb.inode_table, sb.bytes_used)
    rng = random.Random(12)
    outcomes = {"read": 0, "refused": 0}
    mutant = tmp_path / "mutant"
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.choice(tables)] = rng.randrange(256)
        mutant.write_bytes(data)
        started = time.process_time()
        try:
            read(mutant, budget=64 * MB)
            outcomes["read"] += 1
        except InputError:
            outcomes["refused"] += 1
        assert time.process_time() - started < 2
    assert outcomes["refused"] > 30 and outcomes["read"] > 30, outcomes
