"""JSON documents are bounded before they are parsed: size, nesting depth and number of values,
for every document ocikit reads (docker-archive ``manifest.json`` and configs, a layout's
``oci-layout``, ``index.json``, manifests and configs, auth files, ``v2metadata``). A huge or
deeply nested document is one line and exit 2, never a RecursionError (exit 3) or gigabytes of
memory: the peak RSS of a real ``ocikit`` process is measured."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from ocikit.errors import InputError
from ocikit.model import jsondoc
from ocikit.model.jsondoc import MANIFEST_LIMIT, MAX_DEPTH, load_json
from support.archives import SAMPLE
from support.inprocess import assert_one_line, run
from support.layouts import file, put_blob, tag_manifest, tar_bytes, write_layout
from support.rss import run_measured
from support.verify import OCI_CONFIG, OCI_MANIFEST

DEEP = b"[" * 5_000 + b"]" * 5_000  # 10 KB: under every limit of size and values


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def docker_archive(path: Path, manifest_json: bytes | None = None, config: bytes | None = None):
    """A legacy docker-archive of one empty layer; ``manifest_json`` or ``config`` replace
    the real ones (the config keeps its content-addressed name)."""
    layer = tar_bytes([file("a.txt", "a")])
    if config is None:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer)}"]},
            }
        ).encode()
    config_name = f"{_sha(config)}.json"
    if manifest_json is None:
        manifest_json = json.dumps(
            [{"Config": config_name, "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}]
        ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [
            (config_name, config),
            ("l1/layer.tar", layer),
            ("manifest.json", manifest_json),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# -- the loader --------------------------------------------------------------------------------


def test_loader_refuses_what_is_too_large_deep_or_dense() -> None:
    assert load_json(b'{"a":[1,2,{"b":"c"}]}', "doc") == {"a": [1, 2, {"b": "c"}]}
    with pytest.raises(InputError, match="too large"):
        load_json(b"[" + b"0," * 100 + b"0]", "doc", limit=100)
    deep_ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert load_json(deep_ok, "doc") is not None
    for deep in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b'{"a":' * 65 + b"1" + b"}" * 65):
        with pytest.raises(InputError, match="nests too deeply"):
            load_json(deep, "doc")
    with pytest.raises(InputError, match="nests too deeply"):
        load_json(b"[" * 50 + b"[]," * 10 + DEEP + b"]" * 50, "doc")
    with pytest.raises(InputError, match="too many values"):
        load_json(b"[" + b"0," * (MANIFEST_LIMIT // 7) + b"0]", "doc", limit=MANIFEST_LIMIT)


def test_loader_reads_strings_as_strings() -> None:
    """Brackets, quotes and escapes inside strings are not structure; broken JSON is
    reported as such, not as depth."""
    text = "[" * 1000 + '\\"' + "{" * 1000
    assert load_json(json.dumps({"k": text, "e": "\\\\"}).encode(), "doc")["k"] == text
    assert load_json(b'\xef\xbb\xbf{"bom":true}', "doc") == {"bom": True}
    for bad in (b"[" * 10, b"]" * 1000 + b"[" * 1000, b'{"a": NaN}', b"[Infinity]", b"\xff"):
        with pytest.raises(InputError, match="not valid JSON"):
            load_json(bad, "doc")
    with pytest.raises(InputError, match="not valid JSON"):
        load_json('{"utf16": 1}'.encode("utf-16"), "doc")


@pytest.mark.parametrize(
    "unit",
    [b"{},", b"[],", b"[[]],", b"[[[[[[]]]]]],", b'{"a":{}},', b"0,", b"1.5,", b'"ab",'],
    ids=["dicts", "lists", "nested", "deep", "objects", "ints", "floats", "strings"],
)
def test_loader_memory_stays_proportional(unit: bytes) -> None:
    """Manifest-sized documents (4 MiB limit) of the costliest shapes (json.loads alone
    costs up to 43 bytes per byte of these: 170 MiB at 4 MiB): the densest one accepted
    parses within 64 MiB, one as large as the limit is refused within 16 MiB."""
    per_value = sum(unit.count(c) for c in b",:[{")
    accepted = (MANIFEST_LIMIT // jsondoc.BYTES_PER_VALUE - 8) // per_value
    refused = (MANIFEST_LIMIT - 4) // len(unit)
    for count, budget in ((accepted, 64 << 20), (refused, 16 << 20)):
        raw = b"[" + unit * count + b"0]"
        tracemalloc.start()
        try:
            try:
                load_json(raw, "doc", limit=MANIFEST_LIMIT)
                assert count == accepted
            except InputError as e:
                assert count == refused and "too many values" in str(e)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < budget, f"{count} units: peak {peak >> 20} MiB"


# -- documents of archives and layouts ---------------------------------------------------------


def test_a_huge_manifest_json_keeps_memory_low(tmp_path: Path) -> None:
    """A 60 MiB ``manifest.json`` of ``{}``: refused by its size, read no further (it cost
    1.6 GB before); peak RSS within 40 MiB of inspecting a real archive."""
    huge = docker_archive(tmp_path / "huge.tar", b"[" + b"{}," * (20 << 20) + b"{}]")
    code, err, baseline = run_measured("inspect", f"docker-archive:{SAMPLE}")
    assert code == 0, err
    code, err, peak = run_measured("inspect", f"docker-archive:{huge}")
    assert code == 2 and err.count("\n") == 1 and "too large" in err, err
    assert peak < baseline + 40, f"peak RSS {peak} MiB, baseline {baseline} MiB"


def _layout(tmp_path: Path) -> Path:
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("a.txt", "a")])])
    return layout


def _deep_config_layout(tmp_path: Path) -> str:
    layout = tmp_path / "layout"
    write_layout(layout, [])
    config = put_blob(layout, b'{"rootfs":{"type":"layers","diff_ids":[]},"x":' + DEEP + b"}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": [],
    }
    tag_manifest(layout, manifest, "t")
    return f"oci:{layout}:t"


def _deep_manifest_layout(tmp_path: Path) -> str:
    layout = _layout(tmp_path)
    index = json.loads((layout / "index.json").read_bytes())
    desc = put_blob(layout, b'{"schemaVersion":2,"x":' + DEEP + b"}")
    index["manifests"][0].update(desc)
    (layout / "index.json").write_text(json.dumps(index))
    return f"oci:{layout}:t"


def _deep_file(name: str) -> Callable[[Path], str]:
    def make(tmp_path: Path) -> str:
        layout = _layout(tmp_path)
        (layout / name).write_bytes(DEEP)
        return f"oci:{layout}:t"

    return make


def _deep_archive_manifest(tmp_path: Path) -> str:
    return f"docker-archive:{docker_archive(tmp_path / 'a.tar', manifest_json=DEEP)}"


def _deep_archive_config(tmp_path: Path) -> str:
    deep_config = b'{"x":' + DEEP + b"}"
    return f"docker-archive:{docker_archive(tmp_path / 'a.tar', config=deep_config)}"


CASES: dict[str, Callable[[Path], str]] = {
    "docker-archive manifest.json": _deep_archive_manifest,
    "docker-archive config": _deep_archive_config,
    "oci index.json": _deep_file("index.json"),
    "oci oci-layout": _deep_file("oci-layout"),
    "oci manifest": _deep_manifest_layout,
    "oci config": _deep_config_layout,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_deeply_nested_documents(case: str, tmp_path: Path) -> None:
    """Nested 5,000 deep: one line, exit 2 (it was a RecursionError, exit 3), for inspect,
    check and copy."""
    ref = CASES[case](tmp_path)
    for args in (("inspect", ref), ("check", ref), ("copy", "-q", ref, f"oci:{tmp_path}/out")):
        assert_one_line(run(*args), contains="nests too deeply")


def test_deep_auth_file_and_v2metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth file and docker's v2metadata records go through the same loader."""
    auth = tmp_path / "auth.json"
    auth.write_bytes(b'{"auths":' + DEEP + b"}")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert_one_line(run("inspect", "docker://127.0.0.1:9/a/b:1"), contains="nests too deeply")

    archive = docker_archive(tmp_path / "a.tar")
    v2 = tmp_path / "v2"
    (v2 / "sha256").mkdir(parents=True)
    layer = tar_bytes([file("a.txt", "a")])
    (v2 / "sha256" / _sha(layer)).write_bytes(DEEP)
    out = str(tmp_path / "out")
    result = run("export-layers", "-q", "--v2metadata", str(v2), f"docker-archive:{archive}", out)
    assert_one_line(result, contains="v2metadata")


def test_limits_hold_for_layout_documents(tmp_path: Path) -> None:
    """Each kind of document has its limit: a 1 MiB ``oci-layout`` is too large; an
    ``index.json`` of 4 MB (its limit is 16 MiB) holding 1.2 million values is too dense."""
    layout = _layout(tmp_path)
    pad = b"x" * (1 << 20)
    (layout / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0","pad":"' + pad + b'"}')
    assert_one_line(run("inspect", f"oci:{layout}:t"), contains="too large")
    layout = _layout(tmp_path / "2")
    index = json.dumps(json.loads((layout / "index.json").read_bytes()), separators=(",", ":"))
    dense = index.encode().replace(b'"annotations":{', b'"annotations":{' + b'"":"",' * 600_000)
    assert len(dense) < jsondoc.INDEX_JSON_LIMIT
    (layout / "index.json").write_bytes(dense)
    assert_one_line(run("inspect", f"oci:{layout}:t"), contains="too many values")
