"""Messages count in English: ``1 layer``, ``2 layers``, never ``1 layers`` or ``item(s)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocikit.model.jsondoc import counted
from ocikit.ops.check import check
from support.cli import ok
from support.layouts import file, tar_bytes, write_layout


def test_counted() -> None:
    assert counted(1, "layer") == "1 layer"
    assert counted(0, "layer") == "0 layers"
    assert counted(2, "entry", "entries") == "2 entries"
    assert counted(1, "entry", "entries") == "1 entry"


def test_a_finding_counts_in_english(tmp_path: Path) -> None:
    history = [{"created_by": "a"}, {"created_by": "b"}]
    write_layout(tmp_path / "l", [tar_bytes([file("f", b"x")])], ref="t", history=history)
    report = check(f"oci:{tmp_path / 'l'}:t")
    messages = [f.message for f in report.findings if f.rule == "history-count"]
    assert messages == ["the config's history has 2 entries for layers but the image has 1 layer"]


def test_gc_counts_in_english(tmp_path: Path) -> None:
    err = ok("gc", str(tmp_path), env={"TMPDIR": str(tmp_path)}).stderr.decode()
    assert err == "removed 0 items, 0.0 MiB\n"


def test_debug_is_a_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An internal error is one line; ``--debug`` adds the traceback."""
    from ocikit.cli import main as cli_main

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.delenv("OCIKIT_DEBUG", raising=False)
    import importlib

    monkeypatch.setattr(importlib.import_module("ocikit.ops.inspect"), "inspect", broken)
    monkeypatch.setattr(cli_main, "_debug", {"on": False})
    assert cli_main._dispatch(["inspect", "oci:x"]) == 3
    err = capsys.readouterr().err
    assert err == (
        "ocikit: error: internal error: RuntimeError: a bug (ocikit --debug prints the traceback)\n"
    )
    assert cli_main._dispatch(["--debug", "inspect", "oci:x"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: a bug" in err


def test_results_are_named_for_what_they_return(tmp_path: Path) -> None:
    """Every result's ``to_dict()`` is the JSON-ready dict ``--json`` prints (there is no
    ``to_json`` that would return something other than JSON)."""
    import json

    import ocikit
    from ocikit.build.engine import ImageResult
    from ocikit.ops.doctor import DoctorReport
    from ocikit.ops.export import ExportResult

    classes = [
        ocikit.CheckReport,
        ocikit.CopyResult,
        ocikit.GcResult,
        ocikit.UnpackResult,
        ocikit.BuildResult,
        ExportResult,
        ImageResult,
        DoctorReport,
    ]
    for cls in classes:
        assert hasattr(cls, "to_dict") and not hasattr(cls, "to_json"), cls
    write_layout(tmp_path / "l", [tar_bytes([file("f", b"x")])], ref="t")
    data = check(f"oci:{tmp_path / 'l'}:t").to_dict()
    assert isinstance(data, dict) and json.loads(json.dumps(data)) == data
