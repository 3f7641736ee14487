"""Builds are reproducible bit for bit, run steps included, for both layer types.

- One definition of what an entry of a layer carries, whatever the layer's type: a squashfs
  layer holds the xattrs, mtimes and kinds of file a tar layer of the same tree holds (no
  ``trusted.overlay.*`` bookkeeping of the step's overlay, no ``user.*``, no socket).
- Every tool ocikit runs gets a fixed environment: ``SOURCE_DATE_EPOCH`` in the user's
  environment does not reach mksquashfs (which refuses it beside ``-mkfs-time``).
- The same recipe (run steps, a ``build_only`` base and a ``built`` child, tar and
  squashfs layers) built in two checkouts, with other umasks, locales, time zones, file
  mtimes, temporary and cache directories gives the same manifest digests; another
  ``SOURCE_DATE_EPOCH`` other ones, the same one the same ones. Where digests differ, the
  assertion says what differs (``diffoscope`` of the first blobs that differ).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ocikit.errors import InputError
from ocikit.layer import squashfs
from ocikit.layer.overlay import overlay_entries
from ocikit.layer.squashfs_format import SquashfsImage
from ocikit.layer.squashfs_format import entries as squashfs_entries
from support.cli import ok
from support.layouts import read_entries
from support.reproducible import blob_path, digests, what_differs
from test_run import busybox_base

from conftest import in_ci

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run steps and trusted xattrs need root")

EPOCH = 1_700_000_000
SQUASHFS = "application/vnd.stacker.image.layer.squashfs+gzip"
# security.capability, VFS_CAP_REVISION_2 (effective): cap_net_bind_service permitted
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)

RECIPE = """
images:
  base:
    from: oci:base:base
    build_only: true
    run:
      - echo base > /etc/base-file && mkdir -p /srv/keep && echo kept > /srv/keep/k
  child:
    from: {built: base}
    imports:
      - {src: files, dest: /opt/files}
      - {src: tool.sh, dest: /usr/local/bin/tool.sh, mode: "0755"}
    binds:
      - {src: files, dest: /root/.cache/pip}
    run:
      - mkdir -p /var/made/deep && echo deep > /var/made/deep/f && echo x > /var/made/x
      - rm /etc/gone /srv/keep/k
      - rm -rf /data/old && mkdir /data/old && echo new > /data/old/g
      - echo data > /srv/keep/data && ln /srv/keep/data /srv/keep/data-link
      - ln /etc/base-file /etc/base-link && cp /opt/files/a /root/a-copy
      - echo tmp > /tmp/scratch && mkfifo /root/fifo && ln -s /var/made /root/made
      - cat /root/.cache/pip/sub/b > /root/.cache/from-bind
"""


def project(where: Path, umask: int, mtime: int, base: Path | None = None) -> None:
    """A checkout of the recipe and its inputs, written under ``umask``, imported files
    dated ``mtime``; the base layout copied from ``base`` (an input: the same bytes in every
    checkout), else made."""
    old = os.umask(umask)
    try:
        where.mkdir()
        if base is None:
            busybox_base(where)
        else:
            shutil.copytree(base, where / "base")
        (where / "ocikit.yaml").write_text(RECIPE)
        files = where / "files"
        (files / "sub").mkdir(parents=True)
        (files / "a").write_text("a\n")
        (files / "sub" / "b").write_text("b\n")
        os.link(files / "a", files / "sub" / "a-link")
        (where / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    finally:
        os.umask(old)
    for p in [*files.rglob("*"), files, where / "tool.sh"]:
        os.utime(p, (mtime, mtime))


def build(where: Path, cache: Path, epoch: int, umask: int, env: dict[str, str]) -> dict[str, Any]:
    """``ocikit build`` of both layer types as a user would run it: the CLI, under
    ``umask``, ``SOURCE_DATE_EPOCH`` and ``env`` in its environment."""
    old = os.umask(umask)
    try:
        out = ok(
            "build",
            "--json",
            "--cache-dir",
            str(cache),
            "--layer-type",
            "tar",
            "--layer-type",
            "squashfs",
            cwd=where,
            env={"SOURCE_DATE_EPOCH": str(epoch), **env},
        )
    finally:
        os.umask(old)
    return json.loads(out.stdout)


def test_same_recipe_same_digests(tmp_path: Path) -> None:
    """Two checkouts: other directories, umasks, locales, time zones, import mtimes,
    temporary and cache directories. The same SOURCE_DATE_EPOCH gives the same manifest
    digests for every image and both layer types; another one other digests, reproduced."""
    if in_ci():  # a failure must say what differs
        assert shutil.which("diffoscope"), "diffoscope-minimal must be installed in CI"
    setups = [  # imported files dated after the epoch, as a checkout's are: clamped
        (0o022, EPOCH + 1000, {"LC_ALL": "C", "TZ": "UTC"}),
        (0o077, EPOCH + 90000, {"LC_ALL": "C.UTF-8", "TZ": "Asia/Tokyo", "LANG": "C.UTF-8"}),
    ]
    busybox_base(tmp_path)
    runs = []
    for n, (umask, mtime, env) in enumerate(setups):
        where = tmp_path / f"checkout{n}"
        project(where, umask, mtime, tmp_path / "base")
        tmp = tmp_path / f"tmp{n}"
        tmp.mkdir()
        cache = where / f"cache-{n}"
        result = build(where, cache, EPOCH, umask, {**env, "TMPDIR": str(tmp)})
        runs.append((cache, result))
    first, second = digests(runs[0][1]), digests(runs[1][1])
    assert len(first) == 4, first
    assert first == second, what_differs(runs[0], runs[1])
    # another epoch: other digests; the same epoch again (another cache): the same ones
    other = tmp_path / "checkout0"
    moved = [build(other, other / f"cache-e{n}", EPOCH + 86400, 0o022, {}) for n in range(2)]
    assert digests(moved[0]) == digests(moved[1]), what_differs(
        (other / "cache-e0", moved[0]), (other / "cache-e1", moved[1])
    )
    changed = {d for _, _, d in digests(moved[0])}
    assert not changed & {d for _, _, d in first}


# -- one rule for what enters a layer, whatever its type ---------------------------------------


def tree_xattrs(root: Path) -> dict[str, dict[str, bytes]]:
    """Every path below ``root`` and its xattrs (none followed)."""
    out: dict[str, dict[str, bytes]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        names = os.listxattr(path, follow_symlinks=False)
        out[rel] = {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    return out


def unsquash(blob: Path, target: Path) -> Path:
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", str(target), str(blob)],
        check=True,
        capture_output=True,
    )
    return target


def squashfs_layer_entries(blob: Path) -> list[tuple[Any, ...]]:
    with open(blob, "rb") as f:
        image = SquashfsImage(f.fileno(), str(blob))
        return [_identity(e) for e in squashfs_entries(image)]


def _identity(e: Any) -> tuple[Any, ...]:
    """What a layer says of an entry (a ``TarEntry`` or a ``tarfile.TarInfo``)."""
    return (
        e.name.rstrip("/"),
        e.type,
        e.size,
        e.mode,
        e.uid,
        e.gid,
        int(e.mtime),
        e.linkname,
        e.devmajor,
        e.devminor,
    )


def xattrs_allowed(tree: dict[str, dict[str, bytes]], root: Path) -> list[str]:
    """What breaks the rule: only security.capability on regular files, only
    trusted.overlay.opaque=y on directories."""
    bad = []
    for rel, attrs in tree.items():
        st = os.lstat(root / rel)
        for name, value in attrs.items():
            if stat.S_ISREG(st.st_mode) and name == "security.capability":
                continue
            if stat.S_ISDIR(st.st_mode) and (name, value) == ("trusted.overlay.opaque", b"y"):
                continue
            bad.append(f"{rel}: {name}={value!r}")
    return bad


def hostile_tree(root: Path) -> None:
    """What a step's upper directory may hold: overlayfs's own xattrs, user xattrs, a file
    capability, an opaque mark and a bogus one, a socket, a whiteout, future mtimes."""
    (root / "d" / "opaque").mkdir(parents=True)
    (root / "d" / "bogus").mkdir()
    os.setxattr(root / "d" / "opaque", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "d" / "bogus", "trusted.overlay.opaque", b"x")
    os.setxattr(root / "d", "trusted.overlay.impure", b"y")
    os.setxattr(root, "trusted.overlay.uuid", os.urandom(16))
    (root / "d" / "f").write_text("f\n")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", os.urandom(20))
    os.setxattr(root / "d" / "f", "user.note", b"a note")
    (root / "d" / "cap").write_text("cap\n")
    os.setxattr(root / "d" / "cap", "security.capability", CAPABILITY)
    os.mknod(root / "d" / "gone", stat.S_IFCHR | 0o000, 0)
    os.setxattr(root / "d" / "gone", "trusted.overlay.origin", b"\x00")
    os.symlink("f", root / "d" / "link")
    os.link(root / "d" / "f", root / "d" / "hard")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "d" / "sock"))
    for path in [*root.rglob("*"), root]:
        os.utime(path, (EPOCH + 5000, EPOCH + 5000), follow_symlinks=False)
    os.utime(root / "d" / "f", (EPOCH - 10, EPOCH - 10))


def test_squashfs_holds_what_a_tar_layer_holds(tmp_path: Path) -> None:
    """The same tree as a tar layer's entries (``overlay_entries``) and as a squashfs
    layer (``squashfs.make``): the same entries, the same xattrs (a capability and the
    opaque mark only), nothing of overlayfs's bookkeeping, no user xattr, no socket."""
    tree = tmp_path / "tree"
    tree.mkdir()
    hostile_tree(tree)
    # the step's symlinks lead to the host: what they lead to is never touched
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "file").write_text("host\n")
    for path in (host / "dir", host / "file"):
        os.setxattr(path, "user.host", b"keep")
        os.setxattr(path, "trusted.overlay.origin", b"keep")
        os.utime(path, (EPOCH + 7000, EPOCH + 7000))
    os.symlink(host / "file", tree / "d" / "to-host-file")
    os.symlink(host / "dir", tree / "d" / "to-host-dir")
    before = {p: (tree_xattrs(p.parent)[p.name], os.stat(p).st_mtime) for p in host.iterdir()}
    tar = []
    tar_xattrs = {}
    for entry, _data, xattrs in overlay_entries(tree, mtime_max=EPOCH):
        tar.append(_identity(entry))
        if xattrs:
            tar_xattrs[entry.name] = xattrs
    blob = tmp_path / "layer.sqfs"
    squashfs.make(tree, blob, mkfs_time=EPOCH)
    assert squashfs_layer_entries(blob) == tar
    out = unsquash(blob, tmp_path / "out")
    found = tree_xattrs(out)
    assert xattrs_allowed(found, out) == []
    assert {k: v for k, v in found.items() if v} == {
        "d/opaque": {"trusted.overlay.opaque": b"y"},
        **{k: v for k, v in tar_xattrs.items()},
    }
    assert os.stat(out).st_mtime == EPOCH  # the layer's root, as every directory: clamped
    assert {p: (tree_xattrs(p.parent)[p.name], os.stat(p).st_mtime) for p in host.iterdir()} == (
        before
    )


def test_source_date_epoch_in_the_environment(tmp_path: Path) -> None:
    """SOURCE_DATE_EPOCH set (as reproducible-builds.org asks): a squashfs build succeeds
    (mksquashfs refuses it beside -mkfs-time: it must not see it), its mtimes clamped."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a").write_text("a\n")
    os.utime(tmp_path / "files" / "a", (EPOCH + 999, EPOCH + 999))
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: scratch\n    imports:\n      - {src: files, dest: /f}\n"
    )
    out = ok(
        "build",
        "--json",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--layer-type",
        "squashfs",
        cwd=tmp_path,
        env={"SOURCE_DATE_EPOCH": str(EPOCH)},
    )
    [image] = json.loads(out.stdout)["images"]
    manifest = json.loads(blob_path(tmp_path / "cache", image["digest"]).read_bytes())
    [layer] = manifest["layers"]
    assert layer["mediaType"] == SQUASHFS
    mtimes = {
        e[0]: e[6] for e in squashfs_layer_entries(blob_path(tmp_path / "cache", layer["digest"]))
    }
    assert mtimes == {"f": EPOCH, "f/a": EPOCH}


def layers_of(cache: Path, digest: str) -> list[dict[str, Any]]:
    return json.loads(blob_path(cache, digest).read_bytes())["layers"]


def test_run_step_layers_hold_no_overlay_bookkeeping(tmp_path: Path) -> None:
    """A run step's upper directory as a squashfs layer: no trusted.overlay.* xattr but the
    opaque mark (no uuid, impure, origin), and the same entries as the tar layer of the
    same steps."""
    project(tmp_path / "p", 0o022, EPOCH - 100)
    where = tmp_path / "p"
    cache = where / "cache"
    result = build(where, cache, EPOCH, 0o022, {})
    by = {(i["name"], i["layer_type"]): i["digest"] for i in result["images"]}
    for name in ("base", "child"):
        tar_layer = layers_of(cache, by[(name, "tar")])[-1]
        sq_layer = layers_of(cache, by[(name, "squashfs")])[-1]
        assert sq_layer["mediaType"] == SQUASHFS
        blob = blob_path(cache, sq_layer["digest"])
        out = unsquash(blob, tmp_path / f"out-{name}")
        found = tree_xattrs(out)
        assert xattrs_allowed(found, out) == [], name
        assert os.listxattr(out) == [], name  # the upper directory's own (uuid)
        entries = read_entries(gzip.decompress(blob_path(cache, tar_layer["digest"]).read_bytes()))
        assert squashfs_layer_entries(blob) == [_identity(e) for e in entries], name


def test_a_deeply_nested_tree_is_one_layer_of_either_type(tmp_path: Path) -> None:
    """A step may nest directories thousands deep: read and prepared without recursion (no
    RecursionError), the tar entries and the squashfs made of the tree are the same, up to
    the longest path mksquashfs reads (4093 bytes below the tree: it runs there, so the
    place of the cache does not matter). Past that mksquashfs would skip files without
    failing: the squashfs layer is refused, the tar layer is made."""
    tree = tmp_path / "tree"
    tree.mkdir()
    fds = [os.open(tree, os.O_RDONLY | os.O_DIRECTORY)]

    def deeper(levels: int) -> None:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fds[-1])
            os.setxattr(f"/proc/self/fd/{fds[-1]}/d", "trusted.overlay.impure", b"y")
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))

    try:
        deeper(2046)  # d/d/.../d/f: 4093 bytes
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1]))
        tar = [_identity(e) for e, _data, _x in overlay_entries(tree, mtime_max=EPOCH)]
        assert len(tar) == 2047 and len(tar[-1][0]) == squashfs.MAX_PATH
        squashfs.make(tree, tmp_path / "layer.sqfs", mkfs_time=EPOCH)
        assert squashfs_layer_entries(tmp_path / "layer.sqfs") == tar
        assert os.listxattr(fds[-1]) == []  # prepared all the way down
        os.unlink("f", dir_fd=fds[-1])
        deeper(500)
        tar = [_identity(e) for e, _data, _x in overlay_entries(tree, mtime_max=EPOCH)]
        assert len(tar) == 2546
        with pytest.raises(InputError, match="a path of 5091 bytes; mksquashfs skips paths"):
            squashfs.make(tree, tmp_path / "deeper.sqfs", mkfs_time=EPOCH)
    finally:  # removed here: shutil.rmtree recurses
        for level in range(len(fds) - 1, 0, -1):
            os.close(fds[level])
            os.rmdir("d", dir_fd=fds[level - 1])
        os.close(fds[0])


def test_every_tool_gets_the_fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a tool sees of the caller: nothing (the user's SOURCE_DATE_EPOCH, locale, time
    zone, TMPDIR, a NOTIFY_SOCKET runc would pass on, the umask); the fixed environment."""
    from ocikit import tools

    for key, value in {
        "SOURCE_DATE_EPOCH": "1",
        "LANG": "de_DE.UTF-8",
        "TZ": "Asia/Tokyo",
        "TMPDIR": "/nowhere",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "PATH": "/nowhere:" + os.environ.get("PATH", ""),
    }.items():
        monkeypatch.setenv(key, value)
    old = os.umask(0o077)
    try:
        result = tools.run(["/bin/sh", "-c", "env; umask"], "sh")
    finally:
        os.umask(old)
    lines = result.stdout.decode().split()
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    seen.pop("PWD", None)  # the shell's own
    seen.pop("SHLVL", None)
    seen.pop("_", None)
    assert seen == tools.environment()
    assert lines[-1] == "0022"
