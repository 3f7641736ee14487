"""Pure data: digests, references, manifests keep their bytes."""

from __future__ import annotations

import json

import pytest

from ocikit.errors import InputError, UsageError
from ocikit.model import Descriptor, Digest, Manifest, Platform, parse_manifest_or_index
from ocikit.model import mediatypes as mt
from ocikit.transports.reference import (
    familiar_docker_name,
    normalize_docker_name,
    parse_reference,
)

HEX = "a" * 64


def test_digest_validation() -> None:
    d = Digest(f"sha256:{HEX}")
    assert (d.algorithm, d.hex) == ("sha256", HEX)
    for bad in ("sha256:abc", f"sha256:{HEX.upper()}", HEX, f"md5:{HEX}", ""):
        with pytest.raises(InputError):
            Digest(bad)


def test_manifest_keeps_unknown_fields_and_bytes() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": 3},
        "layers": [
            {
                "mediaType": mt.OCI_LAYER_GZIP,
                "digest": f"sha256:{'b' * 64}",
                "size": 5,
                "annotations": {"k": "v"},
                "x-extra": [1, 2],
            }
        ],
    }
    raw = json.dumps(doc, indent=3).encode()
    m = parse_manifest_or_index(raw)
    assert isinstance(m, Manifest)
    assert m.raw == raw and m.digest == Digest.of(raw)
    assert m.layers[0].to_json() == doc["layers"][0]
    rebuilt = Manifest.build(m.config, m.layers)
    assert json.loads(rebuilt.raw) == doc
    assert Manifest.build(m.config, m.layers).raw == rebuilt.raw  # canonical


def test_descriptor_errors_name_the_place() -> None:
    with pytest.raises(InputError, match=r"layers\[0\]: missing 'digest'"):
        Manifest.parse(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "config": Descriptor(mt.OCI_CONFIG, Digest(f"sha256:{HEX}"), 1).to_json(),
                    "layers": [{"mediaType": mt.OCI_LAYER, "size": 1}],
                }
            ).encode()
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci:/tmp/x", ("oci", "/tmp/x", None, None)),
        ("oci:/tmp/x:v1.0", ("oci", "/tmp/x", "v1.0", None)),
        ("oci-archive:-", ("oci-archive", "-", None, None)),
        ("docker-archive:a.tar", ("docker-archive", "a.tar", None, None)),
        ("docker-archive:a.tar:busybox", ("docker-archive", "a.tar", "busybox:latest", None)),
        (
            "docker-archive:a.tar:reg:5000/x/y:t",
            ("docker-archive", "a.tar", "reg:5000/x/y:t", None),
        ),
        ("docker-archive:a.tar@1", ("docker-archive", "a.tar", None, 1)),
        ("docker-archive:a.tar:@2", ("docker-archive", "a.tar", None, 2)),
        ("docker-archive:-", ("docker-archive", "-", None, None)),
        ("docker://busybox", ("docker", "docker.io/library/busybox", "latest", None)),
        ("docker://127.0.0.1:5000/a/b:1", ("docker", "127.0.0.1:5000/a/b", "1", None)),
        (
            "docker://localhost/x@sha256:" + "a" * 64,
            ("docker", "localhost/x", "sha256:" + "a" * 64, None),
        ),
        ("docker://index.docker.io/u/r:t", ("docker", "docker.io/u/r", "t", None)),
        ("docker-daemon:busybox", ("docker-daemon", "busybox:latest", None, None)),
        ("docker-daemon:sha256:" + "b" * 64, ("docker-daemon", "sha256:" + "b" * 64, None, None)),
    ],
)
def test_parse_reference(text: str, expected: tuple) -> None:
    ref = parse_reference(text)
    assert (ref.transport, ref.path, ref.name, ref.index) == expected


@pytest.mark.parametrize(
    "text",
    [
        "nothing",
        "ftp:x",
        "docker:x/y",
        "docker://x/Y",
        "docker://h:5000/x@sha256:123",
        "docker-daemon:Bad Name",
        "oci:",
        "docker-archive:a.tar:UPPER:x",
        "oci::t",
    ],
)
def test_bad_references(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


def test_docker_names() -> None:
    assert normalize_docker_name("busybox") == "docker.io/library/busybox:latest"
    assert normalize_docker_name("me/app:1") == "docker.io/me/app:1"
    assert normalize_docker_name("localhost:5000/app") == "localhost:5000/app:latest"
    assert familiar_docker_name("docker.io/library/busybox:1") == "busybox:1"
    assert familiar_docker_name("quay.io/x/y:2") == "quay.io/x/y:2"


def test_platform() -> None:
    p = Platform.parse("linux/arm64/v8")
    assert Platform("linux", "arm64", "v8").matches(Platform.parse("linux/arm64"))
    assert str(p) == "linux/arm64/v8"
    with pytest.raises(UsageError):
        Platform.parse("linux")
