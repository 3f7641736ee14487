"""``run`` steps in a real container (runc) on an overlay of the base's layers: writes through
``/bin`` land in ``usr/bin``, deletions become whiteouts and a replaced directory an opaque
one, imports are visible at /ocikit/imports without entering the layer, binds, the user, the
namespaces, failures (exit code and output tail, no tag for the image or its dependents), the
cache (step text, read-only binds, ``cache: false``), and stacker's case with squashfs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from support.cli import ocikit, ok
from support.dockerd import BUSYBOX, DockerEngine
from support.layouts import read_entries, write_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run steps need root")

APPLETS = ("sh", "ls", "cat", "test", "echo", "rm", "mkdir", "ln", "cp", "id", "mv", "wc", "mkfifo")


def busybox_base(where: Path) -> None:
    """A usrmerged busybox root filesystem (bin -> usr/bin), with a user and a group, a file
    to delete and a directory to replace, as an OCI layout named ``base``."""
    root = where / "rootfs"
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc", "root", "data/old", "home/app"):
        (root / d).mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "usr/bin/busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "usr/bin" / applet)
    for link in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{link}", root / link)
    (root / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\n")
    (root / "etc/gone").write_text("to be deleted\n")
    (root / "data/old/f").write_text("old\n")
    os.chown(root / "home/app", 1000, 1000)
    tar = subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
        capture_output=True,
        check=True,
    ).stdout
    write_layout(where / "base", [tar], ref="base")
    shutil.rmtree(root)


def build(where: Path, *args: str) -> dict[str, Any]:
    out = ok("build", "--json", "--cache-dir", str(where / "cache"), *args, cwd=where)
    return json.loads(out.stdout)


def layer_entries(layout: Path, tag: str) -> dict[str, tarfile.TarInfo]:
    index = json.loads((layout / "index.json").read_bytes())
    [desc] = [
        d
        for d in index["manifests"]
        if d["annotations"]["org.opencontainers.image.ref.name"] == tag
    ]
    blob = layout / "blobs/sha256"
    manifest = json.loads((blob / desc["digest"].split(":")[1]).read_bytes())
    data = (blob / manifest["layers"][-1]["digest"].split(":")[1]).read_bytes()
    return {e.name.rstrip("/"): e for e in read_entries(gzip.decompress(data))}


RECIPE = """
images:
  app:
    from: oci:base:base
    imports:
      - {src: hello.txt, dest: /etc/hello.txt}
      - {src: only-for-run.txt}
    binds:
      - {src: inputs, dest: /mnt/inputs}
      - {src: outputs, dest: /mnt/outputs, rw: true}
    run:
      - echo made > /bin/made
      - ln -s /usr/bin/python3.11 /bin/python3 && cp /etc/hello.txt /bin/hello-copy
      - rm /etc/gone
      - rm -rf /data/old && mkdir /data/old && echo new > /data/old/g
      - cat /ocikit/imports/only-for-run.txt > /root/from-import
      - cat /mnt/inputs/in.txt > /root/from-bind && echo out > /mnt/outputs/out.txt
      - echo "pid=$$ host=$(busybox hostname) net=$(wc -l < /proc/net/dev)" > /root/sandbox
      - ln /etc/hello.txt /etc/hello-hardlink && mkfifo /root/fifo
      - echo "${{MESSAGE:hello from the step}}"
  as-user:
    from: {built: app}
    config: {user: "app:staff"}
    shell: [/bin/sh, -ec]
    run: id > /home/app/id
  host-network:
    from: {built: app}
    network: host
    run: wc -l < /proc/net/dev > /root/net
  failing:
    from: {built: app}
    run: echo about to fail; echo last words; exit 3
  after-failing:
    from: {built: failing}
    run: echo never
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    busybox_base(tmp_path)
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "only-for-run.txt").write_text("import content\n")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "in.txt").write_text("bind content\n")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "ocikit.yaml").write_text(RECIPE)
    return tmp_path


def test_steps_and_their_layer(project: Path) -> None:
    proc = ok("build", "--cache-dir", str(project / "cache"), "--target", "as-user", cwd=project)
    assert "app | hello from the step" in proc.stderr.decode(), "output streams, prefixed"
    entries = layer_entries(project / "oci", "app")
    assert set(entries) == {
        "data",
        "data/old",
        "data/old/.wh..wh..opq",
        "data/old/g",
        "etc",
        "etc/.wh.gone",
        "etc/hello.txt",
        "etc/hello-hardlink",
        "root",
        "root/fifo",
        "root/from-bind",
        "root/from-import",
        "root/sandbox",
        "usr",
        "usr/bin",
        "usr/bin/hello-copy",
        "usr/bin/made",
        "usr/bin/python3",
    }, "through /bin into usr/bin; no ocikit/, mnt/, tmp/ or proc/ from the runtime"
    assert entries["usr/bin/python3"].linkname == "/usr/bin/python3.11"
    assert entries["etc/hello-hardlink"].islnk() != entries["etc/hello.txt"].islnk()
    assert entries["root/fifo"].isfifo()
    assert (project / "outputs" / "out.txt").read_text() == "out\n", "a writable bind"
    ok("check", "--strict", "oci:oci:app", cwd=project)
    rootfs = project / "rootfs"
    ok("unpack", "oci:oci:app", str(rootfs), cwd=project)
    assert (rootfs / "root/from-import").read_text() == "import content\n"
    assert not (rootfs / "only-for-run.txt").exists() and not (rootfs / "ocikit").exists()
    assert (rootfs / "root/from-bind").read_text() == "bind content\n"
    assert (rootfs / "root/sandbox").read_text() == "pid=1 host=ocikit net=3\n"
    assert not (rootfs / "etc/gone").exists()
    assert sorted(os.listdir(rootfs / "data/old")) == ["g"]
    assert (rootfs / "bin").is_symlink()
    # the user of the config, with its groups; the base's passwd and group files
    user = layer_entries(project / "oci", "as-user")
    assert user["home/app/id"].uid == 1000
    shutil.rmtree(rootfs)
    ok("unpack", "oci:oci:as-user", str(rootfs), cwd=project)
    assert (rootfs / "home/app/id").read_text().startswith("uid=1000(app) gid=50(staff)")
    # the host's network, when asked: more than loopback
    build(project, "--target", "host-network")
    shutil.rmtree(rootfs)
    ok("unpack", "oci:oci:host-network", str(rootfs), cwd=project)
    assert int((rootfs / "root/net").read_text()) > 3


def test_umoci_sees_the_deletion_and_the_replacement(project: Path, tmp_path: Path) -> None:
    build(project, "--target", "app")
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{project / 'oci'}:app", str(bundle)],
        check=True,
        capture_output=True,
    )
    root = bundle / "rootfs"
    assert not (root / "etc/gone").exists()
    assert sorted(os.listdir(root / "data/old")) == ["g"]
    assert (root / "usr/bin/made").read_text() == "made\n" and (root / "bin").is_symlink()


def test_a_failing_step(project: Path) -> None:
    proc = ocikit(
        "build", "--cache-dir", str(project / "cache"), "--target", "after-failing", cwd=project
    )
    err = proc.stderr.decode()
    assert "failing | about to fail" in err, "the output streamed"
    message = err.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert (
        "images.failing.run ('echo about to fail; echo last words; exit 3') failed with exit code 3"
        in message
        and "last words" in message
    )
    log = Path(message.split("(log: ", 1)[1].split("):", 1)[0])
    assert log.parent == project / "cache" / "logs" and "last words" in log.read_text()
    index = json.loads((project / "oci" / "index.json").read_bytes())
    tags = {d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]}
    assert tags == {"app"}, "no tag for the failing image or its dependents"
    # the cache kept what succeeded
    again = ocikit(
        "build",
        "--json",
        "--cache-dir",
        str(project / "cache"),
        "--target",
        "after-failing",
        cwd=project,
    )
    assert again.returncode == 2
    assert (
        "app (tar): cached"
        in ocikit(
            "build", "--cache-dir", str(project / "cache"), "--target", "app", cwd=project
        ).stderr.decode()
    )


def test_run_cache(project: Path) -> None:
    first = build(project, "--target", "app")
    assert not first["images"][0]["cached"]
    assert build(project, "--target", "app")["images"][0]["cached"]
    # a read-only bind is an input: its content is in the key
    (project / "inputs" / "in.txt").write_text("changed\n")
    assert not build(project, "--target", "app")["images"][0]["cached"]
    # the step text too (a substitution in it)
    assert not build(project, "--target", "app", "--substitute", "MESSAGE=x")["images"][0]["cached"]
    # cache: false always runs
    recipe = (
        (project / "ocikit.yaml")
        .read_text()
        .replace(
            "  as-user:\n    from: {built: app}\n",
            "  as-user:\n    from: {built: app}\n    cache: false\n",
        )
    )
    (project / "ocikit.yaml").write_text(recipe)
    build(project, "--target", "as-user")
    again = build(project, "--target", "as-user")
    assert [(i["name"], i["cached"], i["why"]) for i in again["images"]] == [
        ("app", True, "cached"),
        ("as-user", False, "cache: false"),
    ]


def test_stacker_case_with_run_steps(tmp_path: Path) -> None:
    """Stacker's report, as written: a build_only base from an image archive with
    ``run: echo hello > /minbase.txt``, a child from it with ``run: [ -e /minbase.txt ]``,
    only --layer-type squashfs, 50 builds with --substitute NUMBER=n: 50 successes."""
    busybox_base(tmp_path)
    ok("copy", "-q", f"oci:{tmp_path}/base:base", f"oci-archive:{tmp_path}/base.tar")
    (tmp_path / "ocikit.yaml").write_text(
        """
images:
  minbase:
    from: oci-archive:base.tar
    build_only: true
    run: echo hello > /minbase.txt
  child:
    from: {built: minbase}
    run:
      - "[ -e /minbase.txt ]"
      - echo ${{NUMBER}} > /number
"""
    )
    for n in range(50):
        result = build(tmp_path, "--layer-type", "squashfs", "--substitute", f"NUMBER={n}")
        assert [(i["name"], i["layer_type"]) for i in result["images"]] == [
            ("minbase", "squashfs"),
            ("child", "squashfs"),
        ]
        assert result["images"][0]["cached"] == (n > 0)
        assert not result["images"][1]["cached"]
    ok("check", "--strict", "oci:oci:child-squashfs", cwd=tmp_path)


@pytest.mark.docker
def test_docker_sees_the_deletion_and_the_replacement(
    project: Path, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    build(project, "--target", "app")
    archive = tmp_path / "app.tar"
    ok("copy", "-q", f"oci:{project / 'oci'}:app", f"docker-archive:{archive}:ocikit-test/run:1")
    docker_engine.docker("load", "-i", str(archive))
    out = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "ocikit-test/run:1",
        "/bin/sh",
        "-c",
        "test ! -e /etc/gone && ls /data/old && cat /bin/made && test -L /bin",
    )
    assert out.stdout.decode().split() == ["g", "made"]


def test_upper_directory_as_a_layer(tmp_path: Path) -> None:
    """What overlayfs leaves in an upper directory, made by hand: a deletion (0/0 character
    device), an opaque directory, a hardlink pair, a fifo, a file capability, and the
    runtime's mount points; the layer has whiteouts, the opaque marker, a hardlink, the
    fifo, the capability as a SCHILY.xattr record, and no mount point."""
    import io

    from ocikit.build.rootfs import write_upper_tar

    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc/gone", 0o600 | 0o020000, os.makedev(0, 0))
    (upper / "opaque").mkdir()
    os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
    (upper / "opaque/new").write_text("n")
    (upper / "bin").mkdir()
    (upper / "bin/ping").write_bytes(b"ELF")
    capability = bytes.fromhex("0000000200200000000000000000000000000000")
    os.setxattr(upper / "bin/ping", "security.capability", capability)
    os.link(upper / "bin/ping", upper / "bin/ping2")
    os.mkfifo(upper / "etc/fifo")
    (upper / "proc").mkdir()
    (upper / "ocikit/imports").mkdir(parents=True)
    out = io.BytesIO()
    write_upper_tar(upper, out, base_top={"etc", "bin"}, mtime_max=0)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name.rstrip("/"): m for m in tar}
    assert set(members) == {
        "bin",
        "bin/ping",
        "bin/ping2",
        "etc",
        "etc/.wh.gone",
        "etc/fifo",
        "opaque",
        "opaque/.wh..wh..opq",
        "opaque/new",
    }
    assert members["bin/ping2"].islnk() and members["bin/ping2"].linkname == "bin/ping"
    assert members["etc/fifo"].isfifo()
    assert (
        members["bin/ping"]
        .pax_headers["SCHILY.xattr.security.capability"]
        .encode("utf-8", "surrogateescape")
        == capability
    )
    assert all(m.mtime == 0 for m in members.values())
