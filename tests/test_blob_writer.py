"""The one blob writer (transports/tempblob.py) and BlobWriter as a context manager.

In-process, on files in tmp_path: commit, abort, an exception inside ``with``, a failing
fsync or store, the fsync before the rename, a file copied as a blob verified, and nothing
left behind.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from ocikit.errors import DestinationError, VerificationError
from ocikit.model import Digest
from ocikit.tempfiles import PrivateDir
from ocikit.transports import Reference
from ocikit.transports import tempblob as tb
from ocikit.transports.oci_layout import OciLayoutDestination, blob_path
from ocikit.transports.tempblob import Durability, TempBlob

DATA = b"some blob bytes\n" * 1000
DIGEST = Digest.of(DATA)


@pytest.fixture
def private(tmp_path: Path):
    d = PrivateDir(str(tmp_path), ".ocikit-tmp-", str(tmp_path))
    yield d
    d.remove()


def _stored() -> tuple[list[tuple[str, Digest, int, bytes]], tb.Store]:
    got: list[tuple[str, Digest, int, bytes]] = []

    def store(path: str, digest: Digest, size: int) -> None:
        with open(path, "rb") as f:
            got.append((path, digest, size, f.read()))
        os.unlink(path)

    return got, store


def test_commit_hands_the_file_on(private: PrivateDir) -> None:
    got, store = _stored()
    with TempBlob(private.path, "here", store) as writer:
        writer.file.write(DATA[:100])
        writer.file.write(memoryview(DATA)[100:])
        writer.commit(DIGEST)
    assert [(d, n, b) for _, d, n, b in got] == [(DIGEST, len(DATA), DATA)]
    assert os.listdir(private.path) == []
    writer.abort()  # after commit: nothing
    assert len(got) == 1


def test_leaving_without_commit_aborts(private: PrivateDir) -> None:
    got, store = _stored()
    with TempBlob(private.path, "here", store) as writer:
        writer.file.write(DATA)
    assert got == [] and os.listdir(private.path) == []


def test_an_exception_inside_aborts(private: PrivateDir) -> None:
    got, store = _stored()
    with pytest.raises(KeyError), TempBlob(private.path, "here", store) as writer:
        writer.file.write(DATA)
        raise KeyError("boom")
    assert got == [] and os.listdir(private.path) == []


def test_commit_and_abort_are_once(private: PrivateDir) -> None:
    got, store = _stored()
    with TempBlob(private.path, "here", store) as writer:
        writer.file.write(DATA)
        writer.commit(DIGEST)
    with pytest.raises(RuntimeError):
        writer.commit(DIGEST)
    assert len(got) == 1


def test_a_failing_store_leaves_nothing(private: PrivateDir) -> None:
    def store(path: str, digest: Digest, size: int) -> None:
        raise DestinationError("refused")

    with (
        pytest.raises(DestinationError, match="refused"),
        TempBlob(private.path, "here", store) as writer,
    ):
        writer.file.write(DATA)
        writer.commit(DIGEST)
    assert os.listdir(private.path) == []


def test_durable_fsyncs_before_store_off_the_callers_thread(
    private: PrivateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``commit`` returns before the fsync (it waits on the I/O thread: the caller writes
    the next blob meanwhile); the fsync comes before the store (the rename); ``wait``
    returns when both are done."""
    events: list[tuple[str, str]] = []
    release = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        assert release.wait(30)
        events.append(("fsync", threading.current_thread().name))
        real_fsync(fd)

    def store(path: str, digest: Digest, size: int) -> None:
        events.append(("store", threading.current_thread().name))
        os.unlink(path)

    monkeypatch.setattr(tb.os, "fsync", fsync)
    durable = Durability("here")
    with TempBlob(private.path, "here", store, durable=durable) as writer:
        writer.file.write(DATA)
        writer.commit(DIGEST)
    assert events == []  # committed; its fsync still waits
    release.set()
    durable.wait()
    assert [e for e, _ in events] == ["fsync", "store"]
    assert all(name.startswith("ocikit-fsync") for _, name in events)
    assert os.listdir(private.path) == []


def test_a_failing_fsync_is_one_line_and_leaves_nothing(
    private: PrivateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    got, store = _stored()
    monkeypatch.setattr(tb.os, "fsync", fsync)
    durable = Durability("the layout")
    with TempBlob(private.path, "the layout", store, durable=durable) as writer:
        writer.file.write(DATA)
        writer.commit(DIGEST)
    with pytest.raises(DestinationError, match=r"^the layout: no space left on device$"):
        durable.wait()
    assert got == [] and os.listdir(private.path) == []
    durable.settle()  # nothing pending: quiet


def test_layout_blob_durable_before_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OCI layout: the blob is fsynced, then renamed into blobs/, and index.json is
    written only after that; with no commit, nothing of the copy stays."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(f"rename {os.path.relpath(dst, tmp_path)}")
        real_replace(src, dst)

    monkeypatch.setattr(tb.os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    layout = tmp_path / "layout"
    dest = OciLayoutDestination(Reference("oci", str(layout), "t"))
    try:
        with dest.new_blob() as writer:
            writer.file.write(DATA)
            writer.commit(DIGEST)
        dest.flush()
        assert (layout / blob_path(DIGEST)).read_bytes() == DATA
        dest.commit()
    except BaseException:
        dest.abort()
        raise
    blob = f"rename layout/{blob_path(DIGEST)}"
    assert events.index("fsync") < events.index(blob) < events.index("rename layout/index.json")
    assert sorted(os.listdir(layout)) == ["blobs", "index.json", "oci-layout"]


def test_put_blob_file_verifies_what_it_copies(tmp_path: Path) -> None:
    """The default ``put_blob_file`` (a copy): a file that is not the digest is refused and
    nothing of it stays."""
    src = tmp_path / "blob"
    src.write_bytes(DATA)
    layout = tmp_path / "layout"
    dest = OciLayoutDestination(Reference("oci", str(layout), "t"))
    try:
        with pytest.raises(VerificationError):
            dest.put_blob_file(str(src), Digest.of(b"other"))
        dest.put_blob_file(str(src), DIGEST)
        dest.flush()
        assert (layout / blob_path(DIGEST)).read_bytes() == DATA
    finally:
        dest.abort()
    assert not layout.exists() and src.read_bytes() == DATA


def test_layout_abort_leaves_nothing(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    dest = OciLayoutDestination(Reference("oci", str(layout), "t"))
    with dest.new_blob() as writer:
        writer.file.write(DATA)
        writer.commit(DIGEST)
    with dest.new_blob() as unfinished:
        unfinished.file.write(b"half")
    dest.abort()
    assert not layout.exists()


def test_a_private_dir_taken_by_a_reclaimer_before_its_lock_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between ``mkdtemp`` and the open that locks it, a reclaimer (another process, or
    another thread's first private directory) may lock and remove the new directory: another
    is made, where it raised "no such file or directory" (a build's squashfs layers, two
    scanned at once, failed so)."""
    import tempfile

    from ocikit.tempfiles import reclaim

    real = tempfile.mkdtemp
    taken: list[str] = []

    def mkdtemp(prefix: str, dir: str) -> str:
        path = real(prefix=prefix, dir=dir)
        if not taken:  # the first one: a reclaimer gets to it before its maker's lock
            assert [p for p, _ in reclaim(dir, (".ocikit-tmp-",))] == [path]
            taken.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    d = PrivateDir(str(tmp_path), ".ocikit-tmp-", str(tmp_path))
    try:
        assert os.path.isdir(d.path) and d.path != taken[0]
        assert not os.path.exists(taken[0])
    finally:
        d.remove()


def test_the_temporary_root_is_found_without_writing_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$TMPDIR`` is taken as it is: ``tempfile.gettempdir`` would create (and remove) a
    randomly named file there to probe it, which a ``kill -9`` at that moment leaves behind
    under a name no reclaimer can tell from another program's (test_faults saw one)."""
    import tempfile

    from ocikit.tempfiles import temp_root

    monkeypatch.setattr(tempfile, "tempdir", None)  # nothing cached: a probe would run now
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    opened: list[object] = []
    real_open = os.open

    def spy(path: object, *args: object, **kw: object) -> int:
        opened.append(path)
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    assert temp_root() == str(tmp_path)
    assert opened == []
    monkeypatch.setenv("TMPDIR", "")
    monkeypatch.setenv("TEMP", "rel")
    assert temp_root() == os.path.abspath("rel")
