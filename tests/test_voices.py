"""Every external voice is bounded and quoted: names inside images, the engine
(``docker-daemon:``), the tools ocikit runs (runc, mksquashfs, unsquashfs).

- Names (tar paths, tags, ref names, platforms, labels) reach the terminal quoted: control
  characters escaped, a byte that is not UTF-8 shown as ``\\xNN``, at most ``QUOTE_LIMIT``
  characters of each, lists of choices summarized; ``--json`` stays valid UTF-8 JSON with no
  raw terminal controls, whatever bytes a name holds (hostile names: ESC[2J, CR, LF, C1
  controls, bidi overrides, non-UTF-8 bytes, a 1 MB name, 10,000 tags).
- A fake engine of our own on a unix socket stalls, trickles, floods: each case ends with one
  line within a bounded time (deadlines shortened through the module's constants).
- Fake tools on ``PATH``: a mksquashfs that floods stderr (memory measured with tracemalloc),
  an unsquashfs that hangs; real runc with a step that prints a 50 MB line and escapes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ocikit.errors import InputError
from ocikit.transports import daemon
from support import rawtar
from support.hostile import MAX_TRICKLE, Hostile, Request
from support.inprocess import Result, assert_one_line, run
from support.layouts import (
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    file,
    put_blob,
    tar_bytes,
    write_layout,
)

MB = 1 << 20
BIG = 1_000_000  # a name of a megabyte (a PAX record holds 1 MiB at most)
LINE_MAX = 5000  # no line ocikit prints about a hostile input is longer
ESC = "\x1b"
CSI = "\u009b"  # a C1 control: some terminals take it for ESC [
RLO = "\u202e"  # right-to-left override: makes "gpj.exe" read "exe.jpg"


def _printable(text: str) -> bool:
    """Every line printable: no control character (C0, C1), no format character (bidi), no
    lone surrogate; nothing longer than LINE_MAX."""
    return all(
        all(c.isprintable() for c in line) and len(line) <= LINE_MAX for line in text.split("\n")
    )


def _stdout(result: Result) -> str:
    return result.stdout.decode("utf-8")  # strict: valid UTF-8 or this fails


def _hostile_layer() -> bytes:
    """A layer whose names carry terminal escapes, CR, LF, C1 and bidi controls, bytes that
    are not UTF-8, and a 1 MB name; each makes a finding."""
    return (
        rawtar.member(b"/esc\x1b[2J")
        + rawtar.member(b"/cr\rfake: ok")
        + rawtar.member(b"/caf\xe9")
        + rawtar.member(b"/c1\xc2\x9b2J")
        + rawtar.member(b"/bidi\xe2\x80\xaegpj.exe")
        + rawtar.member(b"a\nb")
        + rawtar.member(b"a\nb")  # a duplicate: two paths in one finding
        + rawtar.pax([(b"path", b"/" + b"x" * BIG)])
        + rawtar.member(b"placeholder")
        + rawtar.END
    )


@pytest.fixture(scope="module")
def hostile_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = tmp_path_factory.mktemp("hostile") / "layout"
    write_layout(layout, [_hostile_layer()], ref="t")
    return layout


# -- quoting -----------------------------------------------------------------------------------


def test_quote_escapes_bounds_and_shows_bytes() -> None:
    from ocikit.model.jsondoc import QUOTE_LIMIT, quote, show

    assert quote("bin/sh") == "'bin/sh'"
    assert quote("a\nb\r\x1b[2J\t") == "'a\\nb\\r\\x1b[2J\\t'"
    assert quote(b"caf\xe9".decode("utf-8", "surrogateescape")) == "'caf\\xe9'"
    assert quote(b"caf\xe9") == "'caf\\xe9'"
    assert quote("it's \\ ok") == "'it\\'s \\\\ ok'"
    assert quote(CSI + RLO) == "'\\x9b\\u202e'"
    long = quote("y" * MB)
    assert len(long) < QUOTE_LIMIT + 40 and long.endswith("... (1048576 characters)")
    assert _printable(long)
    assert show(["a\x1b", "b" * 1000]).count("b") < 100
    assert "\\x1b" in show({"k": "a\x1b"})


def test_summary_of_choices() -> None:
    from ocikit.model.jsondoc import summary

    assert summary([]) == "none"
    assert summary(["a", "b"]) == "a, b"
    assert summary([str(i) for i in range(10_000)]) == "0, 1, 2, 3, 4 and 9995 more"


# -- names inside images -----------------------------------------------------------------------


def test_check_prints_hostile_names_quoted(hostile_layout: Path) -> None:
    result = run("check", f"oci:{hostile_layout}:t")
    assert result.code == 1, result.stderr
    out = _stdout(result)
    assert _printable(out) and _printable(result.stderr), out[:2000]
    assert "'/esc\\x1b[2J'" in out
    assert "'/cr\\rfake: ok'" in out
    assert "'/caf\\xe9'" in out  # the byte as it is, not Python's \udce9
    assert "'/c1\\x9b2J'" in out and "\\u202e" in out
    assert "'a\\nb'" in out
    assert "(1000001 characters)" in out  # the megabyte name, cut


def test_check_json_is_valid_utf8_whatever_the_names(hostile_layout: Path) -> None:
    result = run("check", "--json", f"oci:{hostile_layout}:t")
    assert result.code == 1, result.stderr
    text = _stdout(result)
    assert all(c.isprintable() or c in "\n" for c in text)  # C1, bidi: \u escapes in JSON
    report = json.loads(text)
    by_path = {tuple(f["paths"]): f for f in report["findings"]}
    assert ("/c1\u009b2J",) in by_path and (f"/bidi{RLO}gpj.exe",) in by_path  # lossless
    assert ("/esc\x1b[2J",) in by_path and ("a\nb", "a\nb") in by_path
    assert "paths_base64" not in by_path[("/esc\x1b[2J",)]  # only where text cannot say it
    caf = by_path[("/caf\ufffd",)]  # a byte that is not UTF-8 reads as U+FFFD, as in Go
    assert [base64.b64decode(p) for p in caf["paths_base64"]] == [b"/caf\xe9"]
    assert ("/" + "x" * BIG,) in by_path  # data is not cut; messages are
    assert all(len(f["message"]) <= LINE_MAX for f in report["findings"])


def test_unpack_refuses_a_megabyte_hostile_name_in_one_short_line(tmp_path: Path) -> None:
    layer = rawtar.pax([(b"path", b"../\x1b[2J" + b"z" * BIG)]) + rawtar.member(b"x") + rawtar.END
    write_layout(tmp_path / "layout", [layer], ref="t")
    result = run("unpack", f"oci:{tmp_path / 'layout'}:t", str(tmp_path / "out"))
    line = assert_one_line(result, contains="outside")
    assert _printable(line) and "\\x1b[2J" in line
    assert not (tmp_path / "out").exists()


def _archive_of(images: list[dict[str, Any]], path: Path) -> Path:
    """A docker-archive whose manifest.json lists ``images`` (each a RepoTags list), all of
    one tiny image."""
    import hashlib
    import io
    import tarfile

    layer = tar_bytes([file("a.txt", "a")])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
            },
        }
    ).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": name, "RepoTags": tags, "Layers": ["l/layer.tar"]} for tags in images]
    with tarfile.open(path, "w") as tar:
        for member, data in [
            (name, config),
            ("l/layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_ten_thousand_tags_are_summarized(tmp_path: Path) -> None:
    tags = [f"repo/{ESC}[2J{i}:{i}" for i in range(10_000)]
    archive = _archive_of([tags], tmp_path / "tags.tar")
    line = assert_one_line(run("inspect", f"docker-archive:{archive}:absent:1"), contains="more")
    assert _printable(line) and "9995 more" in line
    archive = _archive_of([[f"r/{i}:1"] for i in range(1000)], tmp_path / "images.tar")
    line = assert_one_line(run("inspect", f"docker-archive:{archive}"), contains="1000 images")
    assert _printable(line) and "995 more" in line


def test_ten_thousand_ref_names_and_platforms_are_summarized(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    digest = write_layout(layout, [tar_bytes([file("a")])], ref="t")
    index = json.loads((layout / "index.json").read_bytes())
    desc = index["manifests"][0]
    index["manifests"] = [
        {**desc, "annotations": {REF_NAME: f"{ESC}]0;title\x07{i}"}} for i in range(10_000)
    ]
    (layout / "index.json").write_text(json.dumps(index))
    line = assert_one_line(run("inspect", f"oci:{layout}"), contains="10000 images")
    assert _printable(line) and "more" in line
    line = assert_one_line(run("inspect", f"oci:{layout}:absent"), contains="absent")
    assert _printable(line) and "more" in line
    # an index of 1,000 platforms, none the host's
    manifest = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    platforms = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(manifest),
            "platform": {"os": "linux", "architecture": f"arch{ESC}{i}"},
        }
        for i in range(1000)
    ]
    many = put_blob(layout, json.dumps({"schemaVersion": 2, "manifests": platforms}).encode())
    index["manifests"] = [{"mediaType": OCI_INDEX, **many, "annotations": {REF_NAME: "many"}}]
    (layout / "index.json").write_text(json.dumps(index))
    line = assert_one_line(run("inspect", f"oci:{layout}:many"), contains="platforms")
    assert _printable(line) and "995 more" in line


def test_inspect_json_escapes_terminal_controls(tmp_path: Path) -> None:
    labels = {"csi": f"{CSI}2J", "rlo": f"{RLO}gpj.exe", "esc": f"{ESC}[2J", "del": "\x7f"}
    write_layout(
        tmp_path / "l", [tar_bytes([file("a")])], config_extra={"config": {"Labels": labels}}
    )
    text = _stdout(run("inspect", f"oci:{tmp_path / 'l'}:t"))
    assert all(c.isprintable() or c == "\n" for c in text), text
    assert json.loads(text)["labels"] == labels  # the same values, escaped as JSON allows


def test_every_error_line_is_printable(tmp_path: Path) -> None:
    """What the user typed (a reference from a script's variable) and what the system says
    about it (an OSError's file name) are printed escaped too."""
    result = run("inspect", f"oci:{tmp_path}/absent-{ESC}[2J\rfake ok")
    line = assert_one_line(result)
    assert _printable(line) and "\\x1b[2J\\rfake ok" in line


# -- the engine ------------------------------------------------------------------------------


@pytest.fixture
def short_engine_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine may prepare for 2 s, stay silent 1 s, must move 256 KiB/s on average, and
    load at least 64 MiB/s."""
    monkeypatch.setattr(daemon, "PREPARE", 2.0, raising=False)
    monkeypatch.setattr(daemon, "IDLE", 1.0, raising=False)
    monkeypatch.setattr(daemon, "MIN_RATE", 256 << 10, raising=False)
    monkeypatch.setattr(daemon, "LOAD_RATE", 64 << 20, raising=False)
    monkeypatch.setattr(daemon, "VERSION_SECONDS", 2.0, raising=False)


@pytest.fixture
def fake_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Callable[[Request], None]], Hostile]]:
    """Start a fake engine answering with the given app; DOCKER_HOST points at it."""
    started: list[Hostile] = []

    def start(app: Callable[[Request], None]) -> Hostile:
        engine = Hostile(app, unix=str(tmp_path / f"engine{len(started)}.sock"))
        engine.__enter__()
        started.append(engine)
        monkeypatch.setenv("DOCKER_HOST", engine.docker_host)
        return engine

    yield start
    for engine in started:
        engine.__exit__(None, None, None)


def _stall(r: Request) -> None:
    r.server.hostile.stopped.wait(MAX_TRICKLE)
    r.close_connection = True


def _timed(*args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = run(*args)
    return result, time.monotonic() - started


@pytest.mark.usefixtures("short_engine_deadlines")
def test_a_stalled_or_trickling_save_ends_in_one_line(fake_engine, tmp_path: Path) -> None:
    fake_engine(_stall)
    result, took = _timed("copy", "-q", "docker-daemon:app:1", f"oci:{tmp_path}/o:t")
    assert_one_line(result, contains="engine")
    assert took < 10 and "sent nothing within 2 s" in result.stderr, result.stderr
    fake_engine(lambda r: r.trickle_body(1 << 20))
    result, took = _timed("copy", "-q", "docker-daemon:app:1", f"oci:{tmp_path}/o:t")
    assert_one_line(result, contains="too slow")
    assert took < 10 and not (tmp_path / "o").exists()


def test_the_engines_error_is_bounded_and_quoted(fake_engine) -> None:
    def flood(r: Request) -> None:
        r.stream(500, (b"A" * MB for _ in range(100)))

    fake_engine(flood)
    tracemalloc.start()
    try:
        result = run("inspect", "docker-daemon:app:1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = assert_one_line(result, contains="engine says")
    assert len(line) < 1000 and peak < 16 * MB, peak
    message = json.dumps({"message": f"no{ESC}[2J\r\nsuch image: {'q' * 50_000}"}).encode()
    fake_engine(lambda r: r.answer(404, message))
    line = assert_one_line(run("inspect", "docker-daemon:app:1"), contains="such image")
    assert _printable(line) and len(line) < 1000


def _versioned(then: Callable[[Request], None]) -> Callable[[Request], None]:
    """An engine that answers what version it is (as every engine does, before a copy
    loads into it), and does ``then`` with anything else."""

    def app(r: Request) -> None:
        if r.command == "GET" and r.path.endswith("/version"):
            r.answer(200, b'{"Version":"20.10.24","ApiVersion":"1.41"}')
            return
        then(r)

    return app


def _read_then(then: Callable[[Request], None]) -> Callable[[Request], None]:
    def app(r: Request) -> None:
        if r.command == "POST":
            r.read_body()
        then(r)

    return _versioned(app)


def _events_forever(r: Request) -> None:
    event = b'{"status":"Loading layer","progressDetail":{"current":1,"total":2}}\n'
    r.stream(200, _paced(event), {"Content-Type": "application/json"})


def _paced(event: bytes) -> Iterator[bytes]:
    for _ in range(int(MAX_TRICKLE / 0.1)):
        yield event
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("app", "says"),
    [
        (_read_then(_stall), "silent"),
        (_versioned(lambda r: r.read_body_slowly()), "too slow"),
        (_read_then(_events_forever), "within"),
    ],
    ids=["reads-then-stalls", "reads-slowly", "answers-forever"],
)
@pytest.mark.usefixtures("short_engine_deadlines")
def test_a_load_the_engine_stalls_ends_in_one_line(
    fake_engine, tmp_path: Path, app: Callable[[Request], None], says: str
) -> None:
    write_layout(tmp_path / "l", [tar_bytes([file("a", os.urandom(2 * MB))])], compression="none")
    fake_engine(app)
    result, took = _timed("copy", "-q", f"oci:{tmp_path / 'l'}:t", "docker-daemon:app:1")
    assert_one_line(result, contains=says)
    assert took < 15, took


@pytest.mark.usefixtures("short_engine_deadlines")
def test_an_engine_that_never_answers_ends_before_the_source_is_read(
    fake_engine, tmp_path: Path
) -> None:
    write_layout(tmp_path / "l", [tar_bytes([file("a")])])
    fake_engine(_stall)
    result, took = _timed("copy", "-q", f"oci:{tmp_path / 'l'}:t", "docker-daemon:app:1")
    assert_one_line(result, contains="docker-daemon:app:1: docker engine at")
    assert "no answer" in result.stderr and took < 15, took


def test_a_load_event_error_is_one_quoted_line(fake_engine, tmp_path: Path) -> None:
    write_layout(tmp_path / "l", [tar_bytes([file("a")])])
    error = json.dumps({"error": f"bad{ESC}[2J\rlayer {'e' * 100_000}"}).encode()
    fake_engine(_read_then(lambda r: r.answer(200, b'{"status":"x"}\n' + error + b"\n")))
    line = assert_one_line(run("copy", "-q", f"oci:{tmp_path / 'l'}:t", "docker-daemon:a:1"))
    assert "bad" in line and _printable(line) and len(line) < 1000


# -- tools -------------------------------------------------------------------------------------


def _fake_tool(directory: Path, name: str, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    directory.mkdir(exist_ok=True)
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")


def test_a_tool_flooding_stderr_costs_no_memory(tmp_path: Path, monkeypatch) -> None:
    from ocikit.layer import squashfs

    flood = "head -c 100000000 /dev/zero | tr '\\0' 'a' >&2; printf '\\n\\033[2Jdisk\\rfull\\n' >&2"
    _fake_tool(tmp_path / "bin", "mksquashfs", flood + "; exit 1\n", monkeypatch)
    (tmp_path / "src").mkdir()
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as caught:
            squashfs.make(tmp_path / "src", tmp_path / "out.sqfs", mkfs_time=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "disk\\rfull" in message and "\\x1b[2J" in message, message
    assert _printable(message) and len(message) < 1000
    assert peak < 8 * MB, peak


def test_a_hung_tool_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No CPU, no I/O, no output for IDLE seconds: killed, with the children it waits for."""
    from ocikit import tools
    from ocikit.layer import squashfs

    monkeypatch.setattr(tools, "IDLE", 1.0, raising=False)
    _fake_tool(tmp_path / "bin", "mksquashfs", "echo starting; sleep 30\n", monkeypatch)
    (tmp_path / "src").mkdir()
    started = time.monotonic()
    with pytest.raises(InputError, match="mksquashfs stopped: no progress for 1 s"):
        squashfs.make(tmp_path / "src", tmp_path / "out.sqfs", mkfs_time=0)
    assert time.monotonic() - started < 10


def test_the_real_unsquashfs_judges_a_broken_squashfs(tmp_path: Path) -> None:
    from ocikit.layer import squashfs

    if shutil.which("unsquashfs") is None:
        pytest.skip("squashfs-tools missing")
    blob = tmp_path / "blob"
    blob.write_bytes(b"hsqs" + b"\x1b[2J" * 100)
    with pytest.raises(InputError) as caught:
        squashfs.extract(blob, tmp_path / "target")
    assert _printable(str(caught.value)) and len(str(caught.value)) < 1000


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="runc needs root")
def test_a_steps_output_is_bounded_and_escaped(tmp_path: Path) -> None:
    from ocikit.build import sandbox

    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "head", "tr", "printf", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    script = (
        "printf 'one\\033[2J\\rtwo\\r\\nthree\\n'; "
        "head -c 50000000 /dev/zero | tr '\\0' a; echo; printf '\\033]0;t\\007end'; exit 3"
    )
    lines: list[str] = []
    peaks: list[int] = []  # while the output streams (cleaning up after is not its cost)

    def on_line(line: str) -> None:
        lines.append(line)
        peaks.append(tracemalloc.get_traced_memory()[1])

    tracemalloc.start()
    try:
        result = sandbox.run_step(
            root,
            ["/bin/sh", "-c", script],
            env=["PATH=/bin"],
            cwd="/",
            uid=0,
            gid=0,
            on_line=on_line,
        )
    finally:
        tracemalloc.stop()
    peak = max(peaks)
    assert result.exit_code == 3
    assert lines[:3] == ["one\\x1b[2J", "two", "three"]  # CR ends a line, as a terminal shows
    assert lines[-1] == "\\x1b]0;t\\x07end"
    assert all(line.isprintable() and len(line) < 17_000 for line in lines)
    assert lines[3].endswith("... (50000000 bytes)")  # cut at 16 KiB, its size said
    assert sum(len(line) for line in lines) < 100_000 and peak < 8 * MB, peak
    assert all(len(line) <= 300 for line in result.tail)
