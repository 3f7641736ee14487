"""Tar headers parsed in C (src/native/tarcore.c), with the rules of ocikit.layer.tarstream."""

from typing import TypeVar

from typing_extensions import Buffer

_E = TypeVar("_E")

def header(block: Buffer, cls: type[_E], /) -> _E | None: ...
def headers(buffer: Buffer, pos: int, cls: type[_E], /) -> list[_E]: ...
