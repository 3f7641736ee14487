"""``run`` steps that try to reach the host through what ocikit does after them, and bases and
caches that used to break every step.

A step runs as root in a container whose root is an overlay; after it, ocikit removes the
mount points the runtime made, reads the upper directory into a layer (or prepares it for
mksquashfs), and reads ``/etc/passwd`` and ``/etc/group`` for the next step's user. Each hostile
step below plants a symlink, a fifo or a device where ocikit later removes, reads, clamps or
opens something; a sentinel tree on the host (outside the project and the cache) must come
out unchanged, and the build must either succeed with the layer the step asked for or fail
with one line (exit 2), never hang. The layer tests swap a file between the walk and the read
in-process (nothing in a finished step can race ocikit, so only a test can).

Bases: a layer listed twice, with another layer between the copies (by hand) or not (a real
``docker save``'s symlinked ``layer.tar``), must give the root filesystem ``ocikit unpack``
gives; a relative ``--cache-dir`` with ``,`` and ``:`` in it must work.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.archives import Archive
from support.cli import OCIKIT, assert_one_line_error, ocikit, ok
from support.dockerd import BUSYBOX
from support.layouts import (
    Entry,
    directory,
    file,
    opaque,
    read_entries,
    symlink,
    tar_bytes,
    whiteout,
    write_layout,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run steps need root")

APPLETS = ("sh", "cat", "echo", "id", "ln", "ls", "mkdir", "mkfifo", "mknod", "mv", "rm", "touch")
PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\n"
HOUR = 3600


def busybox_entries() -> list[Entry]:
    """A usrmerged busybox root (bin -> usr/bin) with a user ``app``."""
    return [
        directory("etc"),
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        directory("root", mode=0o700),
        directory("home"),
        directory("home/app", uid=1000, gid=1000),
        directory("usr"),
        directory("usr/bin"),
        file("usr/bin/busybox", Path(BUSYBOX).read_bytes(), mode=0o755),
        *(symlink(f"usr/bin/{a}", "busybox") for a in APPLETS),
        symlink("bin", "usr/bin"),
    ]


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about a tree that a step could change through ocikit: names, types, modes,
    owners, mtimes, contents, link targets (nothing followed)."""
    out: dict[str, tuple[Any, ...]] = {}

    def visit(path: Path, rel: str) -> None:
        st = os.lstat(path)
        what: Any = None
        if stat.S_ISREG(st.st_mode):
            what = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            what = os.readlink(path)
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_rdev, what)
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                visit(path / name, f"{rel}/{name}")

    visit(root, ".")
    return out


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The sentinel: a tree outside the project and the cache, with an empty directory (what
    the mount-point cleanup removes), a file (what a read or a clamp would take), a fifo (a
    read would hang) and a subdirectory; every mtime an hour ago (clamps go to 0)."""
    root = tmp_path / "host"
    (root / "b").mkdir(parents=True)
    (root / "dir").mkdir()
    (root / "dir" / "keep").write_text("keep\n")
    (root / "secret").write_text("host secret\n")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    then = int(os.stat(root).st_mtime) - HOUR
    for path in [root / "b", root / "dir" / "keep", root / "dir", root / "secret", root / "fifo"]:
        os.utime(path, (then, then), follow_symlinks=False)
    os.utime(root, (then, then))
    return root


def project_with(tmp_path: Path, recipe: str, layers: list[bytes] | None = None) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_layout(project / "base", layers or [tar_bytes(busybox_entries())], ref="base")
    (project / "inputs").mkdir()
    (project / "inputs" / "in.txt").write_text("bind content\n")
    (project / "hello.txt").write_text("hello\n")
    (project / "ocikit.yaml").write_text(recipe)
    return project


def last_layer_blob(layout: Path, tag: str) -> Path:
    """The file of the last layer of the image ``tag`` of a layout."""
    index = json.loads((layout / "index.json").read_bytes())
    [desc] = [
        d
        for d in index["manifests"]
        if d["annotations"]["org.opencontainers.image.ref.name"] == tag
    ]
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_bytes())
    return blobs / manifest["layers"][-1]["digest"].split(":")[1]


def last_layer(layout: Path, tag: str) -> dict[str, tarfile.TarInfo]:
    data = last_layer_blob(layout, tag).read_bytes()
    return {e.name.rstrip("/"): e for e in read_entries(gzip.decompress(data))}


def squashfs_names(layout: Path, tag: str, tmp_path: Path) -> set[str]:
    blob = last_layer_blob(layout, tag)
    out = tmp_path / f"unsquashed-{tag}"
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", str(out), str(blob)], check=True, capture_output=True
    )
    names = set()
    for current, dirs, files in os.walk(out):
        for name in [*dirs, *files]:
            names.add(os.path.relpath(os.path.join(current, name), out))
    return names


# ------------------------------------------------------------------------ hostile steps

HOSTILE = """
images:
  bind-parent:
    from: oci:base:base
    binds:
      - {{src: inputs, dest: /a/b}}
      - {{src: inputs/in.txt, dest: /c/in.txt}}
    run: mv /a /a2 && ln -s {host} /a
  planted:
    from: oci:base:base
    imports:
      - {{src: hello.txt}}
    run:
      - mv /ocikit /o2 && ln -s {host} /ocikit && ln -s {host} /sys
      - ln -s {host}/secret /etc/secret-link && ln -s {host}/dir /etc/dir-link
      - ln -s {host}/fifo /etc/fifo-link && mkfifo /etc/fifo && mknod /etc/null c 1 3
      - mkdir /etc/sub && ln -s {host}/dir /etc/sub/dir && touch /etc/sub/dir-sibling
"""


def test_hostile_steps_never_touch_the_host(tmp_path: Path, host: Path) -> None:
    """A bind's parent replaced by a symlink to the host (the mount-point cleanup used to
    follow it and remove the host's empty directory); mount points (``/ocikit``, ``/sys``)
    replaced by symlinks to the host; symlinks to a host file, directory and fifo; a fifo and
    a device node of the step's own. As tar and squashfs layers (the squashfs preparation
    removes mount points and clamps every mtime to 0). The host is unchanged; the layers hold
    what the step left, symlinks as symlinks, and never the runtime's mount points."""
    project = project_with(tmp_path, HOSTILE.format(host=host))
    before = snapshot(host)
    proc = ocikit(
        "build",
        "-q",
        "--cache-dir",
        str(project / "cache"),
        "--layer-type",
        "tar",
        "--layer-type",
        "squashfs",
        cwd=project,
    )
    assert snapshot(host) == before, "the host's sentinel tree changed"
    assert proc.returncode == 0, proc.stderr.decode()
    # the moved mount point stays where the step put it; the symlink is a symlink; the
    # file bind's mount point and its directory are left out
    bind = last_layer(project / "oci", "bind-parent")
    assert set(bind) - {"a2/.wh..wh..opq"} == {"a", "a2", "a2/b"}  # a renamed directory
    assert bind["a"].issym() and bind["a"].linkname == str(host)
    planted = last_layer(project / "oci", "planted")
    assert "ocikit" not in planted and "sys" not in planted, "the runtime's mount points"
    assert planted["etc/secret-link"].issym() and planted["etc/secret-link"].linkname == (
        f"{host}/secret"
    )
    assert planted["etc/fifo"].isfifo() and planted["etc/fifo-link"].issym()
    assert planted["etc/null"].ischr() and planted["etc/sub/dir"].issym()
    assert {"o2", "o2/imports", "o2/imports/hello.txt"} <= set(planted)
    sqfs = squashfs_names(project / "oci", "planted-squashfs", tmp_path)
    assert "ocikit" not in sqfs and "sys" not in sqfs, "tar and squashfs leave out the same"
    assert {"etc/secret-link", "etc/fifo", "etc/null", "etc/sub/dir", "o2/imports"} <= sqfs
    assert {"a", "a2/b"} <= squashfs_names(project / "oci", "bind-parent-squashfs", tmp_path)


USER_TABLES = """
images:
  fifo-passwd:
    from: oci:base:base
    run: rm /etc/passwd && mkfifo /etc/passwd
  as-app:
    from: {built: fifo-passwd}
    config: {user: app}
    run: id
  ptmx-group:
    from: oci:base:base
    run: rm /etc/group && ln -s /dev/ptmx /etc/group
  as-root:
    from: {built: ptmx-group}
    run: echo never
  pty-group:
    from: oci:base:base
    run:
      - rm /etc/group && mknod /etc/group c 5 2
      - echo never
  linked-passwd:
    from: oci:base:base
    run: mv /etc/passwd /etc/passwd.real && ln -s ../etc/passwd.real /etc/passwd
  as-app-linked:
    from: {built: linked-passwd}
    config: {user: app}
    run: id -u > /home/app/id
"""


def run_bounded(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``ocikit ARGS`` that must end within a minute (a read of a fifo would hang forever)."""
    try:
        return subprocess.run(
            [*OCIKIT, *args], cwd=cwd, capture_output=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"ocikit {' '.join(args)} hung")


def test_user_tables_that_would_hang_or_read_a_device(tmp_path: Path) -> None:
    """``/etc/passwd`` and ``/etc/group`` are read twice before a step: by ocikit on the host
    (a user's name and groups) and by the runtime in the container (whoever the user is).
    A step leaves a fifo there, a symlink to the runtime's ``/dev/ptmx``, a pty master's
    device node: ocikit never opens them (on the host the device is the host's ptmx, and a
    read of either would hang the build), and the next step is refused with one line
    (exit 2) instead of a runtime hung on them. A symlink to a file of the image is followed
    inside the root."""
    project = project_with(tmp_path, USER_TABLES)
    cache = str(project / "cache")
    for target, message in (
        ("as-app", "images.as-app.run: /etc/passwd is a fifo, not a file"),
        ("as-root", "images.as-root.run: /etc/group leads into /dev, which is the runtime's"),
        ("pty-group", "images.pty-group.run[1]: /etc/group is a character device"),
    ):
        proc = run_bounded("build", "-q", "--cache-dir", cache, "--target", target, cwd=project)
        assert_one_line_error(proc, contains=message)
    proc = run_bounded(
        "build", "-q", "--cache-dir", cache, "--target", "as-app-linked", cwd=project
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert last_layer(project / "oci", "as-app-linked")["home/app/id"].uid == 1000


# ------------------------------------------------------------------------ bases and caches

REPEATED = """
images:
  seen:
    from: oci:base:base
    run: cat /a /etc/motd > /seen && ls /d > /seen-d
"""


def repeated_base_layers() -> list[bytes]:
    """L0, L1, L0 again: L1 deletes ``a``, makes ``d`` opaque and changes ``etc/motd``; the
    second L0 brings ``a``, ``d/x`` and L0's motd back."""
    l0 = tar_bytes(
        [
            *busybox_entries(),
            file("a", "one\n"),
            file("etc/motd", "L0\n"),
            directory("d"),
            file("d/x", "x\n"),
        ]
    )
    l1 = tar_bytes(
        [whiteout("a"), directory("d"), opaque("d"), file("d/y", "y\n"), file("etc/motd", "L1\n")]
    )
    return [l0, l1, l0]


def test_a_layer_listed_twice_with_a_layer_between(tmp_path: Path) -> None:
    """A base listing one layer twice (docker save's symlinked layer.tar): every step used to
    fail ("conflicting lowerdir path"). Merging the copies would be wrong: the layer between
    changes the same paths. The step sees what ``ocikit unpack`` of the base gives, and the
    built image unpacks to the base's tree plus the step's files."""
    project = project_with(tmp_path, REPEATED, repeated_base_layers())
    proc = ocikit("build", "-q", "--cache-dir", str(project / "cache"), cwd=project)
    assert proc.returncode == 0, proc.stderr.decode()
    assert set(last_layer(project / "oci", "seen")) == {"seen", "seen-d"}
    ok("unpack", "oci:base:base", str(tmp_path / "base-root"), cwd=project)
    ok("unpack", "oci:oci:seen", str(tmp_path / "seen-root"), cwd=project)
    base, seen = tmp_path / "base-root", tmp_path / "seen-root"
    assert (base / "a").read_text() == "one\n" and sorted(os.listdir(base / "d")) == ["x", "y"]
    assert (seen / "seen").read_text() == "one\nL0\n", "what unpack gives: a and motd of L0"
    assert (seen / "seen-d").read_text() == "x\ny\n"
    after = snapshot(seen)
    for name in ("./seen", "./seen-d"):
        del after[name]
    before = snapshot(base)
    del after["."], before["."]  # the root's mtime: the step touched it
    assert after == before


def test_a_real_docker_save_with_a_symlinked_layer_tar(
    legacy_archive_rich: Archive, tmp_path: Path
) -> None:
    """``docker save`` of an image whose Dockerfile copies the same file twice: its second
    ``layer.tar`` is a symlink to the first. A step on it sees what ``ocikit unpack`` gives."""
    (tmp_path / "ocikit.yaml").write_text(
        f"""
images:
  seen:
    from: docker-archive:{legacy_archive_rich.path}
    run: cat /same.txt /d/n > /seen
"""
    )
    proc = ocikit("build", "-q", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    ok("unpack", f"docker-archive:{legacy_archive_rich.path}", str(tmp_path / "base-root"))
    ok("unpack", f"oci:{tmp_path / 'oci'}:seen", str(tmp_path / "seen-root"))
    seen = tmp_path / "seen-root"
    assert (seen / "seen").read_text() == "the same layer twice\nnew\n"
    after, before = snapshot(seen), snapshot(tmp_path / "base-root")
    del after["./seen"], after["."], before["."]
    assert after == before


def test_a_relative_cache_dir_with_separators_in_its_name(tmp_path: Path) -> None:
    """``--cache-dir`` relative to the working directory, with ``,`` and ``:`` (separators of
    overlayfs's options) in its name: steps used to fail ("mount point does not exist")."""
    project = project_with(tmp_path, REPEATED, repeated_base_layers())
    proc = ocikit("build", "-q", "--cache-dir", "odd,cache:dir", "-f", "ocikit.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (project / "odd,cache:dir" / "index.json").exists()
    assert set(last_layer(project / "oci", "seen")) == {"seen", "seen-d"}


# ------------------------------------------------------------------------ in-process: the reads


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    root = tmp_path / "upper"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "file").write_text("x\n")  # shorter than the host's secret
    (root / "etc" / "other").write_text("other\n")
    return root


def swapped_walk(monkeypatch: pytest.MonkeyPatch, upper: Path, replace: Any) -> None:
    """The upper directory's walk, with ``etc/file`` replaced right after the walk reported
    it (between its lstat and ocikit's read of it)."""
    from ocikit.build import rootfs

    real = rootfs.overlay_entries

    def walk(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in real(*args, **kwargs):
            if item[0].name == "etc/file":
                os.unlink(upper / "etc" / "file")
                replace(upper / "etc" / "file")
            yield item

    monkeypatch.setattr(rootfs, "overlay_entries", walk)


def write_upper(upper: Path) -> bytes:
    import io

    from ocikit.build.rootfs import write_upper_tar

    out = io.BytesIO()
    write_upper_tar(upper, out, base_top={"etc"}, mtime_max=0)
    return out.getvalue()


def test_a_file_replaced_by_a_symlink_to_the_host_is_never_read(
    upper: Path, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocikit.errors import InputError

    swapped_walk(monkeypatch, upper, lambda p: os.symlink(host / "secret", p))
    with pytest.raises(InputError, match="etc/file") as err:
        write_upper(upper)
    assert "host secret" not in str(err.value)


def test_a_file_replaced_by_a_fifo_never_hangs(
    upper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocikit.errors import InputError

    swapped_walk(monkeypatch, upper, lambda p: os.mkfifo(p))

    def hung(*_args: Any) -> None:
        raise TimeoutError("the layer's read of a fifo hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(InputError, match="etc/file"):
            write_upper(upper)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_squashfs_preparation_follows_nothing(upper: Path, host: Path) -> None:
    """Mount-point names and deeper paths planted as symlinks to the host: removed (the mount
    points, whatever they are) or kept as symlinks, their targets neither removed nor
    clamped; the rest clamped to the epoch."""
    from ocikit.build.rootfs import prepare_upper_for_squashfs

    os.symlink(host, upper / "ocikit")
    os.symlink(host, upper / "sys")
    (upper / "tmp").mkdir()
    (upper / "tmp" / "x").write_text("x")
    os.symlink(host / "secret", upper / "etc" / "secret-link")
    os.symlink(host / "dir", upper / "etc" / "dir-link")
    os.mkfifo(upper / "etc" / "fifo")
    before = snapshot(host)
    prepare_upper_for_squashfs(upper, {"etc"}, 0)
    assert snapshot(host) == before
    assert sorted(os.listdir(upper)) == ["etc"]
    for name in ("secret-link", "dir-link", "fifo", "file"):
        assert os.lstat(upper / "etc" / name).st_mtime == 0
    assert os.lstat(upper).st_mtime == 0


# ------------------------------------------------------------------------ killed builds

KILLED = """\
images:
  app:
    from: oci:base:base
    binds: [{src: inputs, dest: /in, rw: true}]
    run: echo started > /in/started; exec sleep {marker}
"""
AFTER = """\
images:
  other:
    from: oci:base:base
    run: echo later > /later
"""


def _mounts_under(path: Path) -> list[str]:
    real = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(real + "/")]


def _sleepers(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[:2] == [b"sleep", marker.encode()]:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("reclaimer", ["next-build", "gc"])
def test_a_killed_build_leaves_no_container_mount_or_directory(
    tmp_path: Path, reclaimer: str
) -> None:
    """kill -9 during a step: the container goes on running and its overlay stays mounted
    in the cache. The next build with a step (or ``ocikit gc CACHE``) kills the container,
    detaches the overlay and removes the run directory; nothing of a live build is touched."""
    marker = str(1000 + os.getpid() % 1000 + (reclaimer == "gc"))
    project = project_with(tmp_path, KILLED.replace("{marker}", marker))
    cache = project / "cache"
    build = subprocess.Popen(
        [*OCIKIT, "build", "-q", "--cache-dir", str(cache), "-f", "ocikit.yaml"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if (project / "inputs" / "started").exists() or build.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert (project / "inputs" / "started").exists(), "the step never started"
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=30)
        assert _sleepers(marker), "the step's container died with the build"
        assert _mounts_under(cache), "no overlay left mounted"
        if reclaimer == "gc":
            ok("gc", "-q", str(cache))
        else:
            (project / "ocikit.yaml").write_text(AFTER)
            ok("build", "-q", "--cache-dir", str(cache), "-f", "ocikit.yaml", cwd=project)
        assert not _sleepers(marker), "the container still runs"
        assert not _mounts_under(cache), "an overlay is still mounted in the cache"
        assert not [p.name for p in cache.iterdir() if p.name.startswith(".ocikit-tmp-")]
    finally:
        for pid in _sleepers(marker):
            os.kill(pid, signal.SIGKILL)
        for point in reversed(_mounts_under(cache)):
            subprocess.run(["umount", "-l", point], check=False)
