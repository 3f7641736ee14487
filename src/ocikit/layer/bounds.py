"""The bounds a layer is read within, where a command line can name them without loading
the readers (``ocikit --help`` shows the defaults)."""

from __future__ import annotations

BOMB_FLOOR = 64 << 20  # bytes any layer may expand to, whatever its size
DEFAULT_MAX_RATIO = 500.0  # times its compressed size a layer may expand to (above the floor)
