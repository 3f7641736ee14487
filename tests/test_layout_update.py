"""Adding images to an existing ``oci:`` layout: every tag kept, no blob written twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.archives import OTHER_TAG, RICH_TAG, Archive, tree
from support.cli import ok
from support.verify import (
    check_layers_match_diff_ids,
    check_rootfs,
    index_entries,
    oci_image_tool_validate,
    read_layout,
    ref_names,
    sh,
    skopeo_inspect,
    umoci_unpack,
)

pytestmark = pytest.mark.docker


def blobs(layout: Path) -> dict[str, tuple[int, int, int]]:
    return {k: v for k, v in tree(layout / "blobs").items() if not k.endswith("/")}


def test_two_images_then_the_same_again(
    legacy_archive_rich: Archive,
    legacy_archive_two: Archive,
    docker25_archives: dict[str, Archive],
    tmp_path: Path,
) -> None:
    layout = tmp_path / "l"
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{layout}:rich")
    first = blobs(layout)
    ok("copy", "-q", f"docker-archive:{legacy_archive_two.path}:{OTHER_TAG}", f"oci:{layout}:other")
    assert sorted(ref_names(layout)) == ["other", "rich"]
    both = blobs(layout)
    assert {k: both[k] for k in first} == first, "adding an image rewrote a blob"
    for ref, tag, archive in (
        ("rich", RICH_TAG, legacy_archive_rich),
        ("other", OTHER_TAG, legacy_archive_two),
    ):
        image = read_layout(layout, ref)
        assert image.manifest["config"]["digest"] == archive.id_of(tag)
        check_layers_match_diff_ids(image)
        assert skopeo_inspect(f"oci:{layout}:{ref}")["Digest"] == image.manifest_digest
        oci_image_tool_validate(layout, ref)
        check_rootfs(tag, umoci_unpack(layout, ref, tmp_path / f"bundle-{ref}"))
    rich_manifest = read_layout(layout, "rich").manifest_bytes

    # the same image again, from a file, a pipe, the other archive, the Docker >= 25 form:
    # new tags point at the same manifest, and not one blob is written again
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{layout}:rich")
    with legacy_archive_rich.path.open("rb") as f:
        ok("copy", "-q", "docker-archive:-", f"oci:{layout}:rich-piped", stdin=f)
    at = legacy_archive_two.tags.index(RICH_TAG)  # docker save's order varies from run to run
    ok(
        "copy",
        "-q",
        f"docker-archive:{legacy_archive_two.path}@{at}",
        f"oci:{layout}:rich-from-two",
    )
    docker25 = docker25_archives["rich+sources"].path
    ok("copy", "-q", f"docker-archive:{docker25}", f"oci:{layout}:rich-docker25")
    assert blobs(layout) == both, "copying the same image again rewrote blobs"
    names = ref_names(layout)
    assert sorted(names) == ["other", "rich", "rich-docker25", "rich-from-two", "rich-piped"]
    assert len(index_entries(layout)) == len(names), "one index entry per tag"
    for ref in ("rich", "rich-piped", "rich-from-two", "rich-docker25"):
        assert read_layout(layout, ref).manifest_bytes == rich_manifest
    oci_image_tool_validate(layout)


def test_copy_onto_an_existing_oci_archive(
    legacy_archive_rich: Archive, legacy_archive_two: Archive, tmp_path: Path
) -> None:
    """An oci-archive already there: the result is still an archive skopeo reads, holding the
    image just copied (whether the old tag is kept is the library's choice)."""
    out = tmp_path / "a.oci.tar"
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci-archive:{out}:rich")
    other = f"docker-archive:{legacy_archive_two.path}:{OTHER_TAG}"
    ok("copy", "-q", other, f"oci-archive:{out}:other")
    raw = sh("skopeo", "inspect", "--raw", f"oci-archive:{out}:other").stdout
    assert json.loads(raw)["config"]["digest"] == legacy_archive_two.id_of(OTHER_TAG)
