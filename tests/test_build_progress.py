"""``build``'s progress: the phases of each image reported in order (base, imports, run
steps, layer writing, checking, output) with byte counts where they are known, ``end``
called once even when the build fails, results the same with and without a reporter; on the
command line, a bar on a terminal that log and step lines do not garble, and no escape code
at all when stderr is not a terminal or with ``-q``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from ocikit.build import BuildOptions, build, load_recipe
from ocikit.errors import OcikitError
from support.cli import OCIKIT, ok
from support.layouts import directory, file, symlink, tar_bytes, write_layout

BUSYBOX = "/bin/busybox"
CAN_RUN = os.geteuid() == 0 and shutil.which("runc") is not None and os.path.exists(BUSYBOX)

RECIPE = """
images:
  app:
    from: oci:base:base
    imports:
      - {src: hello.txt, dest: /etc/hello.txt}
  tool:
    from: {built: app}
    imports:
      - {src: tool.txt, dest: /usr/share/tool.txt}
"""

RUN_RECIPE = """
images:
  app:
    from: oci:base:base
    imports:
      - {src: hello.txt, dest: /etc/hello.txt}
    run:
      - echo "hello from the step"
      - echo made > /etc/made
"""


class Recorder:
    """A ProgressReporter that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def begin(self, total: int, description: str) -> None:
        with self._lock:
            self.calls.append(("begin", (total, description)))

    def step(self, description: str) -> None:
        with self._lock:
            self.calls.append(("step", description))

    def advance(self, n: int) -> None:
        with self._lock:
            self.calls.append(("advance", n))

    def end(self) -> None:
        with self._lock:
            self.calls.append(("end", None))

    def phases(self) -> list[str]:
        return [d for kind, (_t, d) in self._begins()]  # type: ignore[misc]

    def _begins(self) -> list[tuple[str, tuple[int, str]]]:
        return [(k, a) for k, a in self.calls if k == "begin"]  # type: ignore[misc]

    def bytes_in(self, prefix: str) -> int:
        """Bytes advanced while the phase that starts with ``prefix`` was the current one."""
        current, total = "", 0
        for kind, arg in self.calls:
            if kind == "begin":
                current = arg[1]  # type: ignore[index]
            elif kind == "advance" and current.startswith(prefix):
                total += arg  # type: ignore[operator]
        return total


def project(where: Path, recipe: str = RECIPE, runnable: bool = False) -> Path:
    entries = [directory("etc"), file("etc/os-release", "ID=test\n" * 2000)]
    if runnable:
        entries += [
            directory("usr"),
            directory("usr/bin"),
            file("usr/bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
            symlink("usr/bin/sh", "busybox"),
            symlink("usr/bin/echo", "busybox"),
            symlink("bin", "usr/bin"),
            directory("tmp", 0o1777),
        ]
    write_layout(where / "base", [tar_bytes(entries)], ref="base")
    (where / "hello.txt").write_text("hello\n")
    (where / "tool.txt").write_text("tool\n")
    (where / "ocikit.yaml").write_text(recipe)
    return where


def run_build(where: Path, progress: Recorder | None, name: str = "out") -> list[str]:
    recipe = load_recipe(where / "ocikit.yaml")
    options = BuildOptions(output=f"oci:{where / name}", cache_dir=str(where / f"cache-{name}"))
    result = build(recipe, options, progress)
    return [i.digest for i in result.images]


def in_order(phases: list[str], expected: list[str]) -> None:
    """Each of ``expected`` starts a phase, in this order (others may come between)."""
    at = 0
    for want in expected:
        while at < len(phases) and not phases[at].startswith(want):
            at += 1
        assert at < len(phases), f"no phase {want!r} (in order) in {phases}"
        at += 1


def test_the_phases_in_order_then_cached(tmp_path: Path) -> None:
    project(tmp_path)
    progress = Recorder()
    run_build(tmp_path, progress)
    phases = progress.phases()
    in_order(
        phases,
        [
            "[1/2] app (tar): base oci:",
            "[1/2] app (tar): imports",
            "[1/2] app (tar): writing layer",
            "[1/2] app (tar): checking",
            "[1/2] app (tar): output app",
            "[2/2] tool (tar): imports",
            "[2/2] tool (tar): writing layer",
            "[2/2] tool (tar): checking",
            "[2/2] tool (tar): output tool",
        ],
    )
    assert progress.calls[-1] == ("end", None)
    assert [k for k, _ in progress.calls].count("end") == 1, "ended once, at the end"
    assert progress.bytes_in("[1/2] app (tar): base") > 0, "the base's copy is counted"
    assert progress.bytes_in("[1/2] app (tar): writing layer") > 0, "the layer's bytes"
    assert progress.bytes_in("[1/2] app (tar): output") > 0, "the output's copy is counted"

    again = Recorder()
    run_build(tmp_path, again)
    phases = again.phases()
    in_order(phases, ["[1/2] app (tar): output app", "[2/2] tool (tar): output tool"])
    assert not [p for p in phases if "writing layer" in p or "checking" in p], phases
    assert again.calls[-1] == ("end", None)


def test_end_even_when_the_build_fails(tmp_path: Path) -> None:
    project(tmp_path, RECIPE.replace("oci:base:base", "oci:base:nowhere"))
    progress = Recorder()
    with pytest.raises(OcikitError):
        run_build(tmp_path, progress)
    assert progress.phases(), "the failing phase was begun"
    assert progress.calls[-1] == ("end", None)
    assert [k for k, _ in progress.calls].count("end") == 1


def test_the_reporter_changes_nothing(tmp_path: Path) -> None:
    project(tmp_path)
    with_it = run_build(tmp_path, Recorder(), "a")
    without = run_build(tmp_path, None, "b")
    assert with_it == without
    assert (tmp_path / "a" / "index.json").read_bytes() == (
        tmp_path / "b" / "index.json"
    ).read_bytes()


@pytest.mark.skipif(not CAN_RUN, reason="run steps need root and runc")
def test_run_steps_are_a_phase(tmp_path: Path) -> None:
    project(tmp_path, RUN_RECIPE, runnable=True)
    progress = Recorder()
    run_build(tmp_path, progress)
    in_order(
        progress.phases(),
        [
            "[1/1] app (tar): base oci:",
            "[1/1] app (tar): imports",
            "[1/1] app (tar): run",
            "[1/1] app (tar): run step 1/2",
            "[1/1] app (tar): run step 2/2",
            "[1/1] app (tar): writing layer",
            "[1/1] app (tar): checking",
            "[1/1] app (tar): output app",
        ],
    )
    assert progress.calls[-1] == ("end", None)


# -- the command line ------------------------------------------------------------------------


def test_no_escape_code_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    project(tmp_path)
    proc = ok("build", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert b"\x1b" not in proc.stderr and b"\x1b" not in proc.stdout
    assert b"app (tar): built (not in the cache) sha256:" in proc.stderr


def on_a_terminal(where: Path, *args: str) -> tuple[int, bytes, bytes]:
    """``ocikit build ARGS`` with stderr on a pseudo-terminal (stdout a pipe)."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTY_", "NO_COLOR"))}
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="40")
    proc = subprocess.Popen(
        [*OCIKIT, "build", "--cache-dir", str(where / "cache"), *args],
        cwd=where,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=300)
    finally:
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, stdout, b"".join(chunks)


def test_on_a_terminal_the_bar_and_intact_lines(tmp_path: Path) -> None:
    runnable = CAN_RUN
    project(tmp_path, RUN_RECIPE if runnable else RECIPE, runnable=runnable)
    code, stdout, stderr = on_a_terminal(tmp_path, "--json")
    assert code == 0, stderr.decode(errors="replace")
    data = json.loads(stdout)  # data on stdout stays pure JSON
    assert data["images"][0]["name"] == "app"
    assert b"\x1b[" in stderr, "a bar was drawn"
    assert b"app (tar): " in stderr
    text = stderr.decode(errors="replace").replace("\r\n", "\n")
    if runnable:
        lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in text.split("\n")]
        assert any(line.rstrip().endswith("app | hello from the step") for line in lines), text


def test_on_a_terminal_quiet_is_silent(tmp_path: Path) -> None:
    project(tmp_path)
    code, stdout, stderr = on_a_terminal(tmp_path, "-q")
    assert code == 0, stderr.decode(errors="replace")
    assert stderr == b"" and stdout == b""


def test_log_lines_intact_on_a_terminal(tmp_path: Path) -> None:
    project(tmp_path)
    code, _stdout, stderr = on_a_terminal(tmp_path)
    assert code == 0, stderr.decode(errors="replace")
    text = stderr.decode(errors="replace").replace("\r\n", "\n")
    clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    for name in ("app", "tool"):
        assert re.search(
            rf"(^|\n|\r){name} \(tar\): built \(not in the cache\) sha256:[0-9a-f]{{64}}\n", clean
        ), text


def test_a_phase_of_unknown_size_after_a_known_one() -> None:
    """The bar of a phase whose size is not known does not keep the last phase's total."""
    from ocikit.cli.progress import RichProgress

    bar = RichProgress()
    try:
        bar.begin(100, "base")
        bar.advance(40)
        bar.begin(0, "imports")
        [task] = bar._progress.tasks
        assert (task.description, task.total, task.completed) == ("imports", None, 0)
        assert bar.print("a line") is True
    finally:
        bar.end()
    assert bar.print("a line") is False, "no bar: the caller prints it"
    assert not bar._progress.tasks


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")
def test_each_layer_type_counts_as_an_image(tmp_path: Path) -> None:
    project(tmp_path)
    progress = Recorder()
    recipe = load_recipe(tmp_path / "ocikit.yaml")
    options = BuildOptions(
        output=f"oci:{tmp_path / 'out'}",
        cache_dir=str(tmp_path / "cache"),
        layer_types=("tar", "squashfs"),
    )
    build(recipe, options, progress)
    in_order(
        progress.phases(),
        [
            "[1/4] app (tar): base oci:",
            "[1/4] app (tar): output app",
            "[2/4] app (squashfs): base as squashfs",
            "[2/4] app (squashfs): writing layer",
            "[2/4] app (squashfs): checking",
            "[2/4] app (squashfs): output app-squashfs",
            "[3/4] tool (tar): output tool",
            "[4/4] tool (squashfs): writing layer",
            "[4/4] tool (squashfs): output tool-squashfs",
        ],
    )
    assert progress.calls[-1] == ("end", None)
