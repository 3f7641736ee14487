"""Who a run step runs as: the config's ``User`` looked up in the image's own ``/etc/passwd``
and ``/etc/group`` (read through directory descriptors: a symlink is followed inside the
root only, a fifo or a device is never opened)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..layer.dirfd import DIR_FLAGS, land, open_regular
from ..model.jsondoc import quote
from . import sandbox
from .recipe import BuildError

TABLE_LIMIT = 1 << 20  # the bytes of /etc/passwd or /etc/group read


def user_ids(root: Path, user: str, name: str) -> tuple[int, int, list[int]]:
    """uid, gid and groups of the config's ``User`` (``uid[:gid]`` or names, looked up in
    the image's /etc/passwd and /etc/group, read without following a symlink out). A row
    whose ids are not decimal numbers matches nothing: the image's files are hostile input."""
    if not user:
        return 0, 0, []
    who, _, group = user.partition(":")
    passwd = _table(root, "etc/passwd")
    uid = _number(who)
    gid: int | None = None
    if uid is not None:
        gids = (_number(r[3]) for r in passwd if len(r) > 3 and r[2] == who)
        gid = next((g for g in gids if g is not None), 0)
    else:
        for row in passwd:
            if len(row) > 3 and row[0] == who:
                ids = _number(row[2]), _number(row[3])
                if ids[0] is not None and ids[1] is not None:
                    uid, gid = ids
        if uid is None:
            raise BuildError(f"images.{name}.config.user: no user {quote(who)} in the image")
    if group:
        gid = _number(group)
        if gid is None:
            found = [
                g
                for r in _table(root, "etc/group")
                if len(r) > 2 and r[0] == group and (g := _number(r[2])) is not None
            ]
            if not found:
                raise BuildError(f"images.{name}.config.user: no group {quote(group)} in the image")
            gid = found[0]
    groups = sorted(
        {
            g
            for r in _table(root, "etc/group")
            if len(r) > 3 and (g := _number(r[2])) is not None and who in r[3].split(",")
        }
    )
    return uid, gid or 0, groups


def _number(text: str) -> int | None:
    """A decimal id: ASCII digits only (``int`` takes ``²``, `` 1`` and ``1_0`` too)."""
    return int(text) if text.isascii() and text.isdigit() else None


def check_user_tables(root: Path, where: str) -> None:
    """Refuse a passwd or group the runtime could not read safely (a fifo, a device...)."""
    problem = sandbox.user_table_problem(root)
    if problem is not None:
        raise BuildError(
            f"{where}: {problem}; the runtime reads it to set the step's user (refused: "
            "it would hang or read a device)"
        )


def _table(root: Path, rel: str) -> list[list[str]]:
    """Rows of a colon-separated file of the image, its symlinks followed inside the root;
    empty if absent or not a regular file (a fifo would hang the build, a device is the
    host's: neither is ever opened)."""
    root_fd = os.open(root, DIR_FLAGS)
    try:
        dir_fd, _parent, leaf, st = land(root_fd, rel.split("/"))
    finally:
        os.close(root_fd)
    try:
        if leaf is None or st is None or not stat.S_ISREG(st.st_mode):
            return []
        ffd = open_regular(leaf, dir_fd, st, f"/{rel}")
    finally:
        os.close(dir_fd)
    with os.fdopen(ffd, "rb") as f:
        text = f.read(TABLE_LIMIT).decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
