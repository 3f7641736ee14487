"""One exception hierarchy; every error carries the exit code the CLI returns.

Exit codes (documented in the README):
  0  success
  1  the operation ran and found problems (``check``)
  2  bad usage, or input that cannot be read, verified or trusted
"""

from __future__ import annotations


class OcikitError(Exception):
    """Base of every error ocikit raises on purpose. ``str(err)`` is one line for the user;
    ``lines()`` what the command line prints: that line, or (a recipe's errors) a header and
    one line per problem."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [str(self)]


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
