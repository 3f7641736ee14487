"""Malformed fields anywhere: a valid image whose ``index.json``, manifest, config or
docker-archive ``manifest.json`` has one value replaced by one of the wrong type (or a string
with a newline and a terminal escape), at every path the document has and at the optional
fields it lacks: all of them, then two at once (hypothesis). ``inspect``, ``check`` and
``copy`` to ``oci:`` run in-process and must exit 0, 1 (``check`` only) or 2 with one short
line: never 3. And configs that are weird but valid (hypothesis): ``inspect`` prints them."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.inprocess import Result, run
from support.layouts import file, tar_bytes
from support.verify import LAYER_GZIP, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME

LAYER_TAR = tar_bytes([file("a.txt", "a"), file("b/c.txt", "c")])
LAYER = gzip.compress(LAYER_TAR, mtime=0)
OTHER = "sha256:" + "0" * 64
WRONG: list[Any] = [
    5,
    -1,
    1.5,
    True,
    None,
    "x",
    "",
    "a\nb\x1b[0m",
    [],
    [5],
    [[]],
    {},
    {"k": 5},
    OTHER,
]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


CONFIG = {
    "created": "2000-01-01T00:00:00Z",
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/bin"],
        "Labels": {"a": "b"},
        "Entrypoint": ["/bin/sh"],
        "Cmd": ["-c", "true"],
        "User": "0",
        "WorkingDir": "/",
        "ExposedPorts": {"80/tcp": {}},
    },
    "rootfs": {"type": "layers", "diff_ids": [_digest(LAYER_TAR)]},
    "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "x", "comment": "c"}],
}
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": _digest(_dumps(CONFIG)), "size": 0},
    "layers": [
        {
            "mediaType": LAYER_GZIP,
            "digest": _digest(LAYER),
            "size": len(LAYER),
            "annotations": {"k": "v"},
        }
    ],
    "annotations": {"org.example": "x"},
}
INDEX = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        {
            "mediaType": OCI_MANIFEST,
            "digest": OTHER,
            "size": 0,
            "annotations": {REF_NAME: "t"},
            "platform": {"architecture": "amd64", "os": "linux"},
        }
    ],
}
ARCHIVE_MANIFEST = [{"Config": "config.json", "RepoTags": ["x/y:1"], "Layers": ["l/layer.tar"]}]
DESCRIPTOR_EXTRAS = ["urls", "annotations", "platform", "artifactType", "data"]
ABSENT: dict[str, list[tuple[Any, ...]]] = {
    "config": [("config", k) for k in ("Volumes", "StopSignal")]
    + [("history", 0, "empty_layer"), ("os.features",), ("variant",), ("os.version",)],
    "manifest": [("config", k) for k in DESCRIPTOR_EXTRAS]
    + [("layers", 0, k) for k in DESCRIPTOR_EXTRAS]
    + [("subject",), ("artifactType",), ("layers", 0, "platform", "os.features")],
    "index": [("manifests", 0, k) for k in ("urls", "artifactType")] + [("annotations",)],
    "archive": [(0, "LayerSources"), (0, "Parent"), (0, "LayerSources", _digest(LAYER_TAR))],
}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


BASE = {"config": CONFIG, "manifest": MANIFEST, "index": INDEX, "archive": ARCHIVE_MANIFEST}
PATHS = {kind: sorted(set(_paths(doc)) | set(ABSENT[kind]), key=str) for kind, doc in BASE.items()}


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        if isinstance(target, dict) and not isinstance(target.get(key), dict | list):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return doc


def write_layout(root: Path, kind: str, mutated: Any, **others: Any) -> None:
    """An OCI layout of the image, ``kind``'s document replaced by ``mutated`` (and others
    by ``others``); the documents above it name it by its new digest, so only the wrong
    value is wrong."""
    docs = {k: copy.deepcopy(v) for k, v in BASE.items()}
    docs.update(copy.deepcopy(others))
    docs[kind] = mutated
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        (blobs / _digest(data).split(":")[1]).write_bytes(data)
        return {"digest": _digest(data), "size": len(data)}

    put(LAYER)
    config = put(_dumps(docs["config"]))
    if kind != "manifest":
        docs["manifest"]["config"].update(config)
    manifest = put(_dumps(docs["manifest"]))
    if kind != "index":
        docs["index"]["manifests"][0].update(manifest)
    (root / "index.json").write_bytes(_dumps(docs["index"]))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def write_archive(path: Path, kind: str, mutated: Any) -> None:
    docs = {k: copy.deepcopy(v) for k, v in BASE.items()}
    docs[kind] = mutated
    config = _dumps(docs["config"])
    if kind != "archive":
        docs["archive"][0]["Config"] = f"{_digest(config).split(':')[1]}.json"
    members = {"l/layer.tar": LAYER_TAR, "manifest.json": _dumps(docs["archive"])}
    if kind == "archive":
        members["config.json"] = config
    else:
        members[docs["archive"][0]["Config"]] = config
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _acceptable(result: Result, command: str) -> None:
    assert result.code in ((0, 1, 2) if command == "check" else (0, 2)), result
    if result.code == 2:
        err = result.stderr
        assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
        assert len(err) < 1000, err
    elif command == "inspect":
        json.loads(result.stdout)


def _run_all(ref: str, out: Path) -> None:
    _acceptable(run("inspect", ref), "inspect")
    _acceptable(run("check", ref), "check")
    _acceptable(run("copy", "-q", ref, f"oci:{out}"), "copy")


def _all(kinds: tuple[str, ...]) -> list[tuple[str, tuple[Any, ...], Any]]:
    return [(k, path, value) for k in kinds for path in PATHS[k] for value in WRONG]


def _failures(cases, write, ref_of, tmp_path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    failures = []
    for i, (kind, path, value) in enumerate(cases):
        where = tmp_path / str(i)
        write(where, kind, _set(BASE[kind], path, value))
        try:
            _run_all(ref_of(where), where / "out")
        except AssertionError as e:
            failures.append(f"{kind} {path} = {value!r}: {str(e).splitlines()[0]}")
    return failures


def test_wrong_types_everywhere_in_a_layout(tmp_path: Path) -> None:
    """Every path of the config, the manifest and index.json, every wrong value."""
    cases = _all(("config", "manifest", "index"))
    failures = _failures(
        cases,
        lambda where, kind, doc: write_layout(where / "layout", kind, doc),
        lambda where: f"oci:{where}/layout:t",
        tmp_path,
    )
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:20])


def test_wrong_types_everywhere_in_a_docker_archive(tmp_path: Path) -> None:
    """Every path of the config and manifest.json, every wrong value."""
    cases = _all(("config", "archive"))
    failures = _failures(
        cases,
        lambda where, kind, doc: (where.mkdir(), write_archive(where / "a.tar", kind, doc)),
        lambda where: f"docker-archive:{where}/a.tar",
        tmp_path,
    )
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:20])


@st.composite
def two_mutations(draw: st.DrawFn) -> tuple[str, Any]:
    """Two wrong values in one document (the exhaustive tests above change one)."""
    kind = draw(st.sampled_from(("config", "manifest", "index")))
    doc = BASE[kind]
    for _ in range(2):
        path = draw(st.sampled_from(PATHS[kind]))
        with contextlib.suppress(TypeError, IndexError, KeyError):  # a path the first removed
            doc = _set(doc, path, draw(st.sampled_from(WRONG)))
    return kind, doc


@settings(max_examples=100, deadline=None, derandomize=True)
@given(two_mutations())
def test_two_wrong_values_in_a_layout(mutation: tuple[str, Any]) -> None:
    kind, doc = mutation
    with tempfile.TemporaryDirectory() as tmp:
        write_layout(Path(tmp) / "layout", kind, doc)
        _run_all(f"oci:{tmp}/layout:t", Path(tmp) / "out")


def test_every_path_is_reached() -> None:
    """The property covers each document through the paths it has and the ones it lacks."""
    assert len(PATHS["config"]) > 25 and len(PATHS["manifest"]) > 25
    assert ("layers", 0, "urls") in PATHS["manifest"]
    assert ("manifests", 0, "platform", "os") in PATHS["index"]


# -- weird but valid -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(max_size=30)
weird_configs = st.fixed_dictionaries(
    {
        "config": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "Env": st.none() | st.lists(texts, max_size=4),
                    "Labels": st.none() | st.dictionaries(texts, texts, max_size=4),
                    "Entrypoint": st.none() | texts | st.lists(texts, max_size=3),
                    "Cmd": st.none() | texts | st.lists(texts, max_size=3),
                    "User": st.none() | texts,
                    "WorkingDir": st.none() | texts,
                    "Healthcheck": json_values,
                },
            ),
        ),
    },
    optional={
        "created": st.none() | texts,
        "author": texts,
        "os": texts,
        "architecture": texts,
        "variant": st.none() | texts,
        "history": st.none()
        | st.lists(
            st.fixed_dictionaries(
                {}, optional={"created_by": texts, "empty_layer": st.booleans() | st.none()}
            ),
            max_size=3,
        ),
        "x-unknown": json_values,
    },
)


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(weird_configs, st.dictionaries(texts, texts, max_size=3))
def test_inspect_prints_weird_but_valid_images(config: dict[str, Any], annotations: dict) -> None:
    config = {**config, "rootfs": CONFIG["rootfs"]}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = {**MANIFEST, "annotations": annotations}
        write_layout(Path(tmp) / "layout", "config", config, manifest=manifest)
        result = run("inspect", f"oci:{tmp}/layout:t")
        assert result.code == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed["annotations"] == annotations
        assert printed["labels"] == ((config.get("config") or {}).get("Labels") or {})


def test_inspect_prints_unpaired_surrogates() -> None:
    """JSON may escape half a surrogate pair (``"\\ud800"``); what inspect prints must still
    be UTF-8."""
    config = {**CONFIG, "config": {"Labels": {"k": "\ud800"}, "Env": ["X=\udfff"]}}
    with tempfile.TemporaryDirectory() as tmp:
        write_layout(Path(tmp) / "layout", "config", config)
        result = run("inspect", f"oci:{tmp}/layout:t")
        assert result.code == 0, result.stderr
        json.loads(result.stdout)
