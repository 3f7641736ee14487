"""``check`` reads layer k+1 ahead while layer k is analyzed (ops/check.py ``ReadAhead``):
the same report as reading each layer in its turn, entries ahead bounded, nothing left
running when the analysis stops."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ocikit
from ocikit.errors import OcikitError
from ocikit.layer import scan
from ocikit.layer.analyze import LayerAnalyzer
from ocikit.layer.tarstream import TarEntry
from ocikit.ops import check
from ocikit.transports import as_reference, open_image
from ocikit.transports.base import SourceProperties
from ocikit.transports.oci_layout import OciLayoutSource
from support.layouts import directory, file, gzip_bomb, tar_bytes, write_layout
from support.rawtar import header as raw_header
from test_check_corpus import BROKEN, CASES, build, scene


def _workers() -> list[threading.Thread]:
    names = ("ocikit-ahead", "ocikit-read", "ocikit-inflate", "ocikit-hash")
    return [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def _no_workers_left() -> None:
    deadline = time.monotonic() + 5
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _workers()


def _both_ways(ref: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[dict[str, Any]]:
    reports = []
    for ahead in (False, True):
        monkeypatch.setattr(check, "READ_AHEAD", ahead)
        reports.append(ocikit.check(ref, **kw).to_dict())
    _no_workers_left()
    return reports


def _lower_both_ways(ref: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``analyze_lower`` (strict: the first problem raised) either way."""
    out: list[Any] = []
    for ahead in (False, True):
        monkeypatch.setattr(check, "READ_AHEAD", ahead)
        with open_image(as_reference(ref), None, lenient=True) as image:
            try:
                lower = check.analyze_lower(image)
            except OcikitError as e:
                out.append((type(e), str(e)))
            else:
                out.append(([f.to_dict() for f in lower.findings], lower.entries))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_reports_the_same_read_ahead(
    case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = build(case, tmp_path)
    sequential, ahead = _both_ways(s.ref, monkeypatch)
    assert ahead == sequential
    sequential, ahead = _lower_both_ways(s.ref, monkeypatch)
    assert ahead == sequential


@pytest.mark.parametrize("broken", BROKEN, ids=[b.id for b in BROKEN])
def test_broken_images_report_the_same_read_ahead(
    broken: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scene(tmp_path)
    broken.make(s.layout)
    sequential, ahead = _both_ways(s.ref, monkeypatch)
    assert ahead == sequential and sequential["findings"]
    sequential, ahead = _lower_both_ways(s.ref, monkeypatch)
    assert ahead == sequential


def _hostile(n: int) -> bytes:
    """A layer with findings of its own (an absolute link target escaping, a path twice)."""
    return tar_bytes(
        [directory("etc"), file("etc/a", f"{n}"), file("etc/a", "again"), file("../up", "x")]
    )


def test_bomb_above_is_reported_after_the_findings_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layer 1 a decompression bomb, layers 0 and 2 with findings: the same findings in the
    same order either way (the bomb, read ahead, is not reported before layer 0's)."""
    layout = tmp_path / "layout"
    bomb = gzip_bomb(tmp_path / "bomb.gz", size=128 << 20)
    write_layout(layout, [_hostile(0), bomb, _hostile(2)])
    ref = f"oci:{layout}:t"
    sequential, ahead = _both_ways(ref, monkeypatch)
    assert ahead == sequential
    layers = [f["layer"] for f in ahead["findings"]]
    assert layers == sorted(layers) and "decompression-bomb" in [
        f["rule"] for f in ahead["findings"]
    ]
    sequential, ahead = _lower_both_ways(ref, monkeypatch)
    assert ahead == sequential and "expands beyond" in str(ahead[1])


def _layers(tmp_path: Path, count: int, files: int, size: int = 100) -> str:
    """``count`` layers of ``files`` files of ``size`` random bytes (incompressible: a large
    layer is inflated on worker threads)."""
    layout = tmp_path / "layout"
    rnd = random.Random(size)
    layers = [
        tar_bytes([file(f"l{i}/f{j}", rnd.randbytes(size)) for j in range(files)])
        for i in range(count)
    ]
    write_layout(layout, layers)
    return f"oci:{layout}:t"


def test_the_next_layer_is_read_while_this_one_is_analyzed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layer 1's scan starts before layer 0's analysis ends, layer 2's not before layer 1's
    analysis ended (one layer ahead at most)."""
    ref = _layers(tmp_path, 3, 20)
    events: list[tuple[str, int]] = []
    second = threading.Event()
    scan = check.scan_image_layer

    def spy_scan(image: Any, index: int, *args: Any, **kw: Any) -> Any:
        events.append(("scan", index))
        if index == 1:
            second.set()
        return scan(image, index, *args, **kw)

    class Spy(LayerAnalyzer):
        def feed(self, index: int, entry: TarEntry) -> None:
            if index == 0:
                events.append(("analyze", self.layer))
                if self.layer == 0:
                    second.wait(10)
            super().feed(index, entry)

        def finish(self) -> None:
            events.append(("finish", self.layer))
            super().finish()

    monkeypatch.setattr(check, "scan_image_layer", spy_scan)
    monkeypatch.setattr(check, "LayerAnalyzer", Spy)
    report = ocikit.check(ref)
    assert report.entries == 60 and not report.errors
    assert events.index(("scan", 1)) < events.index(("finish", 0))
    assert events.index(("scan", 2)) > events.index(("finish", 0))
    assert [e for e in events if e[0] != "scan"] == [
        (what, i) for i in range(3) for what in ("analyze", "finish")
    ]
    _no_workers_left()


def _many_entries(tmp_path: Path, entries: list[bytes]) -> Any:
    layout = tmp_path / "layout"
    write_layout(layout, [b"".join(entries) + bytes(1024)])
    return open_image(as_reference(f"oci:{layout}:t"), None, lenient=True)


def _fill_then_drain(ahead: check.ReadAhead) -> tuple[int, int, int]:
    """The layer fed slowly at first (until the thread reading ahead waits at the bound):
    the most entries and bytes ever waiting, and the entries fed."""
    most = [0, 0]
    fed = 0
    lane = ahead._lanes[0]

    def feed(n: int, entry: TarEntry) -> None:
        nonlocal fed
        if n == 0:  # the reader fills up to its bound and waits there
            deadline = time.monotonic() + 10
            while lane.count + ahead._batch <= ahead._max_entries and (
                lane.size + ahead._batch_size <= ahead._max_size
            ):
                assert time.monotonic() < deadline, "the reader never filled its bound"
                time.sleep(0.005)
        most[0] = max(most[0], lane.count)
        most[1] = max(most[1], lane.size)
        fed += 1

    ahead.layer(0, feed)
    return most[0], most[1], fed


def test_entries_ahead_are_bounded_in_count(tmp_path: Path) -> None:
    """A layer of 5,000 entries, 64 allowed ahead: never more wait."""
    names = [raw_header(f"f{i}".encode()) for i in range(5000)]
    with (
        _many_entries(tmp_path, names) as image,
        check.ReadAhead(image, range(1), None, entries=64) as ahead,
    ):
        count, _size, fed = _fill_then_drain(ahead)
    assert fed == 5000 and 0 < count <= 64
    _no_workers_left()


def test_entries_ahead_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Entries with 64 KiB names (PAX), 1 MiB of them allowed ahead: never more wait, the
    reader stopping there however few entries that is."""
    entries = []
    for i in range(200):
        name = f"d{i}/".encode() + b"n" * (64 << 10)
        record = b"path=" + name + b"\n"
        length = len(record) + 8
        length = len(record) + len(str(length)) + 1
        pax = f"{length} ".encode() + record
        pad = bytes(-len(pax) % 512)
        entries.append(raw_header(b"pax", b"x", len(pax)) + pax + pad + raw_header(b"short"))
    with (
        _many_entries(tmp_path, entries) as image,
        check.ReadAhead(image, range(1), None, size=1 << 20) as ahead,
    ):
        count, size, fed = _fill_then_drain(ahead)
    assert fed == 200 and 0 < size <= 1 << 20 and count < 20
    _no_workers_left()


def test_an_error_of_the_analysis_stops_the_layers_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The analysis of layer 0 interrupted while layer 1 (large: inflated on worker threads)
    is being read: the interrupt propagates, no thread is left."""
    ref = _layers(tmp_path, 3, 200, size=20_000)
    started = threading.Event()
    scan = check.scan_image_layer

    def spy_scan(image: Any, index: int, *args: Any, **kw: Any) -> Any:
        if index == 1:
            started.set()
        return scan(image, index, *args, **kw)

    class Failing(LayerAnalyzer):
        def feed(self, index: int, entry: TarEntry) -> None:
            if self.layer == 0 and index == 5:
                started.wait(10)
                raise KeyboardInterrupt
            super().feed(index, entry)

    monkeypatch.setattr(check, "scan_image_layer", spy_scan)
    monkeypatch.setattr(check, "LayerAnalyzer", Failing)
    with pytest.raises(KeyboardInterrupt):
        ocikit.check(ref)
    assert started.is_set()
    _no_workers_left()


def test_an_interrupt_while_waiting_stops_the_layers_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (the main thread interrupted) as layer 1 starts being read: it propagates
    from wherever the analysis is, no thread is left."""
    ref = _layers(tmp_path, 3, 200, size=20_000)
    scan = check.scan_image_layer

    def spy_scan(image: Any, index: int, *args: Any, **kw: Any) -> Any:
        if index == 1:
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)
        return scan(image, index, *args, **kw)

    monkeypatch.setattr(check, "scan_image_layer", spy_scan)
    with pytest.raises(KeyboardInterrupt):
        ocikit.check(ref)
    _no_workers_left()


def test_a_layer_of_one_huge_entry_read_ahead_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layer 1 one file of 1 GiB (zeros, allowed by the ratio): the analysis of layer 0
    interrupted once layer 1 is being inflated, layer 1 is not inflated to its end (its
    threads stop at their next block, not at the next entry)."""
    layout = tmp_path / "layout"
    write_layout(layout, [_hostile(0), gzip_bomb(tmp_path / "big.gz", size=1 << 30)])
    budgets: list[scan._Budget] = []

    class Spy(scan._Budget):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            budgets.append(self)

    class Failing(LayerAnalyzer):
        def feed(self, index: int, entry: TarEntry) -> None:
            if self.layer == 0 and index == 1:
                deadline = time.monotonic() + 10  # layer 1 is being inflated
                while not (len(budgets) == 2 and budgets[1].size):
                    assert time.monotonic() < deadline, "layer 1 was never read ahead"
                    time.sleep(0.001)
                raise KeyboardInterrupt
            super().feed(index, entry)

    monkeypatch.setattr(scan, "_Budget", Spy)
    monkeypatch.setattr(check, "LayerAnalyzer", Failing)
    with pytest.raises(KeyboardInterrupt):
        ocikit.check(f"oci:{layout}:t", max_ratio=1e7)
    _no_workers_left()
    assert len(budgets) == 2 and budgets[1].size < 256 << 20


def test_a_source_read_one_blob_at_a_time_is_scanned_one_layer_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source whose blobs cannot be read at once (a docker-archive on stdin): layer k+1's
    scan starts when layer k's has ended, still before layer k's analysis ends."""
    monkeypatch.setattr(OciLayoutSource, "properties", SourceProperties(concurrent=False))
    ref = _layers(tmp_path, 3, 20)
    events: list[tuple[str, int]] = []
    second = threading.Event()
    scan = check.scan_image_layer

    def spy_scan(image: Any, index: int, *args: Any, **kw: Any) -> Any:
        events.append(("scan", index))
        if index == 1:
            second.set()
        try:
            return scan(image, index, *args, **kw)
        finally:
            events.append(("end", index))

    class Spy(LayerAnalyzer):
        def feed(self, index: int, entry: TarEntry) -> None:
            if self.layer == 0 and index == 0:
                second.wait(10)
            super().feed(index, entry)

        def finish(self) -> None:
            events.append(("finish", self.layer))
            super().finish()

    monkeypatch.setattr(check, "scan_image_layer", spy_scan)
    monkeypatch.setattr(check, "LayerAnalyzer", Spy)
    assert ocikit.check(ref).entries == 60
    scans = [e for e in events if e[0] != "finish"]
    assert scans == [(what, i) for i in range(3) for what in ("scan", "end")]
    assert events.index(("scan", 1)) < events.index(("finish", 0))
    _no_workers_left()
