"""What the README shows runs as shown: the example recipe builds from a fresh clone (nothing
copied into it first), and ``make demo``'s script builds, checks and runs the image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import ok
from support.dockerd import BUSYBOX, DockerEngine

REPO = Path(__file__).resolve().parent.parent


def _fresh_clone(where: Path) -> Path:
    """The tracked files only: what a user has after ``git clone``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    clone = where / "clone"
    for name in filter(None, files):
        rel = name.decode()
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    return clone


def test_the_example_recipe_builds_as_the_readme_shows(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path)
    assert "ocikit build -f examples/ocikit.yaml" in (clone / "README.md").read_text()
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    out = ok(
        "build", "--json", "-f", "examples/ocikit.yaml", "--output", "oci:out", cwd=clone, env=env
    )
    result = json.loads(out.stdout)
    tags = sorted(image["tag"] for image in result["images"] if image["tag"])
    assert tags == ["hello"]
    index = json.loads((clone / "out" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "hello"
    ]
    ok("check", "oci:out:hello", cwd=clone)


def test_the_demo_builds_checks_and_runs_the_image(
    tmp_path: Path, docker_engine: DockerEngine
) -> None:
    if not os.path.exists(BUSYBOX):
        pytest.fail(f"{BUSYBOX} is missing (Debian: busybox-static)")
    clone = _fresh_clone(tmp_path)
    env = {
        **docker_engine.env,
        "OCIKIT": str(Path(sys.executable).parent / "ocikit"),
        "DEMO": str(tmp_path / "demo"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    proc = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=clone, env=env, capture_output=True, timeout=300
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out
    assert "Hello from an image ocikit built without a daemon." in proc.stdout.decode(), out
    assert "tags: hello, hello-shell" in out, out
    bin_dir = Path(sys.executable).parent
    assert f"demo: next, run ocikit as {bin_dir}/ocikit, put it on PATH" in out, out
