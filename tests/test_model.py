"""Pure data: digests, references, manifests keep their bytes."""

from __future__ import annotations

import json

import pytest

from ocikit.errors import InputError, UsageError
from ocikit.model import (
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    parse_manifest_or_index,
)
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
    assert m.layers[0].to_dict() == doc["layers"][0]
    rebuilt = Manifest.build(m.config, m.layers)
    assert json.loads(rebuilt.raw) == doc
    assert Manifest.build(m.config, m.layers).raw == rebuilt.raw  # canonical


def test_descriptor_errors_name_the_place() -> None:
    with pytest.raises(InputError, match=r"layers\[0\]: missing 'digest'"):
        Manifest.parse(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "config": Descriptor(mt.OCI_CONFIG, Digest(f"sha256:{HEX}"), 1).to_dict(),
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


# -- every field of the wrong type is an InputError naming it, never a crash further on --------

DIGEST = f"sha256:{HEX}"
GOOD_DESCRIPTOR = {"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST, "size": 5}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mediaType", 5),
        ("mediaType", None),
        ("digest", 5),
        ("digest", [DIGEST]),
        ("digest", "sha256:zz"),
        ("size", -1),
        ("size", True),
        ("size", 1.5),
        ("size", "5"),
        ("size", 1 << 63),
        ("annotations", "a string"),
        ("annotations", {"k": 5}),
        ("annotations", ["k"]),
        ("urls", 5),
        ("urls", "http://x"),
        ("urls", [5]),
        ("platform", "linux/amd64"),
        ("platform", {"os": 5, "architecture": "amd64"}),
        ("platform", {"os": "linux", "architecture": ["amd64"]}),
        ("platform", {"os": "linux", "architecture": "arm", "variant": 7}),
        ("platform", {"os": "linux", "architecture": "amd64", "os.features": "x"}),
        ("artifactType", 5),
        ("data", {}),
    ],
)
def test_descriptor_fields_are_typed(field: str, value: object) -> None:
    with pytest.raises(InputError, match=r"layers\[0\]"):
        Manifest.parse(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "config": {**GOOD_DESCRIPTOR, "mediaType": mt.OCI_CONFIG},
                    "layers": [{**GOOD_DESCRIPTOR, field: value}],
                }
            ).encode()
        )


MANIFEST = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_MANIFEST,
    "config": {**GOOD_DESCRIPTOR, "mediaType": mt.OCI_CONFIG},
    "layers": [GOOD_DESCRIPTOR],
}
INDEX = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_INDEX,
    "manifests": [{**GOOD_DESCRIPTOR, "mediaType": mt.OCI_MANIFEST}],
}


@pytest.mark.parametrize(
    ("doc", "field", "value"),
    [
        (MANIFEST, "schemaVersion", "2"),
        (MANIFEST, "schemaVersion", 2.0),
        (MANIFEST, "schemaVersion", True),
        (MANIFEST, "mediaType", ["a list"]),
        (MANIFEST, "mediaType", {}),
        (MANIFEST, "config", [GOOD_DESCRIPTOR]),
        (MANIFEST, "config", None),
        (MANIFEST, "layers", GOOD_DESCRIPTOR),
        (MANIFEST, "layers", "a string"),
        (MANIFEST, "annotations", "a string"),
        (MANIFEST, "annotations", {"k": None}),
        (MANIFEST, "subject", 5),
        (MANIFEST, "artifactType", []),
        (INDEX, "schemaVersion", 1),
        (INDEX, "mediaType", ["a list"]),
        (INDEX, "mediaType", mt.OCI_MANIFEST),
        (INDEX, "manifests", {}),
        (INDEX, "manifests", [5]),
        (INDEX, "annotations", [["k", "v"]]),
    ],
)
def test_manifest_and_index_fields_are_typed(doc: dict, field: str, value: object) -> None:
    raw = json.dumps({**doc, field: value}).encode()
    with pytest.raises(InputError):
        parse_manifest_or_index(raw)
    with pytest.raises(InputError):
        (Index if doc is INDEX else Manifest).parse(raw)


CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["A=1"], "Labels": {"k": "v"}, "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    "history": [{"created_by": "x"}],
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("config",), "a string"),
        (("config",), []),
        (("config", "Labels"), ["k=v"]),
        (("config", "Labels"), {"k": 1}),
        (("config", "Env"), "A=1"),
        (("config", "Env"), [1]),
        (("config", "Entrypoint"), 5),
        (("config", "Cmd"), {"sh": True}),
        (("config", "User"), 0),
        (("config", "WorkingDir"), []),
        (("config", "ExposedPorts"), ["80/tcp"]),
        (("config", "Volumes"), "/data"),
        (("history",), "a string"),
        (("history",), [5]),
        (("history",), [{"empty_layer": "yes"}]),
        (("history",), [{"created_by": ["x"]}]),
        (("rootfs",), []),
        (("rootfs", "diff_ids"), DIGEST),
        (("rootfs", "diff_ids"), [5]),
        (("rootfs", "diff_ids"), ["sha256:short"]),
        (("rootfs", "type"), 5),
        (("os",), 5),
        (("architecture",), ["amd64"]),
        (("variant",), 8),
        (("created",), 1700000000),
        (("os.features",), "sse4"),
    ],
)
def test_config_fields_are_typed(path: tuple[str, ...], value: object) -> None:
    doc = json.loads(json.dumps(CONFIG))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError, match=path[-1].replace(".", r"\.")):
        ImageConfig.parse(json.dumps(doc).encode())


def test_weird_but_valid_documents_parse() -> None:
    """Nulls where a field is optional, a string Cmd (docker accepts one), empty objects,
    unknown fields of any type, platform features kept on a round trip."""
    config = ImageConfig.parse(
        json.dumps(
            {
                "config": {"Cmd": "sh", "Env": None, "Labels": None, "Entrypoint": None},
                "rootfs": {"diff_ids": None},
                "history": None,
                "x-unknown": [{"deep": [1, 2.5, None, True]}],
            }
        ).encode()
    )
    assert config.diff_ids == [] and config.history == []
    platform = {"os": "windows", "architecture": "amd64", "os.features": ["win32k"]}
    desc = Descriptor.from_json({**GOOD_DESCRIPTOR, "platform": platform, "urls": None})
    assert desc.to_dict()["platform"] == platform
    assert Descriptor.from_json(desc.to_dict()) == desc
