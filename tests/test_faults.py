"""Faults: concurrent writers, damaged existing blobs, kill -9, a full disk, Ctrl-C.

Whatever happens to a copy, an OCI layout's index.json only names intact blobs, no tag of a
writer that succeeded is lost, and what a dead or failed writer leaves behind (temporary
blobs, staging directories in ``$TMPDIR``, OUTDIR or beside an archive) is reclaimed by the
next run or ``ocikit gc``. Every process here gets a private ``TMPDIR`` so that what it
leaves there can be seen.

The images are small (a few MiB, two shared base layers); the whole module takes well under
two minutes on two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.archives import tree
from support.cli import OCIKIT, assert_one_line_error
from support.layouts import file, tar_bytes, write_layout
from support.registry import Registry
from support.verify import REF_NAME, sha256

MiB = 1 << 20
GOOD = [f"img{i}" for i in range(5)]
BAD = [f"bad{i}" for i in range(3)]


# ---------------------------------------------------------------------------- helpers


def _data(seed: int, size: int) -> bytes:
    """Half random, half zeros, in 64 KiB runs: compresses to about half, quickly."""
    rnd = random.Random(seed)
    run = 64 << 10
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(run // 2) + bytes(run // 2)
    return bytes(out[:size])


def _layer(seed: int, size: int) -> bytes:
    return tar_bytes([file(f"f{seed}", _data(seed, size))])


def _make_sources(root: Path) -> dict[str, Path]:
    """``plain`` (uncompressed layers: a copy compresses them) and ``gzip`` (kept as they
    are) layouts, each with GOOD images [B1, B2, own] and BAD images [B1, B2, corrupt]."""
    b1, b2 = _layer(1, 6 * MiB), _layer(2, 3 * MiB)
    out = {}
    for compression in ("none", "gzip"):
        layout = root / ("plain" if compression == "none" else "gzip")
        for i, name in enumerate(GOOD):
            write_layout(
                layout, [b1, b2, _layer(10 + i, 2 * MiB)], ref=name, compression=compression
            )
        for i, name in enumerate(BAD):
            write_layout(
                layout, [b1, b2, _layer(20 + i, MiB // 4)], ref=name, compression=compression
            )
            index = json.loads((layout / "index.json").read_bytes())
            entry = next(d for d in index["manifests"] if d["annotations"][REF_NAME] == name)
            manifest = json.loads(_blob(layout, entry["digest"]).read_bytes())
            bad = _blob(layout, manifest["layers"][-1]["digest"])
            data = bytearray(bad.read_bytes())
            data[len(data) // 2] ^= 0xFF  # same size, other bytes: fails at its end
            bad.write_bytes(bytes(data))
        write_layout(layout, [_layer(30, 64 << 10)], ref="small", compression=compression)
        out[compression] = layout
    return out


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hex_ = digest.partition(":")
    return layout / "blobs" / algo / hex_


def _run(
    *args: str, tmpdir: Path, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*OCIKIT, *args],
        capture_output=True,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        timeout=timeout,
        **kw,
    )


def _start(*args: str, tmpdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*OCIKIT, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )


def _check_layout(layout: Path) -> dict[str, str]:
    """Every blob index.json reaches is there with its digest and size (read and hashed);
    returns tag -> manifest digest."""
    index = json.loads((layout / "index.json").read_bytes())
    tags = {}
    for entry in index["manifests"]:
        raw = _verified(layout, entry)
        manifest = json.loads(raw)
        for d in [manifest["config"], *manifest["layers"]]:
            _verified(layout, d)
        name = entry.get("annotations", {}).get(REF_NAME)
        if name is not None:
            tags[name] = entry["digest"]
    return tags


def _verified(layout: Path, desc: dict[str, Any]) -> bytes:
    path = _blob(layout, desc["digest"])
    assert path.is_file(), f"{layout}: blob {desc['digest']} is missing"
    data = path.read_bytes()
    assert len(data) == desc["size"], f"{layout}: blob {desc['digest']} is {len(data)} bytes"
    assert sha256(data) == desc["digest"], f"{layout}: blob {desc['digest']} has other bytes"
    return data


def _reachable(layout: Path) -> set[str]:
    index = json.loads((layout / "index.json").read_bytes())
    out = set()
    for entry in index["manifests"]:
        out.add(entry["digest"])
        manifest = json.loads(_blob(layout, entry["digest"]).read_bytes())
        out.update(d["digest"] for d in [manifest["config"], *manifest["layers"]])
    return out


def _stored(layout: Path) -> set[str]:
    return {
        f"{algo.name}:{p.name}"
        for algo in (layout / "blobs").iterdir()
        for p in algo.iterdir()
        if not p.name.startswith(".")
    }


def _leftovers(layout: Path | None = None, *dirs: Path) -> list[str]:
    """What a writer may leave: anything in a layout but its blobs, oci-layout and
    index.json, a hidden file among the blobs, and anything at all in ``dirs``."""
    found: list[str] = []
    if layout is not None and layout.exists():
        found += [
            str(p) for p in layout.iterdir() if p.name not in ("blobs", "oci-layout", "index.json")
        ]
        for algo in (layout / "blobs").iterdir() if (layout / "blobs").exists() else []:
            found += [str(p) for p in algo.iterdir() if p.name.startswith(".")]
    for d in dirs:
        if d.exists():
            found += [str(p) for p in d.iterdir()]
    return found


def _tagged(layout: Path, tag: str, digest: str | None = None) -> bool:
    tags = _check_layout(layout) if (layout / "index.json").exists() else {}
    return tag in tags and (digest is None or tags[tag] == digest)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _make_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    d = tmp_path / "tmpdir"
    d.mkdir()
    return d


# ---------------------------------------------------------------------------- writers, in-process


def _put_image(dest: Any, layer_data: bytes, tag_note: str) -> None:
    """Name a one-layer image (its layer already written or found) in ``dest``."""
    from ocikit.model import Descriptor, Digest, ImageConfig, Manifest
    from ocikit.model import mediatypes as mt

    diff_id = Digest.of(layer_data)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
            "config": {"Labels": {"note": tag_note}},
        }
    ).encode()
    config_digest = dest.put_blob_bytes(config)
    manifest = Manifest.build(
        Descriptor(mt.OCI_CONFIG, config_digest, len(config)),
        [Descriptor(mt.OCI_LAYER, diff_id, len(layer_data))],
    )
    dest.put_manifest(manifest, ImageConfig.parse(config), [])


def _write_blob(dest: Any, data: bytes) -> None:
    from ocikit.model import Digest

    writer = dest.new_blob()
    writer.file.write(data)
    writer.commit(Digest.of(data))
    dest.flush()


@pytest.mark.parametrize("creator_fails", [True, False])
def test_a_failing_writer_never_removes_a_blob_another_relies_on(
    tmp_path: Path, creator_fails: bool
) -> None:
    """A writes a shared layer; B finds it present and skips it. Whichever of them fails,
    the other's tag names an intact blob."""
    from ocikit.model import Digest
    from ocikit.transports import Reference
    from ocikit.transports.oci_layout import OciLayoutDestination

    layout = tmp_path / "layout"
    shared = _layer(1, 256 << 10)
    a = OciLayoutDestination(Reference("oci", str(layout), "a"))
    b = OciLayoutDestination(Reference("oci", str(layout), "b"))
    _write_blob(a, shared)  # A creates it
    assert b.has_blob(Digest.of(shared))  # B relies on it instead of writing it
    failing, winning, tag = (a, b, "b") if creator_fails else (b, a, "a")
    _put_image(winning, shared, tag)
    failing.abort()
    winning.commit()
    assert _tagged(layout, tag)
    assert _leftovers(layout) == []


def test_a_failing_writer_removes_what_only_it_wrote(tmp_path: Path) -> None:
    from ocikit.model import Digest
    from ocikit.transports import Reference
    from ocikit.transports.oci_layout import OciLayoutDestination

    layout = tmp_path / "layout"
    keep = OciLayoutDestination(Reference("oci", str(layout), "keep"))
    a = OciLayoutDestination(Reference("oci", str(layout), "a"))
    data = _layer(3, 64 << 10)
    _write_blob(a, data)
    a.abort()
    assert not _blob(layout, Digest.of(data)).exists()
    keep.abort()
    assert not layout.exists(), "the layout these writers created is removed"


def test_commit_refuses_a_tag_whose_blob_vanished(tmp_path: Path) -> None:
    """Whatever removed it (another tool, a user), a tag never names a missing blob."""
    from ocikit.errors import DestinationError
    from ocikit.model import Digest
    from ocikit.transports import Reference
    from ocikit.transports.oci_layout import OciLayoutDestination

    layout = tmp_path / "layout"
    data = _layer(4, 64 << 10)
    a = OciLayoutDestination(Reference("oci", str(layout), "a"))
    _write_blob(a, data)
    _put_image(a, data, "a")
    _blob(layout, Digest.of(data)).unlink()
    with pytest.raises(DestinationError, match="missing"):
        a.commit()
    a.abort()
    assert not (layout / "index.json").exists()


def test_reclaiming_never_enters_a_mount(tmp_path: Path) -> None:
    """A killed build can leave a mount inside a private directory (an overlay, or a bind of
    the same file system): removing the directory must not empty what is mounted there."""
    from ocikit.transports.fsutil import remove_tree

    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    victim = tmp_path / "private"
    (victim / "a" / "bound").mkdir(parents=True)
    (victim / "a" / "file").write_text("x")
    (victim / "link").symlink_to(outside)
    subprocess.run(["mount", "--bind", str(outside), str(victim / "a" / "bound")], check=True)
    try:
        remove_tree(str(victim))
        assert (outside / "precious").read_text() == "keep"
        assert not (victim / "a" / "file").exists()
    finally:
        subprocess.run(["umount", str(victim / "a" / "bound")], check=True)
    assert (outside / "precious").exists()


# ---------------------------------------------------------------------------- existing blobs


def _copy(src: str, dst: str, tmpdir: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return _run("copy", "-q", *extra, src, dst, tmpdir=tmpdir)


def _layers_of(layout: Path, tag: str) -> list[dict[str, Any]]:
    index = json.loads((layout / "index.json").read_bytes())
    entry = next(d for d in index["manifests"] if d["annotations"][REF_NAME] == tag)
    return json.loads(_blob(layout, entry["digest"]).read_bytes())["layers"]


def _config_of(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_bytes())
    entry = next(d for d in index["manifests"] if d["annotations"][REF_NAME] == tag)
    return json.loads(_blob(layout, entry["digest"]).read_bytes())["config"]


@pytest.mark.parametrize("source", ["gzip", "none"])
def test_a_truncated_existing_blob_is_replaced(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path, source: str
) -> None:
    """The same image copied again over a truncated layer: ``gzip`` finds it by digest,
    ``none`` (compressed on the way) by the image's config. Both tags come out intact."""
    layout = tmp_path / "layout"
    src = f"oci:{sources[source]}:img0"
    assert _copy(src, f"oci:{layout}:a", private_tmp).returncode == 0
    victim = _blob(layout, _layers_of(layout, "a")[0]["digest"])
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    proc = _copy(src, f"oci:{layout}:b", private_tmp)
    assert proc.returncode == 0, proc.stderr
    tags = _check_layout(layout)
    assert set(tags) == {"a", "b"}
    assert _leftovers(layout, private_tmp) == []


def test_a_damaged_small_blob_is_replaced_and_a_large_one_when_asked(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path
) -> None:
    """Same size, other bytes: a config (small) is always re-hashed; a layer only with
    --verify-existing (it costs a read of every layer)."""
    layout = tmp_path / "layout"
    src = f"oci:{sources['gzip']}:img1"
    assert _copy(src, f"oci:{layout}:a", private_tmp).returncode == 0
    for desc in (_config_of(layout, "a"), _layers_of(layout, "a")[0]):
        path = _blob(layout, desc["digest"])
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    assert _copy(src, f"oci:{layout}:b", private_tmp).returncode == 0
    _verified(layout, _config_of(layout, "b"))  # the config was replaced
    proc = _copy(src, f"oci:{layout}:c", private_tmp, "--verify-existing")
    assert proc.returncode == 0, proc.stderr
    assert set(_check_layout(layout)) == {"a", "b", "c"}
    assert _leftovers(layout, private_tmp) == []


def test_verify_existing_in_the_library(sources: dict[str, Path], tmp_path: Path) -> None:
    import ocikit

    layout = tmp_path / "layout"
    src = f"oci:{sources['gzip']}:img2"
    ocikit.copy(src, f"oci:{layout}:a")
    path = _blob(layout, _layers_of(layout, "a")[-1]["digest"])
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    ocikit.copy(src, f"oci:{layout}:b", verify_existing=True)
    assert set(_check_layout(layout)) == {"a", "b"}


# ---------------------------------------------------------------------------- the compressor


def test_aborting_the_threaded_gzip_writer_never_waits_for_it() -> None:
    """A block whose completion is never signalled (what an interrupt inside the writer's
    queue can leave) must not make the abort wait forever; nothing is written after it."""
    from ocikit.layer.transcode import LayerEncoder
    from ocikit.model import Compression

    class Sink:
        def __init__(self) -> None:
            self.written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    before = threading.active_count()
    sink = Sink()
    encoder = LayerEncoder(sink, Compression.GZIP, threads=2)  # type: ignore[arg-type]
    encoder.write(_data(5, 4 * MiB))
    from ocikit.layer.compress import _Job

    inner = encoder._encoder  # the block gzip writer: a block it waits for, never deflated
    inner._order.put(_Job(bytearray(1), 1, b""))  # type: ignore[attr-defined]
    done = threading.Event()

    def abort() -> None:
        encoder.abort()
        done.set()

    worker = threading.Thread(target=abort, daemon=True)
    worker.start()
    assert done.wait(20), "abort waited for the compressor's queues"
    written = sink.written
    time.sleep(0.2)
    assert sink.written == written, "the compressor kept writing after the abort"
    assert threading.active_count() <= before + 1  # its threads stopped (ours may linger)


# ---------------------------------------------------------------------------- kill -9


def _kill_at_random(procs: list[subprocess.Popen[bytes]], rnd: random.Random) -> None:
    start = time.monotonic()
    when = sorted((rnd.uniform(0.05, 1.2), i) for i in range(len(procs)))
    for at, i in when:
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            procs[i].send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=60)


def _archive_ok(path: Path, member: str) -> None:
    """An archive at its final name is complete."""
    if path.exists():
        with tarfile.open(path) as tar:
            assert member in tar.getnames(), f"{path} is incomplete"


def test_kill_9_at_random_moments(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path, registry: Registry
) -> None:
    """50 copies killed with SIGKILL at random moments, five at a time: into one layout
    (different images sharing layers, compressed on the way or not), an oci-archive, a
    docker-archive, export-layers' OUTDIR and a registry (staged in $TMPDIR). After each
    round the layout's index.json reaches only intact blobs; the next run leaves nothing of
    the dead ones, and gc leaves no blob index.json does not reach."""
    rnd = random.Random(9)
    layout, archives, outdir = tmp_path / "layout", tmp_path / "archives", tmp_path / "out"
    archives.mkdir()
    for round_ in range(10):
        procs = []
        for _ in range(3):
            name = rnd.choice(GOOD)
            kind = rnd.choice(["none", "gzip"])
            extra = rnd.choice([[], ["--dest-compress-format", "zstd"]])
            procs.append(
                _start(
                    "copy", "-q", *extra, f"oci:{sources[kind]}:{name}",
                    f"oci:{layout}:{name}-{kind}", tmpdir=private_tmp,
                )
            )  # fmt: skip
        name = rnd.choice(GOOD)
        src = f"oci:{sources['none']}:{name}"
        fourth = [
            ("copy", "-q", src, f"oci-archive:{archives / 'a.tar'}:{name}"),
            ("copy", "-q", src, f"docker-archive:{archives / 'd.tar'}:x/{name}:1"),
            ("export-layers", "-q", src, str(outdir)),
            ("copy", "-q", src, f"docker://{registry.host}/faults/{name}:1"),
        ][round_ % 4]
        procs.append(_start(*fourth, tmpdir=private_tmp))
        procs.append(
            _start(
                "copy", "-q", f"oci:{sources['none']}:{rnd.choice(GOOD)}",
                f"oci-archive:{archives / 'b.tar'}", tmpdir=private_tmp,
            )
        )  # fmt: skip
        _kill_at_random(procs, rnd)
        if (layout / "index.json").exists():
            _check_layout(layout)
        _archive_ok(archives / "a.tar", "index.json")
        _archive_ok(archives / "b.tar", "index.json")
        _archive_ok(archives / "d.tar", "manifest.json")

    # the next run of each kind reclaims what the dead ones left
    src = f"oci:{sources['none']}:img0"
    for args in (
        ("copy", "-q", src, f"oci:{layout}:next"),
        ("copy", "-q", src, f"oci-archive:{archives / 'a.tar'}"),
        ("copy", "-q", src, f"oci-archive:{archives / 'b.tar'}"),
        ("copy", "-q", src, f"docker-archive:{archives / 'd.tar'}"),
        ("export-layers", "-q", src, str(outdir)),
    ):
        proc = _run(*args, tmpdir=private_tmp)
        assert proc.returncode == 0, proc.stderr
    assert "next" in _check_layout(layout)
    assert _leftovers(layout, private_tmp) == []
    assert sorted(p.name for p in archives.iterdir()) == ["a.tar", "b.tar", "d.tar"]
    assert not [p for p in outdir.iterdir() if p.name.startswith(".")]

    proc = _run("gc", "--unreferenced", f"oci:{layout}", tmpdir=private_tmp)
    assert proc.returncode == 0, proc.stderr
    assert _stored(layout) == _reachable(layout)
    _check_layout(layout)


def test_gc_reclaims_what_dead_processes_left(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path
) -> None:
    """``ocikit gc`` alone (no next run): staging in $TMPDIR, writers' private directories
    in a layout and export staging in an OUTDIR; nothing while their processes live."""
    layout, outdir = tmp_path / "layout", tmp_path / "out"
    archive = tmp_path / "img3.tar"
    ok = _copy(f"oci:{sources['none']}:img3", f"docker-archive:{archive}", private_tmp)
    assert ok.returncode == 0, ok.stderr
    half = archive.read_bytes()[: archive.stat().st_size // 2]
    assert _copy(f"oci:{sources['gzip']}:small", f"oci:{layout}:small", private_tmp).returncode == 0
    before = _check_layout(layout)
    procs = []
    for args in (
        ("copy", "-q", "docker-archive:-", f"oci:{layout}:x"),
        ("copy", "-q", "docker-archive:-", f"oci-archive:{tmp_path / 'a.tar'}"),
        ("export-layers", "-q", "docker-archive:-", str(outdir)),
    ):
        p = subprocess.Popen(
            [*OCIKIT, *args],
            stdin=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": str(private_tmp)},
        )
        assert p.stdin is not None
        p.stdin.write(half)  # half an archive, and the pipe stays open: they wait for more
        p.stdin.flush()
        procs.append(p)
    deadline = time.monotonic() + 30
    while not (list(private_tmp.iterdir()) and _leftovers(layout) and outdir.exists()):
        assert time.monotonic() < deadline, "the copies never started writing"
        time.sleep(0.05)
    held = _leftovers(layout, private_tmp, outdir)
    live = _run("gc", f"oci:{layout}", str(outdir), tmpdir=private_tmp)
    assert live.returncode == 0, live.stderr
    assert _leftovers(layout, private_tmp, outdir) == held, "gc removed what live ones hold"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    proc = _run("gc", f"oci:{layout}", str(outdir), tmpdir=private_tmp)
    assert proc.returncode == 0, proc.stderr
    assert _leftovers(layout, private_tmp, outdir) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert _check_layout(layout) == before
    assert _stored(layout) == _reachable(layout)


def test_gc_usage(tmp_path: Path, private_tmp: Path) -> None:
    proc = _run("gc", "--help", tmpdir=private_tmp)
    assert proc.returncode == 0 and b"unreferenced" in proc.stdout
    proc = _run("gc", f"oci:{tmp_path / 'nothing'}", tmpdir=private_tmp)
    assert_one_line_error(proc, contains="nothing")


# ---------------------------------------------------------------------------- concurrent writers


GATED = (
    "import sys\n"
    "from ocikit.cli.main import main\n"
    "sys.stdin.readline()\n"  # started and imported: wait for the others
    "main(sys.argv[1:])\n"
)


def test_eight_writers_some_failing(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path
) -> None:
    """Five good images and three with a corrupt layer after the shared good ones, copied
    into one new layout by eight processes released at the same moment: every good tag is
    there and intact, no bad one, and no blob of a failed writer is left."""
    for round_, kind in enumerate(["gzip", "none", "gzip"]):
        layout = tmp_path / f"layout{round_}"
        names = GOOD + BAD
        random.Random(round_).shuffle(names)
        procs = {
            name: subprocess.Popen(
                [OCIKIT[0], "-c", GATED, "copy", "-q", f"oci:{sources[kind]}:{name}",
                 f"oci:{layout}:{name}"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, "TMPDIR": str(private_tmp)},
            )
            for name in names
        }  # fmt: skip
        for p in procs.values():
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        for name, p in procs.items():
            _, err = p.communicate(timeout=120)
            if name in GOOD:
                assert p.returncode == 0, err
            else:
                proc = subprocess.CompletedProcess(p.args, p.returncode, b"", err)
                assert_one_line_error(proc, contains="layer")
        tags = _check_layout(layout)
        assert sorted(tags) == sorted(GOOD), f"round {round_}"
        assert _leftovers(layout, private_tmp) == []
        assert _stored(layout) == _reachable(layout), "a failed writer left its blobs"


# ---------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _full(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert_one_line_error(proc, contains="no space left on device")


@pytest.mark.parametrize(
    "kind", ["oci", "oci-existing", "oci-archive", "docker-archive", "export-layers"]
)
def test_full_destination(
    sources: dict[str, Path], tmp_path: Path, private_tmp: Path, kind: str
) -> None:
    src = f"oci:{sources['none']}:img0"
    with _tmpfs(tmp_path / "full", "2m") as full:
        before: dict[str, tuple[int, int, int]] = {}
        if kind == "oci-existing":
            ok = _copy(f"oci:{sources['gzip']}:small", f"oci:{full / 'l'}:small", private_tmp)
            assert ok.returncode == 0, ok.stderr
            before = tree(full)
        dst = {
            "oci": ("copy", "-q", src, f"oci:{full / 'l'}:x"),
            "oci-existing": ("copy", "-q", src, f"oci:{full / 'l'}:x"),
            "oci-archive": ("copy", "-q", src, f"oci-archive:{full / 'a.tar'}"),
            "docker-archive": ("copy", "-q", src, f"docker-archive:{full / 'd.tar'}"),
            "export-layers": ("export-layers", "-q", src, str(full / "out")),
        }[kind]
        _full(_run(*dst, tmpdir=private_tmp))
        assert tree(full) == before, "the destination changed"
        if kind == "oci-existing":
            assert set(_check_layout(full / "l")) == {"small"}
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive", "pipe"])
def test_full_tmpdir(sources: dict[str, Path], tmp_path: Path, kind: str) -> None:
    src = f"oci:{sources['none']}:img0"
    out = tmp_path / "out"
    out.mkdir()
    with _tmpfs(tmp_path / "tmp", "2m") as tmp:
        if kind == "pipe":
            archive = tmp_path / "d.tar"
            assert _copy(src, f"docker-archive:{archive}", tmp_path).returncode == 0
            with archive.open("rb") as f:
                proc = _run("copy", "-q", "docker-archive:-", f"oci-archive:{out / 'a.tar'}",
                            tmpdir=tmp, stdin=f)  # fmt: skip
        else:
            # a docker-archive stages only the layers it decompresses (their size is known
            # at their end): from gzip layers; uncompressed ones stream past $TMPDIR
            source = f"oci:{sources['gzip']}:img0" if kind == "docker-archive" else src
            proc = _run("copy", "-q", source, f"{kind}:{out / 'x.tar'}", tmpdir=tmp)
        _full(proc)
        assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []


def test_full_tmpdir_registry_staging(
    sources: dict[str, Path], tmp_path: Path, registry: Registry
) -> None:
    with _tmpfs(tmp_path / "tmp", "2m") as tmp:
        proc = _run(
            "copy", "-q", f"oci:{sources['none']}:img0",
            f"docker://{registry.host}/full/img0:1", tmpdir=tmp,
        )  # fmt: skip
        _full(proc)
        assert list(tmp.iterdir()) == []


def test_full_build_cache(tmp_path: Path, private_tmp: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "big").write_bytes(_data(40, 6 * MiB))
    (context / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: scratch\n    imports:\n      - {src: big, dest: /big}\n"
    )
    with _tmpfs(tmp_path / "cache", "2m") as cache:
        proc = _run(
            "build", "-q", "-f", str(context / "ocikit.yaml"), "--cache-dir", str(cache),
            "--output", f"oci:{tmp_path / 'out'}", tmpdir=private_tmp,
        )  # fmt: skip
        _full(proc)
        assert _leftovers(cache if (cache / "oci-layout").exists() else None) == []
        assert not [p for p in cache.rglob(".*")], list(cache.rglob(".*"))
    assert list(private_tmp.iterdir()) == []
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- Ctrl-C


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A layout with one uncompressed 256 MiB layer, and how long a copy of it takes."""
    root = tmp_path_factory.mktemp("big")
    layout = root / "layout"
    write_layout(layout, [_layer(50, 256 * MiB)], ref="big", compression="none")
    start = time.monotonic()
    proc = _run("copy", "-q", f"oci:{layout}:big", f"oci:{root / 'probe'}:x", tmpdir=root)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(root / "probe")
    return layout, time.monotonic() - start


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_ctrl_c_stops_promptly_and_cleans_up(
    big_source: tuple[Path, float], tmp_path: Path, private_tmp: Path, kind: str
) -> None:
    """SIGINT at random moments of a large copy, 10 times: each time the copy exits
    within seconds, with 130 and one line (or 0 if it had finished), leaving nothing."""
    layout, duration = big_source
    rnd = random.Random(kind)
    dst = tmp_path / "dst"
    for attempt in range(10):
        twice = attempt % 4 == 3  # and sometimes a second Ctrl-C soon after
        p = _start("copy", "-q", f"oci:{layout}:big", f"{kind}:{dst}", tmpdir=private_tmp)
        started = time.monotonic()
        while not (dst.exists() or list(private_tmp.iterdir())):  # past Python's start-up
            assert time.monotonic() - started < 30 and p.poll() is None, "it never started"
            time.sleep(0.01)
        time.sleep(rnd.uniform(0, duration))
        p.send_signal(signal.SIGINT)
        if twice:
            time.sleep(rnd.uniform(0.0, 0.1))
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            pytest.fail(f"attempt {attempt}: the copy did not stop within 15 s of Ctrl-C")
        if p.returncode == 0:  # it had finished
            _remove(dst)
            continue
        proc = subprocess.CompletedProcess(p.args, p.returncode, b"", err)
        assert_one_line_error(proc, contains="interrupted", code=130)
        if twice:  # a second Ctrl-C leaves at once; gc (or the next run) reclaims the rest
            gc = _run("gc", *([f"oci:{dst}"] if kind == "oci" and dst.exists() else []),
                      str(tmp_path), tmpdir=private_tmp)  # fmt: skip
            assert gc.returncode == 0, gc.stderr
            assert _leftovers(dst if kind == "oci" else None, private_tmp) == []
            _remove(dst)  # what it had begun: an empty layout
        if dst.exists():  # interrupted just after it was complete: it must be whole
            check = _run("inspect", f"{kind}:{dst}", tmpdir=private_tmp)
            assert check.returncode == 0, f"attempt {attempt}: {check.stderr!r}"
            _remove(dst)
        assert _leftovers(None, private_tmp) == [], f"attempt {attempt}"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
