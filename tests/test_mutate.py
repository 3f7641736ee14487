"""``model.mutate``: config edits as pure functions (the input never changes, only what an
edit names does), the one canonical JSON writer, and the build's config assembled from them
(``build.config``) as the engine always assembled it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ocikit.build.config import EDITS, configured, image_config, runtime_config
from ocikit.build.recipe import ImageConfigSpec, ImageSpec
from ocikit.build.schema import fields as record_fields
from ocikit.build.schema import validate
from ocikit.model import Descriptor, Digest, canonical_json
from ocikit.model import mediatypes as mt
from ocikit.model import mutate as m

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

BASE: dict[str, Any] = {
    "created": "2020-01-01T00:00:00Z",
    "author": "someone",
    "architecture": "arm64",
    "os": "linux",
    "variant": "v8",
    "config": {
        "Env": ["PATH=/usr/bin", "A=old", "B=2"],
        "Labels": {"keep": "1", "x": "old"},
        "ExposedPorts": {"22/tcp": {}},
        "Volumes": {"/old": {}},
        "Cmd": ["sh"],
    },
    "rootfs": {"type": "layers", "diff_ids": [D1]},
    "history": [{"created_by": "base"}],
}


@pytest.mark.parametrize(
    ("edit", "arg", "key", "expected"),
    [
        (m.with_env, {"A": "new", "C": "é"}, "Env", ["PATH=/usr/bin", "B=2", "A=new", "C=é"]),
        (m.with_entrypoint, ("/bin/app",), "Entrypoint", ["/bin/app"]),
        (m.with_cmd, ["--flag"], "Cmd", ["--flag"]),
        (m.with_user, "1000:50", "User", "1000:50"),
        (m.with_working_dir, "/srv", "WorkingDir", "/srv"),
        (m.with_stop_signal, "SIGINT", "StopSignal", "SIGINT"),
        (m.with_labels, {"x": "new", "y": "2"}, "Labels", {"keep": "1", "x": "new", "y": "2"}),
        (m.with_exposed_ports, ["80", "53/udp"], "ExposedPorts", {"22/tcp": {}, "80/tcp": {}, "53/udp": {}}),  # noqa: E501
        (m.with_volumes, ["/data"], "Volumes", {"/old": {}, "/data": {}}),
    ],
)  # fmt: skip
def test_each_container_edit_changes_its_key_only(
    edit: Any, arg: Any, key: str, expected: Any
) -> None:
    before = copy.deepcopy(BASE)
    out = edit(BASE, arg)
    assert before == BASE, "the input is never changed"
    assert out["config"][key] == expected
    assert {k: v for k, v in out["config"].items() if k != key} == {
        k: v for k, v in BASE["config"].items() if k != key
    }
    assert {k: v for k, v in out.items() if k != "config"} == {
        k: v for k, v in BASE.items() if k != "config"
    }
    assert list(out) == list(BASE), "keys keep their places"


def test_edits_of_a_config_without_a_container_config() -> None:
    assert m.with_env({}, {"A": "1"}) == {"config": {"Env": ["A=1"]}}
    assert m.with_labels({"config": None}, {}) == {"config": {"Labels": {}}}


def test_append_layer_and_empty_layer() -> None:
    before = copy.deepcopy(BASE)
    out = m.append_layer(BASE, D2, {"created_by": "step"})
    assert out["rootfs"] == {"type": "layers", "diff_ids": [D1, D2]}
    assert out["history"] == [{"created_by": "base"}, {"created_by": "step"}]
    empty = m.append_layer(BASE, None, {"created_by": "config only"})
    assert empty["rootfs"] == BASE["rootfs"]
    assert empty["history"][-1] == {"created_by": "config only", "empty_layer": True}
    assert before == BASE
    assert m.append_layer({}, D1, {})["rootfs"] == {"type": "layers", "diff_ids": [D1]}


def test_with_diff_ids_and_created() -> None:
    doc = {"rootfs": {"diff_ids": [D1], "type": "layers"}, "os": "linux"}
    out = m.with_diff_ids(doc, [D2])
    assert out == {"rootfs": {"diff_ids": [D2], "type": "layers"}, "os": "linux"}
    assert list(out["rootfs"]) == ["diff_ids", "type"] and doc["rootfs"]["diff_ids"] == [D1]
    assert m.with_diff_ids({}, [D1]) == {"rootfs": {"diff_ids": [D1]}}
    assert m.with_created(doc, "2024-01-01T00:00:00Z")["created"] == "2024-01-01T00:00:00Z"


def test_canonical_json_is_the_one_writer() -> None:
    doc = {"b": "é", "a": [1, {"d": None, "c": True}]}
    assert canonical_json(doc) == '{"b":"é","a":[1,{"d":null,"c":true}]}'.encode()
    assert canonical_json(doc, sort_keys=True) == '{"a":[1,{"c":true,"d":null}],"b":"é"}'.encode()
    assert canonical_json(doc, sort_keys=True, ascii_only=True) == (
        b'{"a":[1,{"c":true,"d":null}],"b":"\\u00e9"}'
    )
    # what the three writers it replaced gave, byte for byte
    assert (
        canonical_json(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert canonical_json(doc, sort_keys=True, ascii_only=True) == (
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    )
    # a lone surrogate (kept from an escape read) goes back as the escape
    assert canonical_json({"k": "\ud800"}) == b'{"k":"\\ud800"}'
    assert m.encode({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'.encode()
    assert m.to_config(m.encode(BASE)).data == BASE


def spec(**fields: Any) -> ImageSpec:
    value, problems = validate(ImageSpec, {"from": "scratch", **fields})
    assert problems == []
    return value  # type: ignore[no-any-return]


def test_every_config_field_of_a_recipe_has_its_edit() -> None:
    assert [name for name, _ in EDITS] == [f.name for f in record_fields(ImageConfigSpec)]


def test_the_build_config_is_assembled_as_it_always_was() -> None:
    s = spec(
        config={
            "env": {"A": "new"},
            "user": "app",
            "labels": {"x": "new"},
            "exposed_ports": ["80"],
            "volumes": ["/data"],
        }
    )
    layer = (Descriptor(mt.OCI_LAYER_GZIP, Digest(D2), 10), Digest(D2))
    out = image_config(BASE, s, layer, 0, "app")
    assert out == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/bin", "B=2", "A=new"],
            "Labels": {"keep": "1", "x": "new"},
            "ExposedPorts": {"22/tcp": {}, "80/tcp": {}},
            "Volumes": {"/old": {}, "/data": {}},
            "Cmd": ["sh"],
            "User": "app",
        },
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [
            {"created_by": "base"},
            {"created": "1970-01-01T00:00:00Z", "created_by": "ocikit build app"},
        ],
    }, "the base's other keys (author, created) are not kept"
    empty = image_config({}, spec(arch="amd64"), None, 0, "x")
    assert empty["rootfs"] == {"type": "layers", "diff_ids": []} and empty["config"] == {}
    assert empty["history"][-1]["empty_layer"] is True and "variant" not in empty
    assert runtime_config(BASE, s) == out["config"]
    assert configured({"config": {}}, spec()) == {"config": {}}
