"""JSON documents from untrusted input: parsed within bounds, read with their types checked.

Every JSON document ocikit reads (manifests, indexes, configs, a layout's ``index.json`` and
``oci-layout``, a docker-archive's ``manifest.json``, auth files, ``v2metadata``, the answers
of registries and of the engine) goes through ``load_json``, which refuses before parsing:

- more bytes than the document's kind allows (``limit``: ``MANIFEST_LIMIT`` and so on);
- nesting deeper than ``MAX_DEPTH``;
- more values than one per ``BYTES_PER_VALUE`` bytes of the limit, and never more than
  ``MAX_VALUES``: ``json.loads`` costs up to ~80 bytes of memory per value (``[[]]``,
  ``{}``: 25-43 bytes per byte of input, measured), so this bounds what one parse costs
  (~40 MB for a manifest, ~80 MB at most), whatever the bytes hold.

Half a surrogate pair escaped in a string (``"\\ud800"``) reads as U+FFFD, as Go's
encoding/json (docker's, containerd's) reads it, so that every string can be printed as
UTF-8; the document's bytes, and so its digest, are unchanged.

The counts come from one pass over the bytes, 64 KiB at a time, with bytes methods and one
regular expression (escapes, then strings removed; the structural characters kept): a
hostile document costs a few copies of its size and a fraction of a second, whatever its
shape.
The typed accessors below (``obj``, ``opt_str``, ``str_map``...) raise ``InputError`` naming
the place, so a field of the wrong type is a one-line error, never a crash further on.
"""

from __future__ import annotations

import json
import re
import reprlib
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, NoReturn, TypeVar

from ..errors import InputError

T = TypeVar("T")

MANIFEST_LIMIT = 4 << 20  # manifests and indexes (what registries accept; skopeo's too)
CONFIG_LIMIT = 8 << 20  # image configs (skopeo: 4 MiB)
INDEX_JSON_LIMIT = 16 << 20  # a layout's index.json (a build cache may name many images)
ARCHIVE_MANIFEST_LIMIT = 4 << 20  # a docker-archive's manifest.json (skopeo: 1 MiB)
SMALL_LIMIT = 1 << 20  # auth files, tokens, v2metadata, one event of the engine
MAX_DEPTH = 64  # real documents nest 5 deep
BYTES_PER_VALUE = 8
MAX_VALUES = 1_000_000

_STRING = re.compile(rb'"[^"]*"')
_KEEP = b'"[]{},:'  # quotes (to find strings) and structure
_NOT_KEPT = bytes(b for b in range(256) if b not in _KEEP)
_SCAN_BLOCK = 64 << 10  # bytes scanned at once: bounds what re.sub holds
_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
QUOTE_LIMIT = 200  # characters of one name a message shows
MESSAGE_LIMIT = 2000  # characters of one line ocikit prints about its input, at most
SHOWN_CHOICES = 5  # items of a list of choices a message names; the rest are counted
_BACKSLASHED = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    o = ord(c)
    if c in _BACKSLASHED:
        return _BACKSLASHED[c]
    if 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape decoded it
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _escaped(text: str, special: str, limit: int, total: int) -> tuple[str, bool]:
    """``text`` with non-printable characters (and ``special`` ones) escaped, at most
    ``limit`` characters of it; whether some of the ``total`` were left out."""
    if len(text) <= limit and text.isprintable() and not any(c in text for c in special):
        return text, len(text) < total
    out: list[str] = []
    used = size = 0
    for c in text:
        piece = c if c.isprintable() and c not in special else _escape(c)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
        used += 1
    return "".join(out), used < total


def quote(value: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """A name from the input (a path, a tag, a field), quoted for a message, as ``repr``
    quotes it: ``'...'`` with control, format (bidi) and other non-printable characters
    escaped (``\\n``, ``\\x1b``, ``\\u202e``), a byte that is not UTF-8 shown as ``\\xNN``
    (bytes, or text decoded with surrogateescape), and at most ``limit`` characters of it:
    past that, ``'...'... (N characters)``."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        total, unit = len(raw), "bytes"
        text = raw[:limit].decode("utf-8", "surrogateescape")
    else:
        text = str(value)
        total, unit = len(text), "characters"
    body, cut = _escaped(text[:limit], "\\'", limit, total)
    return f"'{body}'... ({total} {unit})" if cut else f"'{body}'"


def printable(
    text: str, limit: int = MESSAGE_LIMIT, *, total: int | None = None, unit: str = "characters"
) -> str:
    """Text from outside (a tool's output, a message) as one line that a terminal shows as
    it is: non-printable characters escaped as ``quote`` escapes them (quotes and
    backslashes kept), at most ``limit`` characters: past that, ``... (N characters)``.
    ``total``: the size of what ``text`` is the beginning of, in ``unit``s."""
    body, cut = _escaped(text[:limit], "", limit, len(text))
    if total is None:
        total = len(text)
    return f"{body}... ({total} {unit})" if cut or total > len(text) else body


def summary(items: Sequence[str], shown: int = SHOWN_CHOICES, *, total: int | None = None) -> str:
    """A list of choices for a message: the first ``shown`` of ``items``, then how many more
    of ``total`` (default: all of ``items``) there are."""
    total = len(items) if total is None else total
    if not total:
        return "none"
    head = ", ".join(items[:shown])
    return f"{head} and {total - shown} more" if total > shown else head


class _Short(reprlib.Repr):
    def repr_str(self, x: str, level: int) -> str:
        return quote(x, self.maxstring)


_show = _Short()
_show.maxstring = 60
_show.maxother = 60
_show.maxlist = _show.maxdict = 4
_show.maxlevel = 2


def show(value: Any) -> str:
    """A short, one-line ``repr`` of an untrusted value, for messages (strings ``quote``d)."""
    return _show.repr(value)


_NOT_ASCII = re.compile("[^\x00-\x7e]")


def _json_char(match: re.Match[str]) -> str:
    c = match.group()
    o = ord(c)
    if 0xD800 <= o <= 0xDFFF:  # a byte that is not UTF-8 (surrogateescape): as Go writes it
        return "\ufffd"
    if c.isprintable():
        return c
    if o > 0xFFFF:
        o -= 0x10000
        return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"
    return f"\\u{o:04x}"


def json_text(data: Any, indent: int | None = 2) -> str:
    """``data`` as JSON text that is valid UTF-8 and safe on a terminal, whatever its strings
    hold: a byte that is not UTF-8 (a lone surrogate from surrogateescape) becomes U+FFFD, as
    Go's encoding/json writes it; a non-printable character (C1 controls, DEL, bidi and other
    format characters, separators) is written as a ``\\u`` escape, so the value read back is
    the same; other text stays as it is."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    if text.isascii() and "\x7f" not in text:
        return text
    return _NOT_ASCII.sub(_json_char, text)


def exact_bytes(texts: Sequence[str]) -> list[bytes] | None:
    """The bytes of ``texts`` (decoded with surrogateescape) if one of them is not valid
    UTF-8, so that JSON, which holds text, cannot say it; else None."""
    try:
        for t in texts:
            t.encode("utf-8")
    except UnicodeEncodeError:
        return [t.encode("utf-8", "surrogateescape") for t in texts]
    return None


def one_line(text: str, limit: int = 300) -> str:
    """Untrusted text made safe for a message: one line of printable characters (newlines,
    terminal escapes and other controls become spaces), ``limit`` characters at most."""
    text = text[: limit * 4]
    cleaned = "".join(
        c if c.isprintable() and unicodedata.category(c) != "Cf" else " " for c in text
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 layer``, ``2 layers``, ``0 entries`` (``plural``: when not NOUN + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def load_json(raw: bytes, what: str, *, limit: int = MANIFEST_LIMIT) -> Any:
    """The document ``raw`` holds, parsed within the bounds above; ``InputError`` otherwise."""
    if len(raw) > limit:
        raise InputError(f"{what} is too large (over {size_text(limit)})")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    _check_shape(raw, what, min(MAX_VALUES, max(1024, limit // BYTES_PER_VALUE)))
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{what} is not valid JSON: {_first_line(e)}") from None
    except RecursionError:  # not reached within MAX_DEPTH; a last line of defence
        raise InputError(f"{what} nests too deeply") from None
    return _without_surrogates(data) if _SURROGATE_ESCAPE.search(raw) else data


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def read_json(stream: BinaryIO, what: str, *, limit: int) -> Any:
    """``load_json`` of what ``stream`` holds, reading at most ``limit`` + 1 bytes."""
    return load_json(read_limited(stream, what, limit), what, limit=limit)


def read_limited(stream: BinaryIO, what: str, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} is too large (over {size_text(limit)})")
    return data


def _structure(raw: bytes) -> bytes:
    """The structural characters of ``raw`` that are outside strings, in order."""
    parts = []
    inside = False  # in a string that began in an earlier block
    carry = b""  # a backslash whose escaped character is in the next block
    for start in range(0, len(raw), _SCAN_BLOCK):
        block = carry + raw[start : start + _SCAN_BLOCK]
        odd = (len(block) - len(block.rstrip(b"\\"))) % 2
        block, carry = (block[:-1], b"\\") if odd else (block, b"")
        # escaped backslashes, then escaped quotes (left to right, as JSON reads them): no
        # quote left is escaped; other escapes hold no quote or structure
        block = block.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_KEPT)
        if inside:
            end = block.find(b'"')
            if end < 0:
                continue
            block, inside = block[end + 1 :], False
        block = _STRING.sub(b"", block)
        opened = block.find(b'"')  # a string that goes on in the next block
        if opened >= 0:
            block, inside = block[:opened], True
        parts.append(block)
    return b"".join(parts)


def _check_shape(raw: bytes, what: str, max_values: int) -> None:
    structure = _structure(raw)
    values = 1 + sum(structure.count(c) for c in (b",", b":", b"[", b"{"))
    if values > max_values:
        raise InputError(f"{what} holds too many values (over {max_values})")
    brackets = structure.translate(_TO_BRACKETS, b",:")
    if brackets.count(b"[") <= MAX_DEPTH:
        return
    # each pass removes the innermost pairs: what remains after MAX_DEPTH passes is deeper
    for _ in range(MAX_DEPTH):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return  # nothing nested is left; unbalanced brackets are json's to report
        brackets = shorter
    if b"[]" in brackets:
        raise InputError(f"{what} nests too deeply (over {MAX_DEPTH} levels)")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


# -- typed access ----------------------------------------------------------------------------


def kind(value: Any) -> str:
    """How JSON calls a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def wrong(where: str, key: str | None, wanted: str, value: Any) -> NoReturn:
    place = f"{where}: {key!r}" if key is not None else where
    raise InputError(f"{place} must be {wanted}, not {kind(value)}")


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        wrong(where, None, "a JSON object", value)
    return value


def _opt(data: Mapping[str, Any], key: str, where: str, kind: type[T], wanted: str) -> T | None:
    """The value at ``key`` if it is a ``kind``; None if absent or null; else ``wrong``."""
    value = data.get(key)
    if value is None or isinstance(value, kind):
        return value
    wrong(where, key, wanted, value)


def opt_obj(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = data.get(key)  # (not ``_opt``: Mapping is abstract, no ``type[T]``)
    if value is None or isinstance(value, Mapping):
        return value
    wrong(where, key, "an object", value)


def opt_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """The string at ``key``; None if absent or null."""
    return _opt(data, key, where, str, "a string")


def req_str(data: Mapping[str, Any], key: str, where: str) -> str:
    if key not in data:
        raise InputError(f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, str):
        wrong(where, key, "a string", value)
    return value


def opt_bool(data: Mapping[str, Any], key: str, where: str) -> bool | None:
    return _opt(data, key, where, bool, "true or false")


def opt_list(data: Mapping[str, Any], key: str, where: str) -> list[Any] | None:
    return _opt(data, key, where, list, "a list")


def str_list(data: Mapping[str, Any], key: str, where: str) -> list[str] | None:
    """A list of strings at ``key``; None if absent or null."""
    value = opt_list(data, key, where)
    if value is not None:
        for i, item in enumerate(value):
            if not isinstance(item, str):
                wrong(f"{where}: {key}[{i}]", None, "a string", item)
    return value


def str_map(data: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    """A string-to-string map at ``key`` (annotations, labels); {} if absent or null."""
    value = opt_obj(data, key, where)
    if not value:
        return {}
    for k, v in value.items():
        if not isinstance(v, str):
            wrong(f"{where}: {key}[{show(k)}]", None, "a string", v)
    return dict(value)


def size(data: Mapping[str, Any], key: str, where: str) -> int:
    """A required byte count: an integer from 0 to 2^63 - 1."""
    if key not in data:
        raise InputError(f"{where}: missing {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        wrong(where, key, "an integer", value)
    if not 0 <= value < 1 << 63:
        raise InputError(f"{where}: {key!r} is out of range ({show(value)})")
    return value
