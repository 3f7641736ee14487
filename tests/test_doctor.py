"""``ocikit doctor``: which of the tools ocikit drives are found and usable, and their
versions (a user's first question when a build fails). In process for the logic (PATH
without the tools, an engine that is not there), then one CLI run against the real tools and
the test engine."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ocikit.ops.doctor import doctor
from support.cli import ok
from support.dockerd import DockerEngine


def _by_name(report: object) -> dict[str, dict[str, object]]:
    data = report.to_dict()  # type: ignore[attr-defined]
    return {t["name"]: t for t in data["tools"]}


def test_missing_tools_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    tools = _by_name(doctor(search=str(tmp_path)))
    runc = tools["runc"]
    assert runc["found"] is None and runc["usable"] is False
    assert runc["why"] == "not found (Debian: runc)"
    assert runc["needed_for"] == "build: run steps"
    assert tools["mksquashfs"]["why"] == "not found (Debian: squashfs-tools)"
    engine = tools["docker engine"]
    assert engine["usable"] is False
    assert engine["why"] == f"no such socket at unix://{tmp_path}/docker.sock"


def test_the_real_tools_and_engine(docker_engine: DockerEngine) -> None:
    out = ok("doctor", "--json", env={"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]})
    data = json.loads(out.stdout)
    assert data["ocikit"] and data["python"].startswith("3.")
    tools = {t["name"]: t for t in data["tools"]}
    assert re.match(r"runc version \d", tools["runc"]["version"])
    assert tools["runc"]["usable"] is (os.geteuid() == 0)
    assert tools["mksquashfs"]["version"].startswith("mksquashfs version 4.")
    assert tools["unsquashfs"]["usable"] is True
    assert tools["docker engine"]["usable"] is True
    assert tools["docker engine"]["version"].startswith("Docker 20.10")
    text = ok("doctor", env={"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]}).stdout.decode()
    lines = text.splitlines()
    assert lines[0].startswith("ocikit ")
    assert any(re.match(r"runc +ok +runc version \d", line) for line in lines), text
    assert any(re.match(r"docker engine +ok +Docker 20", line) for line in lines), text


def test_native_core_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each native module: built and in use, off (``OCIKIT_NATIVE=0``), or not built, with
    what builds it; the pure-Python path runs meanwhile."""
    from ocikit import native

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    monkeypatch.setattr(native, "available", lambda: {"_tarcore": True, "_filecore": False})
    tools = _by_name(doctor(search=str(tmp_path)))
    assert tools["native tarcore"]["usable"] is True
    assert tools["native tarcore"]["version"] == "built, in use"
    assert tools["native filecore"]["usable"] is False
    assert "gcc, python3-dev, libssl-dev" in str(tools["native filecore"]["why"])
    monkeypatch.setenv("OCIKIT_NATIVE", "0")
    tools = _by_name(doctor(search=str(tmp_path)))
    assert tools["native tarcore"]["why"] == "off: OCIKIT_NATIVE=0"
