"""``ocikit build`` with imports: recipe validation (every error, with its path), layers that
land through the base's symlinks (usrmerge), conflicts, pins, tarballs, reproducibility,
the cache (per layer type, per key), targets, build_only bases, and the recipe schema."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.backends import FILE as filebackend
from support.cli import assert_one_line_error, assert_recipe_errors, ocikit, ok
from support.layouts import directory, file, read_entries, symlink, tar_bytes, write_layout
from support.registry import Registry
from support.reproducible import digests, what_differs

ROOT = Path(__file__).resolve().parents[1]
REF_NAME = "org.opencontainers.image.ref.name"


def usrmerged_base(layout: Path) -> None:
    """A base whose /bin, /sbin and /lib are symlinks into /usr, as Debian's are."""
    write_layout(
        layout,
        [
            tar_bytes(
                [
                    directory("usr"),
                    directory("usr/bin"),
                    directory("usr/lib"),
                    directory("usr/sbin"),
                    file("usr/bin/sh", "#!sh", 0o755),
                    symlink("bin", "usr/bin"),
                    symlink("sbin", "usr/sbin"),
                    symlink("lib", "usr/lib"),
                    directory("etc"),
                    file("etc/os-release", "ID=test\n"),
                ]
            )
        ],
        ref="base",
    )


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(mode)
    return path


def build(tmp: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = ok("build", "--json", "--cache-dir", str(tmp / "cache"), *args, cwd=tmp, env=env)
    return json.loads(out.stdout)


def index(layout: Path) -> dict[str, str]:
    data = json.loads((layout / "index.json").read_bytes())
    return {d["annotations"][REF_NAME]: d["digest"] for d in data["manifests"]}


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def new_layer(layout: Path, tag: str) -> list[tarfile.TarInfo]:
    manifest = json.loads(blob(layout, index(layout)[tag]))
    data = blob(layout, manifest["layers"][-1]["digest"])
    return read_entries(gzip.decompress(data))


def names(entries: list[tarfile.TarInfo]) -> list[str]:
    return [e.name.rstrip("/") for e in entries]


# -- validation --------------------------------------------------------------------------------


def test_every_error_at_once_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "ocikit.yaml").write_text(
        """
images:
  app:
    from: {built: nowhere}
    imports:
      - src: missing.txt
        dest: relative/path
    config:
      exposed_ports: ["80/xyz"]
  other:
    from: scratch
    config:
      env: {A: "${{MISSING}}"}
    colour: blue
"""
    )
    proc = ocikit("build", cwd=tmp_path)
    found = assert_recipe_errors(proc)  # one per line
    for where in (
        "images.app.from",
        "images.app.imports[0].dest",
        "images.app.config.exposed_ports",
        "images.other.config.env.A",
        "images.other.colour",
    ):
        assert any(p.startswith(f"{where}: ") for p in found), where
    assert not (tmp_path / "oci").exists(), "nothing built"


def test_cycles_and_names(tmp_path: Path) -> None:
    (tmp_path / "ocikit.yaml").write_text(
        """
images:
  a: {from: {built: b}}
  b: {from: {built: c}}
  c: {from: {built: a}}
  self: {from: {built: self}}
  Bad_Name: {from: scratch}
"""
    )
    err = "\n".join(assert_recipe_errors(ocikit("build", cwd=tmp_path)))
    assert "a -> b -> c -> a" in err
    assert "images.self.from" in err
    assert "images.Bad_Name" in err
    assert_one_line_error(ocikit("build", "-f", "absent.yaml", cwd=tmp_path), contains="absent")
    (tmp_path / "bad.yaml").write_text("images: [unclosed\n")
    assert_one_line_error(ocikit("build", "-f", "bad.yaml", cwd=tmp_path), contains="YAML")


def test_schema_is_shipped_and_current() -> None:
    printed = json.loads(ok("build", "--print-schema").stdout)
    shipped = json.loads((ROOT / "docs" / "recipe.schema.json").read_text())
    assert printed == shipped, "regenerate docs/recipe.schema.json (ocikit build --print-schema)"
    assert "images" in printed["properties"]


# -- layers ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("file_backend")
def test_imports_land_through_the_bases_symlinks(tmp_path: Path) -> None:
    """The rockcraft case without docker: a venv's bin/ (symlinks and a script) imported at
    /bin on a usrmerged base lands in usr/bin; the layer has no bin/ directory, no path twice,
    and the image passes check."""
    usrmerged_base(tmp_path / "base")
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    os.symlink("/usr/bin/python3.11", venv / "python3")
    os.symlink("python3", venv / "python")
    write(venv / "pip", "#!/usr/bin/python3\n", 0o775)
    write(tmp_path / "tools" / "usr" / "bin" / "tool", "tool", 0o700)
    write(tmp_path / "bb", "static", 0o755)
    (tmp_path / "ocikit.yaml").write_text(
        """
images:
  app:
    from: oci:base:base
    imports:
      - {src: venv/bin, dest: /bin}
      - {src: tools, dest: /}
      - {src: bb, dest: /sbin/}
      - {src: bb, dest: /lib/x/y/bb, mode: "0700", owner: "1000:1000"}
"""
    )
    build(tmp_path)
    entries = new_layer(tmp_path / "oci", "app")
    listed = names(entries)
    assert listed == sorted(listed)
    assert len(listed) == len(set(listed)), "no path twice"
    assert set(listed) == {
        "usr/bin/pip",
        "usr/bin/python",
        "usr/bin/python3",
        "usr/bin/tool",
        "usr/sbin/bb",
        "usr/lib/x",
        "usr/lib/x/y",
        "usr/lib/x/y/bb",
    }
    by = {e.name.rstrip("/"): e for e in entries}
    assert by["usr/bin/python3"].linkname == "/usr/bin/python3.11"
    assert by["usr/bin/pip"].mode == 0o755 and by["usr/bin/tool"].mode == 0o755
    assert (by["usr/lib/x/y/bb"].mode, by["usr/lib/x/y/bb"].uid) == (0o700, 1000)
    assert all(e.mtime == 0 and e.uname == "" for e in entries)
    ok("check", "--strict", "oci:oci:app", cwd=tmp_path)
    ok("unpack", "oci:oci:app", str(tmp_path / "rootfs"), cwd=tmp_path)
    assert (tmp_path / "rootfs" / "bin").is_symlink()
    assert (tmp_path / "rootfs" / "bin" / "pip").read_text() == "#!/usr/bin/python3\n"


@pytest.mark.usefixtures("file_backend")
def test_conflicts_and_replacements(tmp_path: Path) -> None:
    usrmerged_base(tmp_path / "base")
    write(tmp_path / "a" / "conf", "one")
    write(tmp_path / "b" / "conf", "two")
    write(tmp_path / "c" / "conf", "one")
    write(tmp_path / "f", "file")
    recipe = tmp_path / "ocikit.yaml"

    def attempt(*imports: str) -> subprocess.CompletedProcess[bytes]:
        lines = "\n".join(f"      - {i}" for i in imports)
        recipe.write_text(f"images:\n  app:\n    from: oci:base:base\n    imports:\n{lines}\n")
        return ocikit("build", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)

    err = assert_one_line_error(attempt("{src: a, dest: /etc}", "{src: b, dest: /etc}"))
    assert "images.app.imports[0]" in err and "images.app.imports[1]" in err
    assert attempt("{src: a, dest: /etc}", "{src: c, dest: /etc}").returncode == 0
    assert names(new_layer(tmp_path / "oci", "app")) == ["etc/conf"]
    # a file over a directory of the base, a directory over a file
    assert_one_line_error(attempt("{src: f, dest: /usr/lib}"), contains="directory /usr/lib")
    assert_one_line_error(attempt("{src: a, dest: /etc/os-release}"), contains="must not replace")


@pytest.mark.usefixtures("file_backend")
def test_pins_and_tarballs(tmp_path: Path) -> None:
    write(tmp_path / "data.bin", b"pinned")
    good = "4a3e4b9b1e0c3d8ba1f1e0c6b6e8b7f3a6d7c1e2f4a5b6c7d8e9f0a1b2c3d4e5"
    import hashlib

    real = hashlib.sha256(b"pinned").hexdigest()
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        for name, data in (("./", None), ("./opt/", None), ("./opt/app", b"app")):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (tmp_path / "rootfs.tar.gz").write_bytes(tgz.getvalue())
    evil = tar_bytes([file("../escape", "x")])
    (tmp_path / "evil.tar").write_bytes(evil)
    recipe = tmp_path / "ocikit.yaml"
    recipe.write_text(
        f"images:\n  app:\n    from: scratch\n    imports:\n"
        f"      - {{src: data.bin, dest: /data.bin, sha256: {good}}}\n"
    )
    assert_one_line_error(ocikit("build", "--no-cache", cwd=tmp_path), contains=real)
    recipe.write_text(
        f"images:\n  app:\n    from: scratch\n    imports:\n"
        f"      - {{src: data.bin, dest: /data.bin, sha256: {real}}}\n"
        f"      - {{src: rootfs.tar.gz, dest: /srv}}\n"
    )
    build(tmp_path)
    assert names(new_layer(tmp_path / "oci", "app")) == [
        "data.bin",
        "srv",
        "srv/opt",
        "srv/opt/app",
    ]
    recipe.write_text(
        "images:\n  app:\n    from: scratch\n    imports:\n      - {src: evil.tar, dest: /}\n"
    )
    assert_one_line_error(ocikit("build", "--no-cache", cwd=tmp_path), contains="outside")


# -- reproducibility and cache -----------------------------------------------------------------


def _project(where: Path) -> None:
    usrmerged_base(where / "base")
    write(where / "files" / "hello.txt", "hello\n")
    write(where / "files" / "tree" / "a" / "b.sh", "echo b\n", 0o755)
    os.symlink("a/b.sh", where / "files" / "tree" / "link")
    (where / "ocikit.yaml").write_text(
        """
images:
  base:
    from: oci:base:base
    build_only: true
    imports:
      - {src: files/hello.txt, dest: /minbase.txt}
  app:
    from: {built: base}
    imports:
      - {src: files/tree, dest: /opt/tree}
    config:
      env: {VERSION: "${{VERSION:0}}"}
      cmd: [/bin/sh]
      labels: {org.example.n: "${{NUMBER:none}}"}
  other:
    from: scratch
    imports:
      - {src: files/hello.txt, dest: /hello.txt}
"""
    )


@pytest.mark.usefixtures("file_backend")
def test_reproducible_across_directories_and_clocks(tmp_path: Path) -> None:
    results = []
    for i, umask in enumerate((0o022, 0o002)):
        where = tmp_path / f"checkout{i}"
        old = os.umask(umask)
        try:
            _project(where)
        finally:
            os.umask(old)
        for p in where.rglob("*"):
            if not p.is_symlink():
                os.utime(p, (1_700_000_000 + i * 86400,) * 2)
        results.append(
            build(
                where,
                "--cache-dir",
                str(where / "cache"),
                "--layer-type",
                "tar",
                "--layer-type",
                "squashfs",
            )
        )
    first, second = (digests(r) for r in results)
    runs = [(tmp_path / f"checkout{i}" / "cache", r) for i, r in enumerate(results)]
    assert len(first) == 6 and first == second, what_differs(*runs)
    # SOURCE_DATE_EPOCH moves the dates (and so the digests); the same value, the same digests
    where = tmp_path / "checkout0"
    dated = build(where, "--no-cache", env={"SOURCE_DATE_EPOCH": "1000000000"})
    again = build(where, "--no-cache", env={"SOURCE_DATE_EPOCH": "1000000000"})
    assert dated["images"] == again["images"]
    assert dated["images"][1]["digest"] != results[0]["images"][2]["digest"]


def test_cache_decisions(tmp_path: Path) -> None:
    _project(tmp_path)
    first = build(tmp_path)
    assert [(i["name"], i["cached"]) for i in first["images"]] == [
        ("base", False),
        ("app", False),
        ("other", False),
    ]
    second = build(tmp_path)
    assert all(i["cached"] for i in second["images"])
    assert [i["digest"] for i in second["images"]] == [i["digest"] for i in first["images"]]
    assert set(index(tmp_path / "oci")) == {"app", "other"}, "build_only is not output"
    # the base's import changes: the base and its child are built again, not the other
    write(tmp_path / "files" / "hello.txt", "changed\n")
    third = build(tmp_path)
    assert [(i["name"], i["cached"]) for i in third["images"]] == [
        ("base", False),
        ("app", False),
        ("other", False),  # it imports hello.txt too
    ]
    # a substitution changes only the image that uses it
    fourth = build(tmp_path, "--substitute", "VERSION=2")
    assert [(i["name"], i["cached"]) for i in fourth["images"]] == [
        ("base", True),
        ("app", False),
        ("other", True),
    ]
    # --no-cache builds everything and says so
    proc = ok("build", "--no-cache", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert proc.stderr.decode().count("--no-cache") == 3
    # --target builds the target and its bases only
    target = build(tmp_path, "--target", "app")
    assert [i["name"] for i in target["images"]] == ["base", "app"]


def squashfs_names(layout: Path, tag: str) -> set[str]:
    """Every path in the image's squashfs layers, as ``unsquashfs -l`` lists them."""
    manifest = json.loads(blob(layout, index(layout)[tag]))
    found = set()
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.stacker.image.layer.squashfs+gzip"
        path = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        out = subprocess.run(
            ["unsquashfs", "-l", "-d", "", str(path)], capture_output=True, check=True, text=True
        ).stdout
        found |= {line.strip().lstrip("/") for line in out.splitlines() if line.startswith("/")}
    return found


@pytest.mark.parametrize(
    "types", [("tar",), ("squashfs",), ("tar", "squashfs")], ids=["tar", "squashfs", "both"]
)
def test_stacker_case(tmp_path: Path, types: tuple[str, ...]) -> None:
    """A build_only base from an image file, a child from it that must see the base's file,
    50 builds in a row with a substitution that changes each time: 50 successes, for each
    layer type alone and both together (stacker failed this at random with squashfs)."""
    _project(tmp_path)
    ok("copy", "-q", f"oci:{tmp_path}/base:base", f"oci-archive:{tmp_path}/base.tar")
    recipe = (tmp_path / "ocikit.yaml").read_text().replace("oci:base:base", "oci-archive:base.tar")
    (tmp_path / "ocikit.yaml").write_text(recipe)
    flags = [arg for t in types for arg in ("--layer-type", t)]
    seen: dict[str, set[str]] = {t: set() for t in types}
    for n in range(50):
        result = build(tmp_path, "--substitute", f"NUMBER={n}", "--target", "app", *flags)
        assert [(i["name"], i["layer_type"]) for i in result["images"]] == [
            (name, t) for name in ("base", "app") for t in types
        ]
        for image in result["images"]:
            if image["name"] == "app":
                assert not image["cached"]
                seen[image["layer_type"]].add(image["digest"])
                assert image["tag"] == ("app" if image["layer_type"] == "tar" else "app-squashfs")
    assert all(len(digests) == 50 for digests in seen.values())
    layout = tmp_path / "oci"
    assert set(index(layout)) == {"app" if t == "tar" else "app-squashfs" for t in types}
    if "tar" in types:
        ok("unpack", "oci:oci:app", str(tmp_path / "rootfs"), cwd=tmp_path)
        assert (tmp_path / "rootfs" / "minbase.txt").read_text() == "hello\n"
    if "squashfs" in types:
        names = squashfs_names(layout, "app-squashfs")
        assert {"minbase.txt", "opt/tree/a/b.sh", "opt/tree/link", "usr/bin/sh"} <= names
        ok("check", "--strict", "oci:oci:app-squashfs", cwd=tmp_path)
    config = json.loads(
        ok("inspect", "--config", f"oci:oci:{next(iter(index(layout)))}", cwd=tmp_path).stdout
    )
    assert config["config"]["Labels"]["org.example.n"] == "49"


def test_a_squashfs_image_built_from_a_squashfs_base(tmp_path: Path) -> None:
    """stacker's way: a squashfs child of a squashfs base keeps the base's layers as they are
    (the build used to read them as tar: "not a tar archive")."""
    write(tmp_path / "hello.txt", "hi")
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  base:\n    from: scratch\n    imports: [{src: hello.txt, dest: /a}]\n"
        "  child:\n    from: {built: base}\n    imports: [{src: hello.txt, dest: /b}]\n"
    )
    build(tmp_path, "--layer-type", "squashfs", "--output", "oci:first")
    (tmp_path / "child.yaml").write_text(
        "images:\n  grandchild:\n    from: oci:first:child-squashfs\n"
        "    imports: [{src: hello.txt, dest: /c}]\n"
    )
    build(tmp_path, "-f", "child.yaml", "--layer-type", "squashfs", "--output", "oci:second")
    first = json.loads(blob(tmp_path / "first", index(tmp_path / "first")["child-squashfs"]))
    second = json.loads(
        blob(tmp_path / "second", index(tmp_path / "second")["grandchild-squashfs"])
    )
    assert second["layers"][:2] == first["layers"]  # kept byte for byte
    assert squashfs_names(tmp_path / "second", "grandchild-squashfs") >= {"a", "b", "c"}
    ok("check", "--strict", "oci:second:grandchild-squashfs", cwd=tmp_path)


def test_squashfs_layers_keep_deletions_and_reproduce(tmp_path: Path) -> None:
    """A base whose upper layer deletes a file and makes a directory opaque: its squashfs
    form marks them as overlayfs does (a 0/0 character device, trusted.overlay.opaque=y),
    check reads them back as whiteouts, and two builds give the same digests."""
    base = tmp_path / "base"
    write_layout(
        base,
        [
            tar_bytes(
                [directory("etc"), file("etc/gone", "x"), directory("d"), file("d/old", "o")]
            ),
            tar_bytes(
                [
                    directory("etc"),
                    file("etc/.wh.gone"),
                    directory("d"),
                    file("d/.wh..wh..opq"),
                    file("d/new", "n"),
                ]
            ),
        ],
        ref="base",
    )
    write(tmp_path / "hello.txt", "hi")
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: oci:base:base\n    imports:\n"
        "      - {src: hello.txt, dest: /d/hello.txt}\n"
    )
    first = build(tmp_path, "--layer-type", "squashfs")
    again = build(tmp_path, "--layer-type", "squashfs", "--no-cache")
    assert first["images"][0]["digest"] == again["images"][0]["digest"]
    manifest = json.loads(blob(tmp_path / "oci", index(tmp_path / "oci")["app-squashfs"]))
    upper = tmp_path / "oci" / "blobs" / "sha256" / manifest["layers"][1]["digest"].split(":")[1]
    listing = subprocess.run(
        ["unsquashfs", "-lls", "-d", "", str(upper)], capture_output=True, check=True, text=True
    ).stdout
    [gone] = [line for line in listing.splitlines() if line.endswith("/etc/gone")]
    assert gone.startswith("c") and " 0,  0 " in gone, gone
    subprocess.run(
        ["unsquashfs", "-d", str(tmp_path / "x"), str(upper)], check=True, capture_output=True
    )
    assert os.getxattr(tmp_path / "x" / "d", "trusted.overlay.opaque") == b"y"
    report = json.loads(ok("check", "--json", "oci:oci:app-squashfs", cwd=tmp_path).stdout)
    assert report["errors"] == 0 and report["entries"] >= 9
    # the tools that read tar layers say so instead of misreading
    proc = ocikit("unpack", "oci:oci:app-squashfs", str(tmp_path / "u"), cwd=tmp_path)
    assert_one_line_error(proc, contains="squashfs")
    proc = ocikit("copy", "oci:oci:app-squashfs", f"docker-archive:{tmp_path}/d.tar", cwd=tmp_path)
    assert_one_line_error(proc, contains="squashfs")
    ok("copy", "-q", "oci:oci:app-squashfs", f"oci:{tmp_path}/copied:t", cwd=tmp_path)
    ok("check", f"oci:{tmp_path}/copied:t")


def test_an_image_failing_check_is_neither_output_nor_cached(tmp_path: Path) -> None:
    """A base with a duplicate path (which docker load refuses): the build stops, says why,
    writes no output and caches nothing, so the next build says it again."""
    write_layout(
        tmp_path / "base",
        [tar_bytes([directory("etc"), file("etc/x", "1"), file("etc/x", "2")])],
        ref="base",
    )
    write(tmp_path / "hello.txt", "hi")
    (tmp_path / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: oci:base:base\n    imports:\n"
        "      - {src: hello.txt, dest: /hello.txt}\n"
    )
    for _ in range(2):
        proc = ocikit("build", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
        err = assert_one_line_error(proc, contains="fails ocikit check")
        assert "duplicate-path" in err
        assert not (tmp_path / "oci" / "index.json").exists()


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
        min_size=1,
        max_size=60,
    ).map(lambda s: s if s not in (".", "..") else s + "x"),
    depth=st.integers(1, 6),
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
    size=st.integers(0, 3000),
    uid=st.integers(0, 1 << 24),
    mtime=st.integers(0, 1 << 33),
    mode=st.integers(0, 0o7777),
)
def test_tar_headers_read_back(
    name: str, depth: int, kind: bytes, size: int, uid: int, mtime: int, mode: int
) -> None:
    """Headers the build writes read back exactly with tarfile and with ocikit's parser, and
    are the same bytes on both paths (the native core's, and Python's)."""
    from ocikit.layer.tarstream import TarStream
    from ocikit.layer.tarwriter import tar_header

    path = "/".join([name] * depth)
    size = size if kind == tarfile.REGTYPE else 0
    link = name * 3 if kind == tarfile.SYMTYPE else ""
    made = set()
    for backend in filebackend.available():
        with filebackend.use(backend):
            made.add(tar_header(path, kind, size, mode, uid, uid + 1, mtime, link))
    [data] = made
    data += b"x" * size + bytes(-size % 512) + bytes(1024)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        [member] = tar.getmembers()
    assert (member.name, member.type, member.size, member.mode) == (path, kind, size, mode)
    assert (member.uid, member.gid, member.mtime, member.linkname) == (uid, uid + 1, mtime, link)
    [entry] = list(TarStream(io.BytesIO(data)))
    assert (entry.name, entry.size, entry.uid, entry.linkname) == (path, size, uid, link)


def test_output_to_a_registry_and_timestamp_now(tmp_path: Path, registry: Registry) -> None:
    """--output docker://HOST/PREFIX pushes each image as PREFIX/NAME:latest (skopeo reads
    it back); --timestamp now dates the image now instead of at the epoch."""
    _project(tmp_path)
    result = build(tmp_path, "--output", f"docker://{registry.host}/built")
    pushed = {i["name"]: i["digest"] for i in result["images"] if i["tag"]}
    assert set(pushed) == {"app", "other"}
    for name, digest in pushed.items():
        proc = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                f"docker://{registry.host}/built/{name}:latest",
            ],
            capture_output=True,
            check=True,
        )
        assert json.loads(proc.stdout)["Digest"] == digest
    now = build(tmp_path, "--timestamp", "now", "--target", "other")
    config = json.loads(ok("inspect", "--config", "oci:oci:other", cwd=tmp_path).stdout)
    assert (
        config["created"] >= "2026" and now["images"][0]["digest"] != result["images"][2]["digest"]
    )
    assert_one_line_error(
        ocikit("build", "--output", "docker-archive:x.tar", cwd=tmp_path), contains="--output"
    )


def test_python_api(tmp_path: Path) -> None:
    """ocikit.build takes a recipe's path (or a loaded recipe) and options."""
    import ocikit

    _project(tmp_path)
    options = ocikit.BuildOptions(
        output=f"oci:{tmp_path / 'api'}", targets=("other",), cache_dir=str(tmp_path / "c")
    )
    result = ocikit.build(tmp_path / "ocikit.yaml", options)
    assert [(i.name, i.cached, i.why) for i in result.images] == [
        ("other", False, "not in the cache")
    ]
    again = ocikit.build(ocikit.load_recipe(tmp_path / "ocikit.yaml"), options)
    assert again.images[0].cached and again.images[0].digest == result.images[0].digest
    (tmp_path / "bad.yaml").write_text("images:\n  app: {from: {built: nope}}\n")
    with pytest.raises(ocikit.UsageError, match=r"images\.app\.from"):
        ocikit.build(tmp_path / "bad.yaml", options)
