"""CopyOptions: checked when made, in the library's words; the CLI says them as its flags.

In-process: no copy runs (every case fails before a source or destination is opened).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import ocikit
from ocikit.cli.main import _dispatch
from ocikit.errors import UsageError
from ocikit.model import Compression, Platform
from ocikit.ops.copy import CopyOptions, CopyOptionsError

# (fields, the fields the error names, the library's message, the CLI's)
RULES = [
    (
        {"drop_unsafe": True},
        ("drop_unsafe", "repair"),
        "drop_unsafe only applies with repair",
        "--drop-unsafe only applies with --repair",
    ),
    (
        {"all_platforms": True, "platform": "linux/amd64"},
        ("all_platforms", "platform"),
        "all_platforms copies every platform; it does not go with platform",
        "--all copies every platform; it does not go with --platform",
    ),
    (
        {"all_platforms": True, "repair": True},
        ("repair", "platform"),
        "repair works on one image; copy one platform with platform",
        "--repair works on one image; copy one platform with --platform",
    ),
    (
        {"jobs": 0},
        ("jobs",),
        "jobs must be at least 1, got 0",
        "--jobs must be at least 1, got 0",
    ),
]


def test_defaults_are_a_plain_copy() -> None:
    options = CopyOptions()
    assert options.compression is None and options.jobs is None and not options.repair
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.repair = True  # type: ignore[misc]


def test_names_are_parsed() -> None:
    options = CopyOptions(compression="zstd", platform="linux/arm64/v8")  # type: ignore[arg-type]
    assert options.compression is Compression.ZSTD
    assert options.platform == Platform.parse("linux/arm64/v8")
    assert CopyOptions(additional_tags=["a", "b"]).additional_tags == ("a", "b")  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "named", "library", "cli"), RULES)
def test_rules_in_library_words(
    fields: dict[str, object], named: tuple[str, ...], library: str, cli: str
) -> None:
    with pytest.raises(CopyOptionsError) as caught:
        CopyOptions(**fields)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert error.options == named
    assert str(error) == library and "--" not in str(error)
    from ocikit.cli.main import _COPY_FLAGS

    assert error.worded(_COPY_FLAGS) == cli


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compression": "lzma"}, "unknown compression 'lzma'"),
        ({"compression": "gzip", "compression_level": 42}, "gzip compression level must be"),
        ({"platform": "linux"}, "invalid platform"),
    ],
)
def test_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CopyOptions(**fields)  # type: ignore[arg-type]


def test_copy_keyword_arguments_build_the_options(tmp_path: Path) -> None:
    """``copy(src, dst, **fields)`` as before (the old names too); a bad combination fails
    before anything is opened or written."""
    dst = tmp_path / "out"
    with pytest.raises(CopyOptionsError, match="drop_unsafe only applies with repair"):
        ocikit.copy(f"oci:{tmp_path}/missing", f"oci:{dst}", drop_unsafe=True)
    with pytest.raises(UsageError, match="unknown compression"):
        ocikit.copy(f"oci:{tmp_path}/missing", f"oci:{dst}", dest_compress_format="lzma")
    with pytest.raises(CopyOptionsError, match="repair works on one image"):
        ocikit.copy(f"oci:{tmp_path}/m", f"oci:{dst}", CopyOptions(repair=True), all_platforms=True)
    with pytest.raises(TypeError):
        ocikit.copy(f"oci:{tmp_path}/missing", f"oci:{dst}", quiet=True)  # gone: it did nothing
    assert not dst.exists()


@pytest.mark.parametrize(("fields", "named", "library", "cli"), RULES[:3])  # --jobs: click's
def test_the_cli_says_its_flags(
    fields: dict[str, object],
    named: tuple[str, ...],
    library: str,
    cli: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = {
        "drop_unsafe": ["--drop-unsafe"],
        "all_platforms": ["--all"],
        "platform": ["--platform", "linux/amd64"],
        "repair": ["--repair"],
    }
    argv = ["copy", "-q"]
    for name in fields:
        argv += flags[name]
    code = _dispatch([*argv, f"oci:{tmp_path}/missing", f"oci:{tmp_path}/out"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"ocikit: error: {cli}"], err
    assert not (tmp_path / "out").exists()


def test_a_cancelled_copy_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    """``cancel`` is asked at every block a copy moves: set, the copy stops with
    CancelledError and the destination is aborted (here: a layout it created, gone)."""
    from concurrent.futures import CancelledError

    from ocikit.ops.copy import Cancellation
    from support.layouts import file, tar_bytes, write_layout

    write_layout(tmp_path / "src", [tar_bytes([file("a", b"x" * 4096)])], compression="none")
    cancel = Cancellation()
    cancel.set()
    with pytest.raises(CancelledError):
        ocikit.copy(f"oci:{tmp_path}/src:t", f"oci:{tmp_path}/out:t", cancel=cancel)
    assert not (tmp_path / "out").exists()
    child = Cancellation().child()
    assert not child.is_set()
    ocikit.copy(f"oci:{tmp_path}/src:t", f"oci:{tmp_path}/out:t", cancel=child)
    assert (tmp_path / "out" / "index.json").exists()
