"""``copy --all``: an image index (several platforms and an attestation) copied whole between
OCI layouts, oci-archives and a real registry; checked by skopeo; one platform with
``--platform``; refused where an index cannot go. Also: a registry-to-registry copy keeps a
Docker schema 2 manifest (and so every digest) as it is."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from support.archives import SAMPLE
from support.cli import assert_one_line_error, ocikit, ok
from support.layouts import (
    blob_path,
    file,
    put_blob,
    tar_bytes,
    write_layout,
)
from support.registry import CountingProxy, Registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def _descriptor(layout: Path, digest: str, media_type: str) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": blob_path(layout, digest).stat().st_size,
    }


def multi_platform(layout: Path) -> bytes:
    """A layout whose ``multi`` is an index: amd64 and arm64 images sharing a base layer,
    and an in-toto attestation manifest for the amd64 one. Returns the index's bytes."""
    base = tar_bytes([file("etc/base", "shared")])
    manifests = []
    for arch in ("amd64", "arm64"):
        own = tar_bytes([file(f"bin/{arch}", os.urandom(300_000))])
        digest = write_layout(
            layout,
            [base, own],
            ref=arch,
            edit_config=lambda c, a=arch: c.update(architecture=a),
        )
        desc = _descriptor(layout, digest, OCI_MANIFEST)
        manifests.append({**desc, "platform": {"architecture": arch, "os": "linux"}})
    statement = put_blob(layout, b'{"_type":"https://in-toto.io/Statement/v0.1"}')
    empty = put_blob(layout, b"{}")
    attestation = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": "application/vnd.in-toto+json", **statement}],
    }
    att = put_blob(layout, json.dumps(attestation).encode())
    manifests.append(
        {
            "mediaType": OCI_MANIFEST,
            **att,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": manifests[0]["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }
    )
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    desc = put_blob(layout, raw)
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"].append({"mediaType": OCI_INDEX, **desc, "annotations": {REF_NAME: "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    return raw


def tagged(layout: Path, name: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_bytes())
    (desc,) = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == name]
    return desc


def blob(layout: Path, digest: str) -> bytes:
    data = blob_path(layout, digest).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def every_blob_present(layout: Path, index_raw: bytes) -> None:
    for m in json.loads(index_raw)["manifests"]:
        manifest = json.loads(blob(layout, m["digest"]))
        for d in [manifest["config"], *manifest["layers"]]:
            blob(layout, d["digest"])


def test_all_between_layouts_and_archives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw = multi_platform(src)
    ok("copy", "-q", "--all", f"oci:{src}:multi", f"oci:{tmp_path}/dst:m")
    desc = tagged(tmp_path / "dst", "m")
    assert desc["mediaType"] == OCI_INDEX
    assert blob(tmp_path / "dst", desc["digest"]) == raw, "the index is kept byte for byte"
    every_blob_present(tmp_path / "dst", raw)
    # through an oci-archive, and from a pipe
    archive = tmp_path / "multi.tar"
    ok("copy", "-q", "--all", f"oci:{src}:multi", f"oci-archive:{archive}:m")
    with archive.open("rb") as f:
        proc = ocikit("copy", "--all", "oci-archive:-:m", f"oci:{tmp_path}/piped:m", stdin=f)
    assert proc.returncode == 0, proc.stderr
    assert blob(tmp_path / "piped", tagged(tmp_path / "piped", "m")["digest"]) == raw
    every_blob_present(tmp_path / "piped", raw)
    # skopeo reads what ocikit wrote
    skopeo("copy", "--all", f"oci:{tmp_path}/dst:m", f"oci:{tmp_path}/sk:m")
    # --all on a single image copies it; without --all one platform is picked
    ok("copy", "-q", "--all", f"oci:{src}:amd64", f"oci:{tmp_path}/one:t")
    out = ok(
        "copy", "--json", "--platform", "linux/arm64", f"oci:{src}:multi", f"oci:{tmp_path}/a:t"
    )
    assert json.loads(out.stdout)["digest"] == json.loads(raw)["manifests"][1]["digest"]


def test_all_recompressed_rebuilds_the_index(tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw = multi_platform(src)
    out = ok(
        "copy",
        "--json",
        "--all",
        "--dest-compress-format",
        "zstd",
        f"oci:{src}:multi",
        f"oci:{tmp_path}/z:m",
    )
    result = json.loads(out.stdout)
    new = blob(tmp_path / "z", tagged(tmp_path / "z", "m")["digest"])
    assert json.loads(new)["mediaType"] == OCI_INDEX
    assert result["digest"] == "sha256:" + hashlib.sha256(new).hexdigest()
    before, after = json.loads(raw)["manifests"], json.loads(new)["manifests"]
    assert [m.get("platform") for m in after] == [m.get("platform") for m in before]
    assert after[2] == before[2], "the attestation is copied as it is"
    assert after[0]["digest"] != before[0]["digest"]
    for arch in ("amd64", "arm64"):
        ok("check", "--platform", f"linux/{arch}", f"oci:{tmp_path}/z:m")
    every_blob_present(tmp_path / "z", new)


def test_all_refused_where_no_index_goes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    multi_platform(src)
    proc = ocikit("copy", "--all", f"oci:{src}:multi", f"docker-archive:{tmp_path}/x.tar:a:1")
    assert_one_line_error(proc, contains="cannot hold an image index")
    assert not (tmp_path / "x.tar").exists()
    proc = ocikit(
        "copy", "--all", "--platform", "linux/amd64", f"oci:{src}:multi", f"oci:{tmp_path}/y"
    )
    assert_one_line_error(proc, contains="--platform")
    proc = ocikit("copy", "--all", "--repair", f"oci:{src}:multi", f"oci:{tmp_path}/y")
    assert_one_line_error(proc, contains="--repair")


def test_all_to_and_from_a_registry(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw = multi_platform(src)
    ref = f"docker://{registry.host}/multi/app:1"
    with CountingProxy(registry.host) as proxy:
        ok("copy", "-q", "--all", f"oci:{src}:multi", ref.replace(registry.host, proxy.host))
        # skopeo sees the index as pushed, and copies every platform out of it
        assert skopeo("inspect", "--raw", "--tls-verify=false", ref) == raw
        skopeo("copy", "--all", "--src-tls-verify=false", ref, f"oci:{tmp_path}/sk:m")
        # pushing again sends no blob, and manifests before the index
        proxy.reset()
        ok("copy", "-q", "--all", f"oci:{src}:multi", ref.replace(registry.host, proxy.host))
        assert proxy.upload_bytes == 0
        puts = [p for m, p in proxy.requests if m == "PUT" and "/manifests/" in p]
        assert len(puts) == 4 and puts[-1].endswith("/manifests/1")
    # pulled back whole: the same index, every blob
    ok("copy", "-q", "--all", ref, f"oci:{tmp_path}/back:m")
    assert blob(tmp_path / "back", tagged(tmp_path / "back", "m")["digest"]) == raw
    every_blob_present(tmp_path / "back", raw)
    # to another repository of the registry: the same index digest, blobs mounted
    out = ok("copy", "--json", "--all", ref, f"docker://{registry.host}/multi/copy:2")
    assert json.loads(out.stdout)["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    # one platform of it
    out = ok("copy", "--json", "--platform", "linux/arm64", ref, f"oci:{tmp_path}/arm:t")
    assert json.loads(out.stdout)["digest"] == json.loads(raw)["manifests"][1]["digest"]


def test_registry_copy_keeps_docker_manifests(registry: Registry, tmp_path: Path) -> None:
    """skopeo pushes a docker-archive as a Docker schema 2 manifest; ocikit copying it to
    another repository keeps those bytes, so the digest users pinned stays valid."""
    first = f"docker://{registry.host}/v2s2/one:1"
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{SAMPLE}", first)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", first)
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    ok("copy", "-q", first, f"docker://{registry.host}/v2s2/two:1")
    assert skopeo("inspect", "--raw", "--tls-verify=false", first.replace("one", "two")) == raw
