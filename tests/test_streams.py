"""Standard output as a user's shell uses it: a reader that goes away (``| head -c 100``)
ends the command quietly with the shell's status for a broken pipe (141, as if killed by
SIGPIPE), never ``1`` (``check``'s "problems found"), never a traceback."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.cli import OCIKIT
from support.dockerd import DockerEngine
from support.layouts import write_layout


@pytest.fixture(scope="module")
def big_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image larger than a pipe's buffer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(1 << 20)
        info = tarfile.TarInfo("big")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    where = tmp_path_factory.mktemp("streams") / "layout"
    write_layout(where, [buf.getvalue()], ref="big")
    return where


@pytest.mark.parametrize("dest", ["docker-archive:-", "oci-archive:-"])
def test_a_reader_that_goes_away(big_layout: Path, dest: str) -> None:
    writer = subprocess.Popen(
        [*OCIKIT, "copy", "-q", f"oci:{big_layout}:big", dest],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.read(100)
    writer.stdout.close()  # as `head -c 100` does
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == 141
    assert err == b""


@pytest.mark.parametrize("dest", ["docker-archive:-", "oci-archive:-"])
def test_an_archive_is_never_written_to_a_terminal(big_layout: Path, dest: str) -> None:
    """As ``docker save`` refuses: nothing written to the terminal, one line, exit 2."""
    main, tty = os.openpty()
    try:
        proc = subprocess.run(
            [*OCIKIT, "copy", "-q", f"oci:{big_layout}:big", dest],
            stdout=tty,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.set_blocking(main, False)
        try:
            written = os.read(main, 1 << 16)
        except BlockingIOError:
            written = b""
    finally:
        os.close(main)
        os.close(tty)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f"ocikit: error: {dest}: refusing to write an archive to a terminal; redirect "
        "standard output (> FILE or | COMMAND) or name a file\n"
    )
    assert written == b""


def _refused_source() -> str:
    """A source that fails as soon as it is read: a registry port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"docker://127.0.0.1:{s.getsockname()[1]}/app:1"


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_a_directory_as_an_archive_is_refused_before_reading(
    tmp_path: Path, transport: str
) -> None:
    for target in (tmp_path, Path("/tmp")):
        proc = subprocess.run(
            [*OCIKIT, "copy", "-q", _refused_source(), f"{transport}:{target}"],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 2
        hint = "; name a file in it" if transport == "docker-archive" else " (did you mean oci:?)"
        assert proc.stderr.decode() == (f"ocikit: error: {target}: is a directory{hint}\n")
    assert os.listdir(tmp_path) == []


def test_bare_ocikit_prints_its_help() -> None:
    """As docker and crane do: the help on stdout, exit 0, no ``error:``."""
    proc = subprocess.run(OCIKIT, capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr == b""
    out = proc.stdout.decode()
    assert out.startswith("Usage: ocikit [OPTIONS] COMMAND [ARGS]...\n")
    assert "\\n" not in out and "Commands:" in out


def test_a_copy_to_the_engine_from_a_terminal(
    big_layout: Path, docker_engine: DockerEngine
) -> None:
    """docker-daemon: writes to the engine, not to standard output: a terminal there is fine."""
    main, tty = os.openpty()
    try:
        proc = subprocess.run(
            [*OCIKIT, "copy", "-q", f"oci:{big_layout}:big", "docker-daemon:ocikit-tty:1"],
            stdout=tty,
            stderr=subprocess.PIPE,
            env=docker_engine.env,
            timeout=120,
        )
    finally:
        os.close(main)
        os.close(tty)
    assert proc.returncode == 0, proc.stderr.decode()
    docker_engine.remove_image("ocikit-tty:1")


@pytest.mark.parametrize("block_deflate", [True, False], ids=["own-writer", "isal-writer"])
def test_gzip_writer_is_isal_threaded_gzip_byte_for_byte(
    block_deflate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers stay reproducible across the change of writer: the same bytes as isal's
    threaded gzip under its buffered writer, whatever the writes' sizes, level or threads;
    an isal without its block deflate gets its own writer."""
    import io
    import zlib

    from isal import igzip_threaded

    from ocikit.layer import compress
    from ocikit.layer.compress import BLOCK, compressing_writer
    from ocikit.model import Compression

    monkeypatch.setattr(compress, "_HAS_BLOCK_DEFLATE", block_deflate)

    data = (os.urandom(1 << 15) + b"layer " * 200_000) * 4
    data = data[: 3 * BLOCK + 4321]
    writes = [
        [BLOCK] * 4,
        [BLOCK - 1, 1, 0, 1, 700_000, 700_000, 2 * BLOCK + 3],
        [512] * 7000,
        [3 * BLOCK + 9],
        [100],
        [],
    ]
    for sizes in writes:
        for level, threads in ((0, 2), (1, 1), (2, 2), (3, 3)):
            ours, isal = io.BytesIO(), io.BytesIO()
            a = compressing_writer(ours, Compression.GZIP, level, threads)
            b = igzip_threaded.open(
                isal, "wb", compresslevel=level, threads=threads, block_size=BLOCK
            )
            pos = 0
            for size in sizes:
                chunk = memoryview(data)[pos : pos + size]
                pos += len(chunk)
                a.write(chunk)
                b.write(chunk)
            a.close()
            b.close()
            assert ours.getvalue() == isal.getvalue(), (sizes[:3], level, threads)
            assert zlib.decompress(ours.getvalue(), 31) == data[:pos]


@pytest.mark.parametrize("block_deflate", [True, False], ids=["own-writer", "isal-writer"])
def test_a_compressing_writer_hashes_its_input_in_order(
    block_deflate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``input_hasher`` is given every byte written, in order, by the time ``close`` returns,
    whatever the compression and the writes' sizes (gzip's block writer hashes each block
    on its output thread; the others as they are written); the compressed bytes are the
    same as without it, and an abort stops a hashed writer as it stops the others."""
    import hashlib
    import zlib

    import zstandard

    from ocikit.layer import compress
    from ocikit.layer.compress import BLOCK, abort_writer, compressing_writer
    from ocikit.model import Compression

    monkeypatch.setattr(compress, "_HAS_BLOCK_DEFLATE", block_deflate)
    data = (os.urandom(1 << 15) + b"layer " * 100_000) * 2
    data = data[: 2 * BLOCK + 4321]
    writes = [[BLOCK - 1, 1, 700_000, 2 * BLOCK], [512] * 300, [100], []]
    kinds = [(Compression.GZIP, 1), (Compression.GZIP, 9), (Compression.ZSTD, 3)]
    kinds.append((Compression.NONE, None))  # type: ignore[arg-type]
    for sizes in writes:
        for compression, level in kinds:
            plain, hashed = io.BytesIO(), io.BytesIO()
            hasher = hashlib.sha256()
            a = compressing_writer(plain, compression, level, 2)
            b = compressing_writer(hashed, compression, level, 2, input_hasher=hasher)
            pos = 0
            for size in sizes:
                chunk = bytearray(data[pos : pos + size])
                pos += len(chunk)
                a.write(chunk)
                b.write(chunk)
                chunk[:] = b"x" * len(chunk)  # the caller's buffer, reused at once
            a.close()
            b.close()
            assert hasher.hexdigest() == hashlib.sha256(data[:pos]).hexdigest()
            assert hashed.getvalue() == plain.getvalue(), (sizes[:3], compression, level)
            if compression is Compression.GZIP:
                assert zlib.decompress(hashed.getvalue(), 31) == data[:pos]
            elif compression is Compression.ZSTD:
                reader = zstandard.ZstdDecompressor().stream_reader(hashed.getvalue())
                assert reader.read() == data[:pos]
    for compression, level in kinds:
        out = io.BytesIO()
        w = compressing_writer(out, compression, level, 2, input_hasher=hashlib.sha256())
        w.write(data)
        abort_writer(w)
        w.close()  # nothing more: the abort dropped it


@pytest.mark.parametrize("stops_at", [1, 2, 3])
def test_a_gzip_writer_interrupted_while_its_threads_start_aborts_cleanly(
    monkeypatch: pytest.MonkeyPatch, stops_at: int
) -> None:
    """Ctrl-C lands while the block writer starts its threads (the first full block): the
    abort that follows joins only threads that started, ends them, and raises nothing (it
    raised "cannot join thread before it is started": exit 3 instead of 130)."""
    import threading

    from ocikit.layer.compress import BLOCK, abort_writer, compressing_writer
    from ocikit.model import Compression

    real_start = threading.Thread.start
    calls = 0

    def start(self: threading.Thread) -> None:
        nonlocal calls
        calls += 1
        if calls == stops_at:
            raise KeyboardInterrupt
        real_start(self)

    before = set(threading.enumerate())
    writer = compressing_writer(io.BytesIO(), Compression.GZIP, 1, 2)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        writer.write(bytes(BLOCK + 1))
    monkeypatch.setattr(threading.Thread, "start", real_start)
    abort_writer(writer)
    for t in set(threading.enumerate()) - before:
        t.join(5)
        assert not t.is_alive(), t.name
