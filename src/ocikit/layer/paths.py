"""Layer entry names: cleaned the way docker's loader compares them, never trusted."""

from __future__ import annotations

from typing import NamedTuple


class CleanName(NamedTuple):
    parts: tuple[str, ...]  # () is the root
    absolute: bool  # the name started with "/"
    escapes: bool  # its ".." climbed above the root

    @property
    def path(self) -> str:
        return "/".join(self.parts)


def clean(name: str) -> CleanName:
    """``./a``, ``a``, ``a/``, ``/a`` and ``a/./b/..`` all clean to ``a`` (``filepath.Clean``
    of a root-relative name); ``..`` above the root is reported, not silently dropped."""
    split = name.split("/")
    if "" not in split and "." not in split and ".." not in split:  # already clean
        return CleanName(tuple(split), False, False)
    parts: list[str] = []
    escapes = False
    for part in split:
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            else:
                escapes = True
            continue
        parts.append(part)
    return CleanName(tuple(parts), name.startswith("/"), escapes)


def go_clean(name: str) -> str:
    """Go's ``filepath.Clean``, which docker's loader applies before it compares names: ``.``
    and empty components go, ``..`` removes the component before it (at a leading ``/`` it
    is dropped), a leading ``/`` stays, nothing left is ``.``."""
    rooted = name.startswith("/")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    path = "/".join(parts)
    return "/" + path if rooted else path or "."


def split_target(target: str) -> tuple[bool, list[str]]:
    """A symlink target: (absolute, components, ``..`` kept for the resolver)."""
    return target.startswith("/"), [p for p in target.split("/") if p not in ("", ".")]


WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
