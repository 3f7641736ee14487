"""The library names its own options in its errors; the command line says them as its flags.

``OcikitError`` is made of parts: text and ``Option``s. ``str()`` says an option as the
library calls it (``platform``); the command line says the flag of the command running
(``--platform``, ``copy``'s ``--dest-compress-format``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ocikit
from ocikit.build.plan import plan_build
from ocikit.build.recipe import load_recipe, parse_substitutions
from ocikit.errors import AmbiguousImageError, OcikitError, Option, UsageError
from ocikit.transports.base import select_platform
from support.inprocess import assert_one_line, run
from support.layouts import file, tar_bytes, write_layout

SRC = Path(ocikit.__file__).parent
#: a flag in a message: ``--word`` after a space, a bracket or at the start
FLAG = re.compile(r"(?:^|[\s(`])--[a-z][a-z-]+")


def test_an_error_says_its_options_by_their_names_or_as_told() -> None:
    error = UsageError(Option("drop_unsafe"), " only applies with ", Option("repair"))
    assert str(error) == "drop_unsafe only applies with repair"
    assert error.options == ("drop_unsafe", "repair")
    flags = {"drop_unsafe": "--drop-unsafe", "repair": "--repair"}
    assert error.worded(flags) == "--drop-unsafe only applies with --repair"
    assert error.lines(flags) == ["--drop-unsafe only applies with --repair"]
    plain = UsageError("no options here")
    assert str(plain) == "no options here" and plain.options == ()
    assert plain.worded(flags) == "no options here"


def _raised_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """The text of every string (f-string pieces too) in the arguments of a ``raise``."""
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                for piece in ast.walk(arg):
                    if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                        texts.append((node.lineno, piece.value))
    return texts


def test_no_library_error_names_a_flag() -> None:
    """Outside ``cli/``, no raised error's text holds a ``--flag``: it names an ``Option``."""
    found = [
        f"{path.relative_to(SRC)}:{line}: {text!r}"
        for path in sorted(SRC.rglob("*.py"))
        if "cli" not in path.relative_to(SRC).parts
        for line, text in _raised_texts(ast.parse(path.read_text()))
        if FLAG.search(text)
    ]
    assert found == []


def test_the_scan_sees_a_flag() -> None:
    tree = ast.parse('raise UsageError(f"{x}: choose one with --platform")')
    assert [t for _, t in _raised_texts(tree) if FLAG.search(t)] == [": choose one with --platform"]


def test_library_calls_say_the_library_names(tmp_path: Path) -> None:
    with pytest.raises(AmbiguousImageError) as ambiguous:
        _ambiguous()
    assert str(ambiguous.value).endswith("choose one with platform")
    recipe = tmp_path / "ocikit.yaml"
    recipe.write_text("images:\n  a:\n    from: scratch\n")
    with pytest.raises(UsageError) as target:
        plan_build(load_recipe(recipe), ["nope"])
    assert str(target.value).startswith("targets nope: no such image in ")
    with pytest.raises(UsageError) as pair:
        parse_substitutions(["no-equals"], [])
    assert str(pair.value) == "substitutions: expected VAR=VALUE, got 'no-equals'"
    with pytest.raises(OcikitError) as options:
        ocikit.copy("oci:a", "oci:b", drop_unsafe=True)
    assert str(options.value) == "drop_unsafe only applies with repair"


def _ambiguous() -> None:
    from ocikit.model import Descriptor, Digest, Platform

    digest = Digest("sha256:" + "0" * 64)
    candidates = [
        Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1, platform=p)
        for p in (Platform("linux", "riscv64"), Platform("linux", "s390x"))
    ]
    select_platform(candidates, None, "x")


def test_the_command_line_says_its_flags(tmp_path: Path) -> None:
    """The same errors through the command line: the flags of the command that ran."""
    recipe = tmp_path / "ocikit.yaml"
    recipe.write_text("images:\n  a:\n    from: scratch\n")
    said = assert_one_line(run("build", "-f", str(recipe), "--target", "nope"), code=2)
    assert "--target nope: no such image in " in said
    said = assert_one_line(run("build", "-f", str(recipe), "--substitute", "no-equals"), code=2)
    assert "--substitute: expected VAR=VALUE" in said
    write_layout(tmp_path / "l", [tar_bytes([file("a", "1")])])
    said = assert_one_line(
        run("copy", "--drop-unsafe", f"oci:{tmp_path}/l:t", f"oci:{tmp_path}/m"), code=2
    )
    assert "--drop-unsafe only applies with --repair" in said


def test_an_error_named_by_its_layer_keeps_its_options() -> None:
    """A stream error re-raised with the layer's name still says its options the caller's way."""
    import io

    from ocikit.errors import InputError
    from ocikit.layer.transcode import transcode
    from ocikit.model import Compression, Descriptor, Digest

    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, _buffer: object) -> int:
            raise InputError("cut short; ", Option("tls_verify=False"), " may help")

    src = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest("sha256:" + "0" * 64), 10)
    with pytest.raises(InputError) as caught:
        transcode(
            Failing(),  # type: ignore[arg-type]
            src,
            Compression.NONE,
            io.BytesIO(),
            Compression.NONE,
            expected_diff_id=src.digest,
        )
    assert caught.value.options == ("tls_verify=False",)
    said = caught.value.worded({"tls_verify=False": "--tls-verify=false"})
    assert said.endswith("cut short; --tls-verify=false may help") and said != str(caught.value)
