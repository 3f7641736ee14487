"""Content digests (``algorithm:hex``), validated on construction."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Protocol

from ..errors import InputError
from .jsondoc import quote

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-f0-9]+)$")


class Hasher(Protocol):
    """What ``hashlib.new`` returns (hashlib names no public type for it)."""

    def update(self, data: Buffer, /) -> None: ...

    def hexdigest(self) -> str: ...


class Digest(str):
    """A validated digest string such as ``sha256:9f86...``; it is a ``str``, so JSON-ready."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        m = _DIGEST_RE.match(value) if isinstance(value, str) else None
        if not m or _HEX_LENGTH.get(m.group(1)) != len(m.group(2)):
            raise InputError(f"invalid digest {quote(value)}")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")

    def new_hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)
