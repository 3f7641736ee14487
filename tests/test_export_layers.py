"""``ocikit export-layers``: the build farm's per-layer files from real ``docker save`` output
(legacy, with a symlinked repeated layer and two images) and Docker >= 25 archives (with and
without LayerSources), from a file and from a pipe. Judged by the diff_ids of the config, by
sha256 of every file, and by ``docker load`` of the artifacts reassembled into an archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

import ocikit
from support import inprocess
from support.archives import Archive, BadInput, read_manifest_json, tree
from support.cli import assert_one_line_error, ocikit_from_pipe, ok
from support.cli import ocikit as run_ocikit
from support.dockerd import DockerEngine

pytestmark = pytest.mark.docker

CASES = [
    ("legacy", "rich"),
    ("legacy", "two"),
    ("docker25", "rich"),
    ("docker25", "rich+sources"),
    ("docker25", "two"),
    ("docker25", "two+sources"),
]


@pytest.fixture
def archives(
    legacy_archive_rich: Archive,
    legacy_archive_two: Archive,
    docker25_archives: dict[str, Archive],
) -> dict[tuple[str, str], Archive]:
    return {
        ("legacy", "rich"): legacy_archive_rich,
        ("legacy", "two"): legacy_archive_two,
        **{("docker25", key): archive for key, archive in docker25_archives.items()},
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member(archive: Path, name: str) -> bytes:
    """A member's bytes, following symlinks inside the archive (``tarfile`` does)."""
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()


def export(archive: Path, out: Path, mode: str, *extra: str) -> dict[str, Any]:
    if mode == "file":
        proc = ok("export-layers", "--json", *extra, f"docker-archive:{archive}", str(out))
    else:
        proc = ocikit_from_pipe(
            ["cat", str(archive)], "export-layers", "--json", *extra, "docker-archive:-", str(out)
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", "--json prints nothing else"
    return json.loads(proc.stdout)


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def verify_export(out: Path, source: Path, result: dict[str, Any]) -> None:
    """Everything the farm reads, checked against the source archive."""
    src_entries = read_manifest_json(source)
    manifest = json.loads((out / "manifest.json").read_bytes())
    digests = json.loads((out / "digests.json").read_bytes())
    assert isinstance(digests, list) and len(digests) == len(manifest) == len(src_entries)
    expected_files = {"manifest.json", "digests.json"}
    legacy = src_entries[0]["Layers"][0].endswith("/layer.tar")
    for entry, src, digest_map, image in zip(
        manifest, src_entries, digests, result["images"], strict=True
    ):
        config = member(source, src["Config"])
        assert entry["Config"] == f"{sha256(config)}.json"
        assert (out / entry["Config"]).read_bytes() == config, "the config, byte for byte"
        assert (entry["RepoTags"] or []) == (src.get("RepoTags") or [])
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        assert len(entry["Layers"]) == len(diff_ids)
        for i, (name, diff_id) in enumerate(zip(entry["Layers"], diff_ids, strict=True)):
            layer_id, _, rest = name.partition("/")
            assert rest == "layer.tar", "consumers split Layers[i] on '/'"
            if legacy:
                assert name == src["Layers"][i], "the legacy directory names the layer"
            else:
                assert layer_id == diff_id.removeprefix("sha256:")
            data = (out / f"{layer_id}.tar.gz").read_bytes()
            assert data[:2] == b"\x1f\x8b" and data[3] & 0x08 == 0, "gzip, no file name"
            assert data[4:8] == b"\0\0\0\0", "gzip, no timestamp"
            assert "sha256:" + sha256(gzip.decompress(data)) == diff_id
            record = digest_map[diff_id]
            assert record == {"digest": sha256(data), "source": "", "layer_id": record["layer_id"]}
            assert (
                "sha256:"
                + sha256(gzip.decompress((out / f"{record['layer_id']}.tar.gz").read_bytes()))
                == diff_id
            )
            expected_files.add(f"{layer_id}.tar.gz")
        assert set(digest_map) == set(diff_ids)
        assert image["config"] == entry["Config"]
        expected_files.add(entry["Config"])
    assert set(files(out)) == expected_files, "nothing else in OUTDIR (no staging left)"
    assert result["files"][-1] == "manifest.json"


def reassemble(out: Path, dest: Path) -> Path:
    """A legacy docker-archive from the artifacts, as the farm's consumers would make it:
    ``<layer_id>/layer.tar`` is the ``.tar.gz`` (docker load decompresses it)."""
    manifest = json.loads((out / "manifest.json").read_bytes())
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        done = set()
        for entry in manifest:
            for name in [entry["Config"], *entry["Layers"]]:
                if name in done:
                    continue
                done.add(name)
                if name.endswith("/layer.tar"):
                    add(name, (out / (name.split("/")[0] + ".tar.gz")).read_bytes())
                else:
                    add(name, (out / name).read_bytes())
        add("manifest.json", (out / "manifest.json").read_bytes())
    return dest


@pytest.mark.parametrize("mode", ["file", "pipe"])
@pytest.mark.parametrize(("kind", "key"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_export_layers(
    archives: dict[tuple[str, str], Archive],
    docker_engine: DockerEngine,
    tmp_path: Path,
    kind: str,
    key: str,
    mode: str,
) -> None:
    archive = archives[(kind, key)]
    out = tmp_path / "out"
    result = export(archive.path, out, mode)
    verify_export(out, archive.path, result)
    if kind == "legacy" and key == "rich":
        entry = json.loads((out / "manifest.json").read_bytes())[0]
        assert len(set(entry["Layers"])) == len(entry["Layers"]), "legacy ids are distinct"
        repeated = [
            name
            for name in entry["Layers"]
            if (out / (name.split("/")[0] + ".tar.gz")).stat().st_nlink > 1
        ]
        assert repeated, "the symlinked repeated layer has its own file (a hard link)"
    # the artifacts make an image docker loads, with the original IDs
    rebuilt = reassemble(out, tmp_path / "rebuilt.tar")
    for tag, image_id in zip(archive.tags, archive.image_ids, strict=True):
        docker_engine.remove_image(tag, image_id)
    docker_engine.load(rebuilt)
    for tag, image_id in zip(archive.tags, archive.image_ids, strict=True):
        assert docker_engine.image_id(tag) == image_id


@pytest.mark.parametrize(("kind", "key"), [("legacy", "two"), ("docker25", "two+sources")])
def test_reproducible(
    archives: dict[tuple[str, str], Archive], tmp_path: Path, kind: str, key: str
) -> None:
    """The same input, from a file, from a pipe, and through the API with a stream: the same
    bytes in every file."""
    archive = archives[(kind, key)]
    first = files_of(export(archive.path, tmp_path / "a", "file"), tmp_path / "a")
    assert first == files_of(export(archive.path, tmp_path / "b", "pipe"), tmp_path / "b")
    with archive.path.open("rb") as stream:
        result = ocikit.export_layers(stream, tmp_path / "c")
    assert result.outdir == str(tmp_path / "c")
    assert files(tmp_path / "c") == first
    assert [len(image.layers) for image in result.images] == [
        len(entry["Layers"]) for entry in read_manifest_json(archive.path)
    ]


def files_of(_result: dict[str, Any], out: Path) -> dict[str, bytes]:
    return files(out)


def test_one_image_of_two(legacy_archive_two: Archive, tmp_path: Path) -> None:
    """A name (or @N) exports that image only."""
    tag = legacy_archive_two.tags[1]
    out = tmp_path / "out"
    ok("export-layers", "-q", f"docker-archive:{legacy_archive_two.path}:{tag}", str(out))
    manifest = json.loads((out / "manifest.json").read_bytes())
    assert [entry["RepoTags"] for entry in manifest] == [[tag]]
    assert len(json.loads((out / "digests.json").read_bytes())) == 1
    config = (out / manifest[0]["Config"]).read_bytes()
    assert "sha256:" + sha256(config) == legacy_archive_two.image_ids[1]


def test_v2metadata(legacy_archive_rich: Archive, tmp_path: Path) -> None:
    """Where docker recorded that a layer came from a registry, digests.json says so."""
    config = json.loads(
        member(legacy_archive_rich.path, read_manifest_json(legacy_archive_rich.path)[0]["Config"])
    )
    diff_ids = config["rootfs"]["diff_ids"]
    v2 = tmp_path / "v2metadata-by-diffid"
    (v2 / "sha256").mkdir(parents=True)
    pulled = "sha256:" + "ab" * 32
    record = [
        {"Digest": pulled, "SourceRepository": "docker.io/library/busybox", "HMAC": ""},
        {"Digest": "sha256:" + "cd" * 32, "SourceRepository": "example.com/other", "HMAC": ""},
    ]
    (v2 / "sha256" / diff_ids[0].removeprefix("sha256:")).write_text(json.dumps(record))
    out = tmp_path / "out"
    export(legacy_archive_rich.path, out, "file", "--v2metadata", str(v2))
    digests = json.loads((out / "digests.json").read_bytes())[0]
    first = digests[diff_ids[0]]
    assert (first["digest"], first["source"]) == (pulled, "docker.io/library/busybox")
    for diff_id in diff_ids[1:]:
        data = (out / f"{digests[diff_id]['layer_id']}.tar.gz").read_bytes()
        assert digests[diff_id]["digest"] == sha256(data) and digests[diff_id]["source"] == ""
    # the sha256 directory itself is accepted too
    out2 = tmp_path / "out2"
    export(legacy_archive_rich.path, out2, "file", "--v2metadata", str(v2 / "sha256"))
    assert files(out2) == files(out)
    # a malformed record: one line, nothing written
    (v2 / "sha256" / diff_ids[0].removeprefix("sha256:")).write_text('{"not": "a list"}')
    out3 = tmp_path / "out3"
    proc = run_ocikit(
        "export-layers",
        "--v2metadata",
        str(v2),
        f"docker-archive:{legacy_archive_rich.path}",
        str(out3),
    )
    assert_one_line_error(proc, contains="v2metadata")
    assert not out3.exists(), "the directory it made is gone again"


def test_from_oci_layout(legacy_archive_rich: Archive, tmp_path: Path) -> None:
    """Any source works: gzip layers of a layout are taken as they are, named by diff_id."""
    layout = tmp_path / "layout"
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{layout}:t")
    out = tmp_path / "out"
    ok("export-layers", "-q", f"oci:{layout}:t", str(out))
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes()
    )
    digests = json.loads((out / "digests.json").read_bytes())[0]
    for diff_id, record in digests.items():
        assert record["layer_id"] == diff_id.removeprefix("sha256:")
        data = (out / f"{record['layer_id']}.tar.gz").read_bytes()
        assert "sha256:" + record["digest"] in [layer["digest"] for layer in manifest["layers"]]
        assert "sha256:" + sha256(gzip.decompress(data)) == diff_id


def test_replaces_an_earlier_export(legacy_archive_two: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(legacy_archive_two.path, out, "file")
    (out / "unrelated.txt").write_text("kept")
    result = export(legacy_archive_two.path, out, "file")
    verify_export_keeping(out, legacy_archive_two.path, result, {"unrelated.txt"})


def verify_export_keeping(out: Path, source: Path, result: dict[str, Any], keep: set[str]) -> None:
    moved = tmp = out.parent / "without-kept"
    tmp.mkdir()
    for name in keep:
        shutil.move(out / name, tmp / name)
    try:
        verify_export(out, source, result)
    finally:
        for name in keep:
            shutil.move(moved / name, out / name)


BAD = [
    "not-a-tar",
    "empty",
    "truncated",
    "missing-layer",
    "missing-config",
    "diff-id-mismatch",
    "symlink-outside",
    "bad-manifest-json",
    "docker25-digest-mismatch",
    "docker25-config-mismatch",
    "docker25-missing-blob",
]


@pytest.mark.parametrize("mode", ["file", "pipe"])
@pytest.mark.parametrize("case", BAD)
def test_bad_input(
    bad_archives: dict[str, BadInput],
    legacy_archive_rich: Archive,
    tmp_path: Path,
    case: str,
    mode: str,
) -> None:
    """Exit 2, one line; an earlier export in OUTDIR stays whole, nothing else appears.
    In this process, but from a pipe: the command as a process."""
    bad = bad_archives[case]
    out = tmp_path / "out"
    inprocess.ok("export-layers", "--json", f"docker-archive:{legacy_archive_rich.path}", str(out))
    before = tree(out)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    if mode == "file":
        proc = inprocess.ocikit("export-layers", f"docker-archive:{bad.path}", str(out), env=env)
    else:
        proc = ocikit_from_pipe(
            ["cat", str(bad.path)], "export-layers", "docker-archive:-", str(out), env=env
        )
    assert_one_line_error(proc, contains=bad.expect)
    assert tree(out) == before
    assert list(tmpdir.iterdir()) == []
    # and into a new directory: nothing that looks like a result
    fresh = tmp_path / "fresh"
    proc = inprocess.ocikit("export-layers", f"docker-archive:{bad.path}", str(fresh), env=env)
    assert_one_line_error(proc)
    assert not (fresh / "manifest.json").exists() and not (fresh / "digests.json").exists()
    assert not fresh.exists() or list(fresh.iterdir()) == []


def test_usage_errors(legacy_archive_rich: Archive, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    proc = run_ocikit("export-layers", f"docker-archive:{legacy_archive_rich.path}", str(target))
    assert_one_line_error(proc, contains="not a directory")
    proc = run_ocikit(
        "export-layers",
        "--level",
        "12",
        f"docker-archive:{legacy_archive_rich.path}",
        str(tmp_path / "o"),
    )
    assert_one_line_error(proc, contains="level")
    assert os.path.exists(target)
