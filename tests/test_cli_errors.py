"""Usage errors in ocikit's own words, one format everywhere (``ocikit: error: WHAT: WHY``),
never click's or Python's (``Invalid value for 'DIRECTORY'``, ``[Errno 21]``), exit 2. In
process: the command line's dispatcher with argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocikit.cli import main as cli_main
from support.layouts import file, tar_bytes, write_layout


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["copy"], "copy: SRC is missing (usage: ocikit copy [OPTIONS] SRC DST)"),
        (["copy", "a"], "copy: DST is missing (usage: ocikit copy [OPTIONS] SRC DST)"),
        (["copy", "--nope", "a", "b"], "copy: no option --nope (see ocikit copy --help)"),
        (
            ["copy", "--dest-cred", "a", "b"],
            "copy: no option --dest-cred (did you mean --dest-creds?)",
        ),
        (
            ["copy", "a", "b", "c"],
            "copy: one argument too many: 'c' (usage: ocikit copy [OPTIONS] SRC DST)",
        ),
        (
            ["nocmd"],
            "no command 'nocmd'; the commands: build, check, copy, doctor, export-layers, gc, "
            "help, inspect, login, logout, unpack",
        ),
        (["chek"], "no command 'chek' (did you mean check?)"),
        (
            ["unpack", "oci:x", "/etc/passwd"],
            "unpack DIRECTORY '/etc/passwd': is a file, not a directory",
        ),
        (
            ["check", "--max-ratio", "abc", "oci:x"],
            "check --max-ratio 'abc': expected a number, at least 1",
        ),
        (
            ["check", "--max-ratio", "0.5", "oci:x"],
            "check --max-ratio '0.5': expected a number, at least 1",
        ),
        (["build", "--layer-type", "foo"], "build --layer-type 'foo': expected tar or squashfs"),
        (
            ["copy", "--dest-compress-format", "foo", "a", "b"],
            "copy --dest-compress-format 'foo': expected gzip, zstd or none",
        ),
        (
            ["inspect", "--tls-verify", "maybe", "docker://x/y"],
            "inspect --tls-verify 'maybe': expected true or false",
        ),
        (
            ["copy", "--jobs", "0", "a", "b"],
            "copy --jobs '0': expected a whole number from 1 to 64",
        ),
        (
            ["copy", "--dest-compress-level", "x", "a", "b"],
            "copy --dest-compress-level 'x': expected a whole number",
        ),
        (["copy", "--platform"], "copy --platform: needs a value"),
    ],
)
def test_usage_errors_in_our_words(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main._dispatch(argv) == 2
    assert capsys.readouterr().err == f"ocikit: error: {said}\n"


def test_the_library_says_it_in_words(tmp_path: Path) -> None:
    """A user's mistake through the library is an OcikitError of one line, in words: never a
    raw OSError, never ``[Errno N]`` or a Python repr of the error."""
    import ocikit

    write_layout(tmp_path / "l", [tar_bytes([file("f", b"x")])], ref="t")
    (tmp_path / "file").write_text("x")
    (tmp_path / "latin1.yaml").write_bytes(b"images: {caf\xe9: {from: scratch}}\n")
    src = f"oci:{tmp_path / 'l'}:t"
    calls = [
        lambda: ocikit.copy(src, f"docker-archive:{tmp_path}"),
        lambda: ocikit.copy(src, f"oci:{tmp_path / 'file'}"),
        lambda: ocikit.unpack(src, tmp_path / "file"),
        lambda: ocikit.export_layers(src, tmp_path / "file"),
        lambda: ocikit.inspect(f"docker-archive:{tmp_path}"),
        lambda: ocikit.check(f"oci:{tmp_path / 'file'}"),
        lambda: ocikit.build(tmp_path),
        lambda: ocikit.build(tmp_path / "latin1.yaml"),
        lambda: ocikit.gc([str(tmp_path / "file")]),
    ]
    for call in calls:
        with pytest.raises(ocikit.OcikitError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and "[Errno" not in message and "Error(" not in message
        assert not isinstance(caught.value, OSError), message
