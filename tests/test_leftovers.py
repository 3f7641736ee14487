"""What a killed ``unpack`` or ``build`` leaves is reclaimed, like a killed copy's (see
test_faults.py): the staging beside an unpack target, a tarball import's spool and a squashfs
layer's work in ``$TMPDIR``, half-extracted base layers in a build cache. Each process is
killed with SIGKILL while it works, then the next run (or ``ocikit gc``) must leave nothing
but results."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from support.cli import OCIKIT, ok
from support.layouts import file, tar_bytes, write_layout

MiB = 1 << 20


def _size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"{what} ended before it could be killed"
        assert time.monotonic() < deadline, f"{what} never got there"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _big_layer() -> bytes:
    """Slow enough to extract that a kill lands in the middle: many files of zeros."""
    return tar_bytes([file(f"d/f{i}", bytes(256 << 10)) for i in range(800)])


def test_a_killed_unpack_leaves_nothing_for_long(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, [_big_layer()], compression="none")
    parent = tmp_path / "out"
    parent.mkdir()
    proc = subprocess.Popen(
        [*OCIKIT, "unpack", "-q", f"oci:{layout}:t", str(parent / "root")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def extracting() -> bool:
        return any(p.is_dir() and any(p.rglob("f1*")) for p in parent.iterdir() if p.name != "root")

    _kill_when(proc, extracting, "unpack")
    assert os.listdir(parent), "nothing was staged"
    ok("unpack", "-q", f"oci:{layout}:t", str(parent / "again"))
    assert sorted(os.listdir(parent)) == ["again"]  # the dead staging went


def test_a_killed_tarball_import_is_reclaimed_by_gc(tmp_path: Path) -> None:
    """A tarball import is spooled in $TMPDIR while the build reads it."""
    project = tmp_path / "project"
    project.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(400):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 512 << 10
            tar.addfile(info, io.BytesIO(bytes(info.size)))
    (project / "big.tar").write_bytes(buf.getvalue())
    (project / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: scratch\n    imports: [{src: big.tar, dest: /}]\n"
    )
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(
        [*OCIKIT, "build", "-q", "--cache-dir", str(tmp_path / "cache"), "-f", "ocikit.yaml"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    _kill_when(proc, lambda: _size(tmpdir) > 8 * MiB, "the import")
    assert os.listdir(tmpdir)
    ok("gc", "-q", env=env)
    assert os.listdir(tmpdir) == []


def test_ctrl_c_while_the_program_loads_is_one_line_and_130(tmp_path: Path) -> None:
    """The program used to spend its first 0.4 s importing everything; a Ctrl-C there printed
    Python's traceback. It is one line and exit 130 (or, before the interpreter is up, the
    signal's default action)."""
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("a", "a\n")])])
    for delay in (0.3, 0.4, 0.5, 0.8):  # the old program was still importing until ~0.45 s
        proc = subprocess.Popen(
            [
                str(Path(OCIKIT[0]).parent / "ocikit"),
                "copy",
                "-q",
                f"oci:{layout}:t",
                f"oci:{tmp_path / f'out{delay}'}:t",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err, err.decode()
        # -SIGINT: the signal came before the interpreter was up (a shell shows 130 too)
        assert proc.returncode in (0, 130, -signal.SIGINT), (delay, proc.returncode, err)
        if proc.returncode == 130:
            assert len(err.decode().strip().splitlines()) == 1, err


def test_ctrl_c_during_the_imports_of_the_command_line(monkeypatch, capsys) -> None:
    """The console script catches an interrupt while the command line is imported."""
    import builtins

    import ocikit.cli

    real_import = builtins.__import__

    def interrupted(name: str, *args: object, **kw: object) -> object:
        if name == "main" or name.endswith("cli.main"):
            raise KeyboardInterrupt
        return real_import(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.delitem(__import__("sys").modules, "ocikit.cli.main", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    try:
        ocikit.cli.run()
    except SystemExit as e:
        assert e.code == 130
    else:
        raise AssertionError("run() went on after an interrupt")
    assert capsys.readouterr().err == "ocikit: interrupted\n"
