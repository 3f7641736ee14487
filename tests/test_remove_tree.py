"""Removing trees hostile input wrote: any depth (a run step nests thousands of directories:
no recursion, no path too long, a bounded number of open directories), nothing followed, and
(for ocikit's own temporary directories) nothing removed on another mounted file system."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ocikit.layer.dirfd import DIR_FLAGS, remove_at, rmtree_at
from ocikit.tempfiles import remove_tree

DEPTH = 3000  # deeper than Python's recursion limit, and than PATH_MAX in characters


def _deep(root: Path, outside: Path) -> None:
    """A chain of DEPTH directories, files and links to ``outside`` along it."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for i in range(DEPTH):
            if i % 500 == 0:
                with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                    f.write(b"x" * 10)
                os.symlink(str(outside), "link", dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    where = tmp_path / "outside"
    where.mkdir()
    (where / "keep").write_text("keep\n")
    return where


def test_rmtree_at_removes_any_depth(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "tree").mkdir()
    _deep(tmp_path / "tree", outside)
    fd = os.open(tmp_path, DIR_FLAGS)
    try:
        rmtree_at(fd, "tree")
    finally:
        os.close(fd)
    assert not (tmp_path / "tree").exists()
    assert (outside / "keep").read_text() == "keep\n"


def test_remove_at_a_file_and_a_link(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "f").write_text("f")
    (tmp_path / "l").symlink_to(outside)
    fd = os.open(tmp_path, DIR_FLAGS)
    try:
        remove_at(fd, "f")
        remove_at(fd, "l")
        remove_at(fd, "missing")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert (outside / "keep").exists()


def test_remove_tree_removes_any_depth_and_counts(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "tree").mkdir()
    _deep(tmp_path / "tree", outside)
    assert remove_tree(str(tmp_path / "tree")) == 10 * (DEPTH // 500)
    assert not (tmp_path / "tree").exists()
    assert (outside / "keep").read_text() == "keep\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_remove_tree_leaves_a_mount_alone(tmp_path: Path, outside: Path) -> None:
    """A mount a killed build left (its overlay) stays, with the directories above it."""
    tree = tmp_path / "tree"
    (tree / "a" / "mnt").mkdir(parents=True)
    (tree / "a" / "file").write_text("gone\n")
    (tree / "b").mkdir()
    subprocess.run(["mount", "--bind", str(outside), str(tree / "a" / "mnt")], check=True)
    try:
        remove_tree(str(tree))
        assert (outside / "keep").read_text() == "keep\n"
        assert (tree / "a" / "mnt" / "keep").exists()
        assert not (tree / "a" / "file").exists() and not (tree / "b").exists()
    finally:
        subprocess.run(["umount", str(tree / "a" / "mnt")], check=True)
