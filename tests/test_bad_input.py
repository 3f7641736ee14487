"""Broken input, from a file and from a pipe, to each kind of destination: exit 2, one line on
stderr, no traceback, and the destination exactly as it was (no temp files either)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import inprocess
from support.archives import BadInput, tree
from support.cli import assert_one_line_error, ocikit

pytestmark = pytest.mark.docker  # the broken archives are made from real docker save output

CASES = [
    "not-a-tar",
    "empty",
    "truncated",
    "missing-layer",
    "missing-config",
    "diff-id-mismatch",
    "symlink-outside",
    "symlink-loop",
    "bad-manifest-json",
    "docker25-digest-mismatch",
    "docker25-config-mismatch",
    "docker25-missing-blob",
]
DESTINATIONS = ["existing-oci", "new-oci", "oci-archive", "docker-archive"]


def test_every_case_is_made(bad_archives: dict[str, BadInput]) -> None:
    assert sorted(bad_archives) == sorted(CASES)


def _references_nothing(layout: Path) -> bool:
    index = layout / "index.json"
    return not index.exists() or json.loads(index.read_bytes()).get("manifests") == []


@pytest.mark.parametrize("dest_kind", DESTINATIONS)
@pytest.mark.parametrize("mode", ["file", "pipe"])
@pytest.mark.parametrize("case", CASES)
def test_bad_archive(
    bad_archives: dict[str, BadInput],
    existing_layout: Path,
    tmp_path: Path,
    case: str,
    mode: str,
    dest_kind: str,
) -> None:
    bad = bad_archives[case]
    tmpdir = tmp_path / "tmpdir"  # ocikit's own temp space: must be empty afterwards
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    dest = {
        "existing-oci": f"oci:{existing_layout}:new",
        "new-oci": f"oci:{tmp_path}/fresh:new",
        "oci-archive": f"oci-archive:{tmp_path}/out.oci.tar:new",
        "docker-archive": f"docker-archive:{tmp_path}/out.docker.tar:x/y:z",
    }[dest_kind]
    before = tree(existing_layout)
    index_before = (existing_layout / "index.json").read_bytes()

    if mode == "file":  # judged in this process; from a pipe, the command as a process
        proc = inprocess.ocikit("copy", f"docker-archive:{bad.path}", dest, env=env)
    else:
        proc = ocikit("copy", "docker-archive:-", dest, input=bad.path.read_bytes(), env=env)

    assert_one_line_error(proc, contains=bad.expect)
    assert proc.stdout == b""
    assert (existing_layout / "index.json").read_bytes() == index_before
    assert tree(existing_layout) == before, "the existing layout changed"
    assert _references_nothing(tmp_path / "fresh")
    assert not (tmp_path / "out.oci.tar").exists()
    assert not (tmp_path / "out.docker.tar").exists()
    assert list(tmpdir.iterdir()) == [], "temp files left behind"
    assert {p.name for p in tmp_path.iterdir()} <= {"existing", "fresh", "tmpdir"}


def test_bad_inspect(bad_archives: dict[str, BadInput]) -> None:
    for case in ("not-a-tar", "empty", "truncated", "missing-config", "symlink-loop"):
        bad = bad_archives[case]
        proc = ocikit("inspect", f"docker-archive:{bad.path}")
        assert_one_line_error(proc, contains=bad.expect)
        assert proc.stdout == b""
