"""The overlay a run step's root is (``build.rootfs.overlay``), mounted for real: ``volatile``
(its unmount, a step's fsync or sync never flush the host filesystem's dirty pages), mounted
without it where the kernel does not know it, and unmounted at the end, detached if still
busy; what the step wrote stays in the upper directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ocikit.build import rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="an overlay mount needs root")


def mount_options(point: Path) -> list[str] | None:
    """The superblock options of what is mounted at ``point`` (None: nothing)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(point):
            return fields[fields.index("-") + 3].split(",")
    return None


def volatile(options: list[str] | None) -> bool:
    """Whether the options say ``volatile`` (Linux >= 6.x says it ``fsync=volatile``)."""
    return options is not None and ("volatile" in options or "fsync=volatile" in options)


def dirs(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("base\n")
    return lower, tmp_path / "upper", tmp_path / "work", tmp_path / "merged"


def test_a_volatile_overlay_unmounted_after(tmp_path: Path) -> None:
    lower, upper, work, merged = dirs(tmp_path)
    with rootfs.overlay([lower], upper, work, merged) as root:
        assert volatile(mount_options(root))
        assert (root / "f").read_text() == "base\n"
        (root / "g").write_text("step\n")
    assert mount_options(merged.resolve()) is None
    assert (upper / "g").read_text() == "step\n"


@pytest.mark.parametrize("way", ["mount(2)", "the mount command"])
def test_without_volatile_where_the_kernel_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """Either way a mount is made (the command: options too long for the kernel's page),
    a kernel before 5.10 refusing ``volatile`` gets the overlay without it."""
    tried: list[str] = []
    if way == "mount(2)":
        real_call = rootfs._mount_call

        def call(options: str, target: Path) -> str:
            tried.append(options)
            return "Invalid argument" if "volatile" in options else real_call(options, target)

        monkeypatch.setattr(rootfs, "_mount_call", call)
    else:
        monkeypatch.setattr(rootfs, "MOUNT_DATA_LIMIT", 10)
        real_run = subprocess.run

        def run(argv: list[str], **kwargs: Any) -> Any:
            if argv[0] == "mount":
                tried.append(argv[argv.index("-o") + 1])
                if "volatile" in tried[-1]:  # as a kernel before 5.10 answers
                    return subprocess.CompletedProcess(argv, 32, b"", b"bad option")
            return real_run(argv, **kwargs)

        monkeypatch.setattr(rootfs.subprocess, "run", run)
    lower, upper, work, merged = dirs(tmp_path)
    with rootfs.overlay([lower], upper, work, merged) as root:
        options = mount_options(root)
        assert options is not None and not volatile(options)
        assert (root / "f").read_text() == "base\n"
    assert [("volatile" in t) for t in tried] == [True, False]
    assert mount_options(merged.resolve()) is None


def test_options_too_long_for_the_kernel_s_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths through a descriptor would not fit (hundreds of layers): ``mount`` is run in
    the directory of short names instead; the same overlay, volatile too."""
    monkeypatch.setattr(rootfs, "MOUNT_DATA_LIMIT", 10)
    lower, upper, work, merged = dirs(tmp_path)
    (tmp_path / "lower2").mkdir()
    with rootfs.overlay([lower, tmp_path / "lower2"], upper, work, merged) as root:
        options = mount_options(root)
        assert options is not None and volatile(options)
        assert "lowerdir=l1:l0" in options
        assert (root / "f").read_text() == "base\n"
    assert mount_options(merged.resolve()) is None


def test_a_busy_overlay_is_detached(tmp_path: Path) -> None:
    lower, upper, work, merged = dirs(tmp_path)
    with rootfs.overlay([lower], upper, work, merged) as root:
        held = open(root / "f")  # noqa: SIM115  (kept open past the block: busy)
    try:
        assert mount_options(merged.resolve()) is None
        assert held.read() == "base\n"  # still readable: detached, not gone
    finally:
        held.close()
