"""One exception hierarchy; every error carries the exit code the CLI returns.

Exit codes (documented in the README):
  0  success
  1  the operation ran and found problems (``check``)
  2  bad usage, or input that cannot be read, verified or trusted
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """A parameter of a library call named in an error's message (``platform``, ``repair``):
    the library says its own name, the command line its flag (``--platform``)."""

    name: str


class OcikitError(Exception):
    """Base of every error ocikit raises on purpose. ``str(err)`` is one line for the user,
    made of ``parts``: text, and ``Option``s said by their library names; ``worded(names)``
    says the options as a caller calls them (the command line: its flags). ``lines()`` is
    what the command line prints: that line, or (a recipe's errors) a header and one line
    per problem."""

    exit_code = 2

    def __init__(self, *parts: object) -> None:
        self.parts = parts
        super().__init__(self.worded({}))

    @property
    def options(self) -> tuple[str, ...]:
        """The names of the options the message names, in order."""
        return tuple(p.name for p in self.parts if isinstance(p, Option))

    def worded(self, names: Mapping[str, str]) -> str:
        """The message, each option said as ``names`` calls it (else by its own name)."""
        return "".join(
            names.get(p.name, p.name) if isinstance(p, Option) else str(p) for p in self.parts
        )

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        return [self.worded(names or {})]


class UsageError(OcikitError):
    """Malformed reference, unknown transport, contradictory options."""


class InputError(OcikitError):
    """The input cannot be read or is not what it claims to be."""


class NotFoundError(InputError):
    """An image, tag, file or blob named by the input or the user does not exist."""


class AmbiguousImageError(UsageError):
    """The source holds several images and the reference did not say which."""


class VerificationError(InputError):
    """A blob's digest, size or content does not match what describes it."""


class UnsafeInputError(InputError):
    """The input tries to reach outside where it belongs (escaping symlink, loop, traversal)."""


class DestinationError(OcikitError):
    """The destination cannot be written."""
