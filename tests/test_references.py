"""References and usage on the command line and in the API: malformed or unknown -> exit 2 with
one line (UsageError from the API), nothing written. Needs no engine: the shipped sample.
The tables run the command in this process (``support.inprocess``); the others as a process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ocikit as lib
from ocikit.errors import AmbiguousImageError, NotFoundError, OcikitError, UsageError
from support import inprocess
from support.archives import SAMPLE, SAMPLE_TAG
from support.cli import assert_one_line_error, ocikit, ok
from support.verify import read_layout

UNKNOWN_TRANSPORT = ["nope:x", "frob:/tmp/x", "OCI:/tmp/x", "oci-dir:/tmp/x"]
MALFORMED = [
    "",
    "no-transport-at-all",
    "/an/absolute/path.tar",
    "oci:",
    "oci::t",
    "oci-archive:",
    "docker-archive:",
    "oci:/tmp/x:bad name!",
    "docker-archive:x.tar:UPPER/case:1",
    "docker-archive:x.tar:NOT/valid:tag:x",
    "docker-archive:x.tar:name:bad tag",
]


@pytest.mark.parametrize("ref", UNKNOWN_TRANSPORT + MALFORMED)
def test_bad_source_reference(ref: str, tmp_path: Path) -> None:
    proc = inprocess.ocikit("copy", ref, f"oci:{tmp_path}/l:t")
    assert_one_line_error(proc)
    assert proc.stdout == b""
    assert not (tmp_path / "l").exists()


@pytest.mark.parametrize("ref", [*UNKNOWN_TRANSPORT, *MALFORMED, "docker-archive:out.tar@1"])
def test_bad_destination_reference(ref: str, tmp_path: Path) -> None:
    before = set(os.listdir(tmp_path))
    # relative paths land here
    proc = inprocess.ocikit("copy", f"docker-archive:{SAMPLE}", ref, cwd=tmp_path)
    assert_one_line_error(proc)
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("ref", UNKNOWN_TRANSPORT + MALFORMED)
def test_bad_reference_to_inspect(ref: str) -> None:
    for args in ([ref], ["--raw", ref], ["--config", ref]):
        proc = inprocess.ocikit("inspect", *args)
        assert_one_line_error(proc)
        assert proc.stdout == b""


def test_unknown_transport_is_named() -> None:
    """As a process (the tables run in this one): copy and inspect, exit 2, one line."""
    line = assert_one_line_error(ocikit("copy", "nope:x", "oci:/nonexistent/l"))
    assert "nope" in line
    assert "nope" in assert_one_line_error(ocikit("inspect", "nope:x"))


@pytest.mark.parametrize("ref", UNKNOWN_TRANSPORT + MALFORMED)
def test_api_raises_usage_error(ref: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        lib.copy(ref, f"oci:{tmp_path}/l:t")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    with pytest.raises(UsageError):
        lib.inspect(ref)
    with pytest.raises(UsageError), lib.open_image(ref):
        pass
    assert not (tmp_path / "l").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["copy", f"docker-archive:{SAMPLE}"],  # DST missing
        ["copy"],
        ["copy", "--dest-compress-format", "lzma", f"docker-archive:{SAMPLE}", "oci:x"],
        ["copy", "--dest-compress-level", "42", f"docker-archive:{SAMPLE}", "oci:x"],
        ["copy", "--dest-compress-level", "many", f"docker-archive:{SAMPLE}", "oci:x"],
        ["copy", "--platform", "linux", f"docker-archive:{SAMPLE}", "oci:x"],
        ["copy", "--no-such-option", f"docker-archive:{SAMPLE}", "oci:x"],
        ["inspect"],
        ["inspect", "--raw", "--config", f"docker-archive:{SAMPLE}"],
        ["frobnicate"],
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_bad_usage(args: list[str], tmp_path: Path) -> None:
    assert_one_line_error(inprocess.ocikit(*args, cwd=tmp_path))
    assert os.listdir(tmp_path) == []


def test_missing_things_are_one_line(tmp_path: Path) -> None:
    inprocess.ok("copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l:hello")
    for args, word in (
        (["copy", f"docker-archive:{tmp_path}/missing.tar", f"oci:{tmp_path}/x"], "missing.tar"),
        (["copy", f"oci:{tmp_path}/l:nope", f"oci:{tmp_path}/x"], "nope"),
        (["copy", f"oci-archive:{tmp_path}/missing.tar", f"oci:{tmp_path}/x"], "missing.tar"),
        (["inspect", f"docker-archive:{SAMPLE}:no/such:image"], "no/such:image"),
        (["inspect", f"docker-archive:{SAMPLE}@1"], "@1"),
        (["inspect", f"oci:{tmp_path}/l:nope"], "nope"),
        (["copy", f"oci:{tmp_path}", f"oci:{tmp_path}/x"], str(tmp_path)),  # not a layout
    ):
        assert_one_line_error(inprocess.ocikit(*args), contains=word)
    assert not (tmp_path / "x").exists()
    with pytest.raises(NotFoundError):
        lib.inspect(f"oci:{tmp_path}/l:nope")


def test_destination_that_is_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "precious.txt").write_text("mine")
    assert_one_line_error(
        inprocess.ocikit("copy", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/stuff:t")
    )
    assert os.listdir(tmp_path / "stuff") == ["precious.txt"]


@pytest.mark.parametrize(
    "src",
    [
        f"docker-archive:{SAMPLE}",
        f"docker-archive:{SAMPLE}:{SAMPLE_TAG}",
        f"docker-archive:{SAMPLE}:hello",  # the tag defaults to latest
        f"docker-archive:{SAMPLE}:docker.io/library/hello:latest",
        f"docker-archive:{SAMPLE}@0",
    ],
)
def test_good_source_references(src: str, tmp_path: Path) -> None:
    inprocess.ok("copy", "-q", src, f"oci:{tmp_path}/l:v1.0")
    image = read_layout(tmp_path / "l", "v1.0")
    assert image.config["rootfs"]["diff_ids"]


def test_oci_references(tmp_path: Path) -> None:
    """``oci:PATH:REF``, ``oci-archive:PATH:REF``, and stdin/stdout ``-``."""
    layout = tmp_path / "l"
    ok("copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:a")
    ok("copy", "-q", f"oci:{layout}:a", f"oci-archive:{tmp_path}/a.tar:b")
    ok("copy", "-q", f"oci-archive:{tmp_path}/a.tar:b", f"oci:{layout}:c")
    with (tmp_path / "a.tar").open("rb") as f:
        ok("copy", "-q", "oci-archive:-:b", f"oci:{layout}:d", stdin=f)
    out = ok("copy", "-q", f"oci:{layout}:a", "docker-archive:-:hello:again").stdout
    ok("copy", "-q", "docker-archive:-", f"oci:{layout}:e", input=out)
    manifests = {read_layout(layout, ref).manifest_bytes for ref in "acde"}
    assert len(manifests) == 1


def test_errors_are_a_hierarchy() -> None:
    for cls in (UsageError, NotFoundError, AmbiguousImageError):
        assert issubclass(cls, OcikitError) and cls.exit_code == 2
    assert issubclass(AmbiguousImageError, UsageError)


def test_json_output_is_json(tmp_path: Path) -> None:
    proc = ok("copy", "-q", "--json", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l:t")
    result = json.loads(proc.stdout)
    assert result["digest"] == read_layout(tmp_path / "l", "t").manifest_digest
