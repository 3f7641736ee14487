"""How run steps fail, with runc: a failing command in a script fails the step (``sh -e``),
stdout and stderr arrive as the step wrote them (one pipe), one log per build of an image's
steps (named, bounded in number and size), a root without the shell (``from: scratch``) or
a runtime that cannot start is one line, and every step error names its command."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ocikit.build import cache as cache_mod
from ocikit.build.cache import Cache
from support.cli import OCIKIT, ocikit, ok
from test_run import busybox_base

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run steps need root")

RECIPE = """
images:
  script:
    from: oci:base:base
    run: |
      echo before
      false
      echo after > /root/after
  items:
    from: oci:base:base
    run:
      - echo first
      - false; echo same-item
      - echo never
  given-shell:
    from: oci:base:base
    shell: [/bin/sh, -c]
    run: |
      false
      echo given > /root/given
  interleaved:
    from: oci:base:base
    run: >-
      i=0; while test $i -lt 300; do echo out$i; echo err$i >&2; i=$((i+1)); done; exit 4
  empty:
    from: scratch
    run: echo hi
  other-shell:
    from: oci:base:base
    shell: [/bin/bash, -c]
    run: echo hi
  shell-out:
    from: oci:base:base
    run:
      - rm /usr/bin/sh && ln -s ../../../../../../nowhere/sh /usr/bin/sh
      - echo never
  deep-and-odd:
    from: oci:base:base
    run: >-
      mkdir -p /root/deep && cd /root/deep &&
      i=0; while test $i -lt 1500; do mkdir d && cd d; i=$((i+1)); done;
      echo bottom > f; printf 'x' > "/root/odd-$(printf 'a\\377b')"
  too-deep:
    from: oci:base:base
    run: >-
      mkdir -p /root/deep && cd /root/deep &&
      i=0; while test $i -lt 1500; do mkdir d && cd d; i=$((i+1)); done;
      p=e; i=0; while test $i -lt 600; do p=$p/e; i=$((i+1)); done; mkdir -p $p
  not-a-dir:
    from: oci:base:base
    config: {working_dir: /etc/passwd}
    run: echo hi
"""

LOG_RE = re.compile(r"\(log: ([^)]*)\)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("steps")
    busybox_base(where)
    (where / "ocikit.yaml").write_text(RECIPE)
    return where


def build(project: Path, target: str, cache: str = "cache"):  # type: ignore[no-untyped-def]
    return ocikit("build", "--cache-dir", str(project / cache), "--target", target, cwd=project)


def last_line(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr.decode(errors="replace")
    err = proc.stderr.decode()
    assert "Traceback" not in err
    return err.strip().splitlines()[-1].removeprefix("ocikit: error: ")


def test_a_failing_command_fails_the_step(project: Path) -> None:
    message = last_line(build(project, "script"))
    assert message.startswith("images.script.run ('echo before\\nfalse\\n")
    assert "failed with exit code 1" in message
    message = last_line(build(project, "items"))
    assert message.startswith("images.items.run[1] ('false; echo same-item') failed with exit")
    assert "same-item" not in message.split("):", 1)[1], "the item stopped at false"
    # a shell the recipe gives is used as given
    ok("build", "--cache-dir", str(project / "cache"), "--target", "given-shell", cwd=project)


def test_output_in_the_order_written(project: Path) -> None:
    proc = build(project, "interleaved")
    message = last_line(proc)
    want = [w for i in range(300) for w in (f"out{i}", f"err{i}")]
    streamed = [
        line.removeprefix("interleaved | ")
        for line in proc.stderr.decode().splitlines()
        if line.startswith("interleaved | ")
    ]
    assert streamed == want
    assert "exit code 4" in message and message.endswith("out298 | err298 | out299 | err299")
    [log] = LOG_RE.findall(message)
    logged = [x for x in Path(log).read_text().splitlines() if not x.startswith("--- ")]
    assert logged == want


def test_one_log_per_run_named_by_recipe_and_image(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    busybox_base(other)
    (other / "ocikit.yaml").write_text(
        "images:\n  script:\n    from: oci:base:base\n    run: echo from-other; exit 5\n"
    )
    cache = str(project / "cache")
    first = LOG_RE.findall(last_line(build(project, "script")))[0]
    second = LOG_RE.findall(last_line(build(project, "script")))[0]
    mine = LOG_RE.findall(
        last_line(ocikit("build", "--cache-dir", cache, "--target", "script", cwd=other))
    )[0]
    assert len({first, second, mine}) == 3, "one log per run"
    for log in (first, second, mine):
        assert Path(log).parent == project / "cache" / "logs"
        assert re.fullmatch(
            r"ocikit-[0-9a-f]{8}-script-tar-\d{8}T\d{6}Z-\d+(-\d+)?\.log", Path(log).name
        )
    assert Path(first).name[:16] != Path(mine).name[:16], "the recipes are told apart"
    assert "from-other" in Path(mine).read_text()
    assert "from-other" not in Path(second).read_text()
    assert Path(second).read_text().count("--- images.script.run") == 1


def test_logs_are_bounded(tmp_path: Path) -> None:
    store = Cache(tmp_path)
    try:
        for i in range(cache_mod.LOGS_PER_IMAGE + 5):
            path, log = store.open_log("r-0123abcd", "app", "tar")
            log.write(f"old {i}\n")
            log.close()
            os.utime(path, (time.time() - 1000 + i, time.time() - 1000 + i))
        path, log = store.open_log("r-0123abcd", "other", "tar")
        log.write("x" * (cache_mod.LOG_LIMIT - 10) + "\n")
        log.write("y" * 100 + "\n")
        log.write("z" * 100 + "\n")
        log.close()
        size = path.stat().st_size
        assert cache_mod.LOG_LIMIT <= size < cache_mod.LOG_LIMIT + 400
        text = path.read_bytes()[cache_mod.LOG_LIMIT - 20 :].decode()
        assert "cut" in text and "z" not in text
        path, log = store.open_log("r-0123abcd", "app", "tar")
        log.close()
        kept = sorted(p for p in (tmp_path / "logs").iterdir() if "-app-" in p.name)
        assert len(kept) == cache_mod.LOGS_PER_IMAGE
        assert path in kept and path.read_text() == ""
        texts = sorted(p.read_text() for p in kept if p != path)
        n = cache_mod.LOGS_PER_IMAGE
        assert texts == sorted(f"old {i}\n" for i in range(6, n + 5)), "the newest kept"
        assert (tmp_path / "logs" / path.name).exists()
    finally:
        store.close()


def test_a_root_without_the_shell(project: Path) -> None:
    for target, shell in (("empty", "/bin/sh"), ("other-shell", "/bin/bash")):
        proc = build(project, target)
        err = proc.stderr.decode()
        message = last_line(proc)
        assert f"images.{target}.run: the image has no {shell}" in message, message
        assert "shell:" in message
        assert "runc" not in err and "level=error" not in err, err
    # a shell made a symlink out of the root, by a step: it is looked for inside the root
    message = last_line(build(project, "shell-out"))
    assert message.startswith("images.shell-out.run[1]: the image has no /bin/sh"), message


def test_a_runtime_that_cannot_start(project: Path) -> None:
    proc = build(project, "not-a-dir")
    err = proc.stderr.decode()
    message = last_line(proc)
    assert message.startswith("images.not-a-dir.run ('echo hi'): runc could not start the step")
    assert "not a directory" in message
    assert err.count("not a directory") == 1, err


def test_an_interrupted_step_is_killed(project: Path, tmp_path: Path) -> None:
    """SIGINT while a step runs (a detached container, not in the build's process group):
    the build kills it, says so and exits 130, promptly."""
    marker = str(3000 + os.getpid() % 1000)
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  slow:\n    from: oci:base:base\n"
        f"    run: echo started > /mnt/out/started; sleep {marker}\n"
        "    binds: [{src: out, dest: /mnt/out, rw: true}]\n"
    )
    os.symlink(project / "base", tmp_path / "base")
    (tmp_path / "out").mkdir()
    build = subprocess.Popen(
        [*OCIKIT, "build", "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            if (tmp_path / "out" / "started").exists() or build.poll() is not None:
                break
            time.sleep(0.05)
        assert (tmp_path / "out" / "started").exists(), "the step never started"
        build.send_signal(signal.SIGINT)
        _out, err = build.communicate(timeout=20)
        assert build.returncode == 130 and err.decode().endswith("ocikit: error: interrupted\n")
        assert not _sleepers(marker), "the step still runs"
    finally:
        build.kill()
        for pid in _sleepers(marker):
            os.kill(pid, signal.SIGKILL)


def _sleepers(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                found.append(int(pid))
    return found


def test_what_a_step_may_leave_never_crashes_the_build(project: Path) -> None:
    """1,500 nested directories (deeper than Python's recursion) and a name that is not
    UTF-8: a layer of either type holds them. 2,100 (a path of 4,200 bytes, more than Linux
    takes): refused in one line, for both types. Either way the build's private directories
    are removed."""
    cache = str(project / "deep-cache")
    for layer_type in ("tar", "squashfs"):
        args = ("build", "--layer-type", layer_type, "--cache-dir", cache, "--target")
        proc = ocikit(*args, "deep-and-odd", cwd=project)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        message = last_line(ocikit(*args, "too-deep", cwd=project))
        assert "name-too-long" in message or "mksquashfs skips paths" in message, message
    leftovers = [n for n in os.listdir(cache) if n.startswith(".ocikit-")]
    assert leftovers == []


def test_every_step_s_container_is_deleted(project: Path, tmp_path: Path) -> None:
    """Three steps: each stopped container is deleted (its cgroups, its state) while the
    build goes on, and all of them before the build ends, the step's directory with them."""
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  three:\n    from: oci:base:base\n"
        "    run: [echo one > /root/1, echo two > /root/2, echo three > /root/3]\n"
    )
    os.symlink(project / "base", tmp_path / "base")
    cache = tmp_path / "cache"
    build = subprocess.Popen(
        [*OCIKIT, "build", "-q", "--cache-dir", str(cache)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err.decode()
    prefix = f"ocikit-{build.pid}-"
    top = Path("/sys/fs/cgroup")  # the container's cgroups: there (v2) or a level down (v1)
    tops = [d for d in top.iterdir() if d.is_dir()]
    left = [str(d) for d in [*tops, *(d for t in tops for d in t.iterdir())] if prefix in d.name]
    assert left == [], left
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".ocikit-tmp-")]
