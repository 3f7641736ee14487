"""Text a person reads: ``inspect``'s summary on a terminal, ``copy``'s closing line.

Every value may come from a hostile image: the caller prints each line through
``printable`` (controls escaped, length bounded); lists are cut at ``SHOWN`` items.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..model import Compression
from ..model import mediatypes as mt

if TYPE_CHECKING:
    from ..ops.copy import CopyResult

SHOWN = 50  # env entries, labels or layers listed before "... N more"
VALUE_LIMIT = 300  # characters of one value (an env entry, a label, a command)
SUMMARY_LINE_LIMIT = 400
WIDTH = 12  # the column the values start at


def human_size(n: int) -> str:
    """Bytes as docker prints them (powers of 1000): ``512 B``, ``12.3 kB``, ``1.23 GB``."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.3g} {unit}"
    raise AssertionError("unreachable")


def short_id(digest: str | None) -> str:
    """docker's short image ID: the first 12 hex digits of the digest."""
    return digest.partition(":")[2][:12] if digest else "-"


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + "..."


def _command(value: Any) -> str:
    if value is None:
        return "(none)"
    return _cut(json.dumps(value, ensure_ascii=False))


def _row(key: str, value: str) -> str:
    return f"{key:<{WIDTH}}{value}"


def _listed(key: str, items: list[str], more_hint: str = "--json lists all") -> list[str]:
    if not items:
        return [_row(key, "(none)")]
    lines = [_row(key if i == 0 else "", _cut(item)) for i, item in enumerate(items[:SHOWN])]
    if len(items) > SHOWN:
        lines.append(_row("", f"... {len(items) - SHOWN} more ({more_hint})"))
    return lines


def _compression(media_type: str) -> str:
    compression = mt.layer_compression(media_type)
    if compression is None:
        return media_type
    return "tar" if compression is Compression.NONE else compression.value


def inspect_summary(info: dict[str, Any]) -> list[str]:
    """The lines of ``inspect`` on a terminal, from ``ops.inspect``'s data."""
    layers = info["layers"]
    total = sum(layer["size"] for layer in layers)
    platform = "/".join(p for p in (info["os"], info["architecture"], info["variant"]) if p)
    lines = [
        _row("name", info["name"] or "(none)"),
        _row("reference", info["reference"]),
        _row("digest", f"{info['digest']}  (manifest)"),
        _row("image ID", f"{short_id(info['config_digest'])}  ({info['config_digest']})"),
        _row("platform", platform or "(unknown)"),
        _row("created", str(info["created"] or "(unknown)")),
        _row("size", f"{human_size(total)} in {len(layers)} layer{'s' * (len(layers) != 1)}"),
    ]
    for i, layer in enumerate(layers[:SHOWN]):
        algorithm, _, hex_digits = layer["digest"].partition(":")
        lines.append(
            f"  {i:>3}  {algorithm}:{hex_digits[:12]}  "
            f"{human_size(layer['size']):>9}  {_compression(layer['mediaType'])}"
        )
    if len(layers) > SHOWN:
        lines.append(f"  ... {len(layers) - SHOWN} more layers (--json lists all)")
    lines += [
        _row("entrypoint", _command(info["entrypoint"])),
        _row("cmd", _command(info["cmd"])),
    ]
    if info["user"]:
        lines.append(_row("user", _cut(info["user"])))
    if info["working_dir"]:
        lines.append(_row("workdir", _cut(info["working_dir"])))
    lines += _listed("env", list(info["env"]))
    lines += _listed("labels", [f"{k}={v}" for k, v in info["labels"].items()])
    if info["repo_tags"] and info["repo_tags"] != [info["name"]]:
        lines += _listed("tags", list(info["repo_tags"]))
    return lines


def copied_line(result: CopyResult) -> str:
    """``copied DIGEST to DEST (image ID 0123456789ab)``: the ID ``docker images`` shows."""
    line = f"copied {result.manifest_digest} to {result.destination}"
    if result.image_id is not None:
        line += f" (image ID {short_id(result.image_id)})"
    return line
