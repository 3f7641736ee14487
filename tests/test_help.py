"""Help a user has without a clone: the texts ``--help`` points to are in the installed
package (``ocikit help TOPIC``), and the wheel carries them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ocikit.build.recipe import recipe_schema
from support.cli import ocikit, ok
from test_examples import _fresh_clone

ROOT = Path(__file__).resolve().parent.parent


def test_help_points_to_what_the_package_has() -> None:
    for command in ("check", "copy", "build"):
        text = ok(command, "--help").stdout.decode()
        assert "docs/" not in text and "README" not in text, command
    assert "ocikit help check" in ok("check", "--help").stdout.decode()
    assert "ocikit help recipe" in ok("build", "--help").stdout.decode()


def test_the_topics() -> None:
    rules = ok("help", "check").stdout.decode()
    assert rules.startswith("# `check`, `copy --repair` and `unpack`") and "## Rules" in rules
    recipe = ok("help", "recipe").stdout.decode()
    for field in recipe_schema()["$defs"]["Import"]["properties"]:
        assert f"images.NAME.imports[i].{field}  (" in recipe
    assert "images.NAME.run  (string or list)" in recipe
    listing = ok("help").stdout.decode()
    assert "Commands:" in listing and "  recipe   the fields of a build recipe" in listing
    proc = ocikit("help", "nope")
    assert proc.returncode == 2
    assert (
        proc.stderr.decode() == "ocikit: error: help: no topic 'nope'; the topics: check, recipe\n"
    )


def test_the_wheel_carries_the_help(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path)  # built there: nothing written into the sources
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(clone)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ocikit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "ocikit/help/check.md" in z.namelist()
        assert z.read("ocikit/help/check.md") == (ROOT / "src/ocikit/help/check.md").read_bytes()
