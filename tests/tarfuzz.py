"""Generated tar byte streams that stress a reader where readers differ.

Streams are built member by member from hand-made 512-byte headers: numeric fields plain
octal, padded with spaces or NULs, base-256, or malformed; magics USTAR, GNU, STAR or none;
checksums right (unsigned or signed) or wrong; PAX ``x`` and ``g`` headers and GNU long names
and links before an entry; old GNU sparse entries and unknown type letters; PAX records with
the keys readers interpret (path, size, uid, mtime, GNU sparse maps...) and good or bad
values; data that may not match the size; an end of two zero blocks, one, none or garbage;
and now and then a flipped byte or a cut.

Hypothesis draws the structure (how many members, of which types, the end, the damage) and
a seed per member; the seed drives a ``random.Random`` for the details of each header, so
one example costs a handful of draws and ten thousand run in seconds.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

BLOCK = 512

NAMES = [
    b"a",
    b"b",
    b"a/",
    b"./a",
    b"/a",
    b"../a",
    b"bin",
    b"bin/",
    b"usr/bin/sh",
    b".wh.a",
    b"d/.wh..wh..opq",
    b"",
    b".",
    b"./",
    b"caf\xc3\xa9",
    b"\xff\xfe",
    b"a\0b",
    b"x" * 100,
    b"y" * 99 + b"/",
]
SAFE_NAMES = [n for n in NAMES if b"\0" not in n]
NUMBERS = [
    b"0",
    b"1",
    b"644",
    b"1000",
    b"-1",
    b"+1",
    b"1099511627776",  # 2**40
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"1e30",
    b"nan",
    b"inf",
    b"1.5",
    b"-1.5",
    b"1.",
    b".5",
    b"1.0000000001",
    b"1_0",
    b" 1",
    b"0x10",
    b"",
    b"\xd9\xa1",  # an Arabic-Indic digit: not a decimal digit to Go
]
KEYS = [
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"atime",
    b"ctime",
    b"uname",
    b"gname",
    b"comment",
    b"SCHILY.xattr.user.a",
    b"SCHILY.xattr.security.capability",
    b"GNU.sparse.major",
    b"GNU.sparse.minor",
    b"GNU.sparse.name",
    b"GNU.sparse.size",
    b"GNU.sparse.realsize",
    b"GNU.sparse.map",
    b"GNU.sparse.numblocks",
    b"GNU.sparse.offset",
    b"GNU.sparse.numbytes",
    b"k\0y",
    b"",
]
GOOD_VALUES = {
    b"size": [b"0", b"1", b"2", b"513", b"521"],
    b"uid": [b"0", b"1000", b"1099511627776", b"-1", b"+5"],
    b"gid": [b"0", b"1000", b"4294967296"],
    b"mtime": [b"0", b"1700000000.5", b"-1.5", b"1.", b"9223372036854775807", b"1.0000000001"],
    b"atime": [b"0", b"1.25"],
    b"ctime": [b"0", b"2"],
    b"GNU.sparse.major": [b"0", b"1"],
    b"GNU.sparse.minor": [b"0", b"1"],
    b"GNU.sparse.size": [b"0", b"2", b"1024", b"4096"],
    b"GNU.sparse.realsize": [b"2", b"1024"],
    b"GNU.sparse.numblocks": [b"0", b"1", b"2"],
    b"GNU.sparse.map": [b"0,1", b"0,2,4,1", b"5,1,2,1", b"", b"0,1,", b"a,b"],
}
FINAL = [b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"g", b"S", b"0", b"5", b"2"]
RARE = [b"A", b"D", b"M", b"N", b"V", b"X", b"\xff", b" "]
HEADER_ONLY = (b"1", b"2", b"3", b"4", b"5", b"6")
MAGICS = [b"ustar\x0000", b"ustar  \0", b"ustar\0  ", b"\0" * 8, b"ustar\0\0\0", b"gnutar\0\0"]


def octal(value: int, width: int) -> bytes:
    digits = b"%o" % value
    if len(digits) >= width:
        return digits[-width:]
    return digits.rjust(width - 1, b"0") + b"\0"


def numeric(r: random.Random, width: int, value: int, wild: bool) -> bytes:
    """``value`` in a spelling readers accept, or (``wild``) perhaps a malformed field."""
    kinds = ["plain"] * 12 + ["spaces", "nul-first", "lead-nul", "b256"]
    if wild:
        kinds += ["inner", "b256-any", "negative", "junk"] * 2
    kind = r.choice(kinds)
    digits = b"%o" % value
    if kind == "spaces":
        field = digits.rjust(width - 1, b" ") + r.choice([b" ", b"\0"])
    elif kind == "nul-first":
        field = digits + b"\0"
    elif kind == "lead-nul":
        field = digits.rjust(width, b"\0")
    elif kind == "b256" and value < 1 << (8 * (width - 1)):
        field = b"\x80" + value.to_bytes(width - 1, "big")
    elif kind == "inner":
        field = digits + r.choice([b" 1", b"\x001", b"8", b"+", b"_1", b"\t"])
    elif kind == "b256-any":
        field = bytes([0x80 | r.randrange(128)]) + r.randbytes(width - 1)
    elif kind == "negative":
        field = ((1 << (8 * width)) - r.randrange(1, 1 << 20)).to_bytes(width, "big")
    elif kind == "junk":
        field = r.randbytes(width)
    else:
        field = octal(value, width)
    return field[:width].ljust(width, b"\0")


def pax_body(r: random.Random) -> bytes:
    """PAX records; in one body of six anything goes (bad lengths, values, keys)."""
    wild = r.randrange(6) == 0
    records = []
    for _ in range(r.randrange(5)):
        key = r.choice(KEYS if wild else KEYS[:-2])
        if key == b"GNU.sparse.offset" and not wild:  # 0.0's records come in pairs
            records.append(b"23 GNU.sparse.offset=%d\n" % r.randrange(10))
            key = b"GNU.sparse.numbytes"
        elif key == b"GNU.sparse.numbytes" and not wild:
            continue
        if key in GOOD_VALUES and not (wild and r.random() < 0.5):
            value = r.choice(GOOD_VALUES[key])
        elif key == b"GNU.sparse.numbytes":
            value = b"%d" % r.randrange(4)
        else:
            value = r.choice(NUMBERS + NAMES if wild else SAFE_NAMES)
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(b"%d" % n) + len(body) != n:
            n = len(b"%d" % n) + len(body)
        lengths = [b"%d" % n] * 6
        if wild:
            lengths += [b"%d" % (n + 1), b"%d" % (n - 1), b"+%d" % n, b"4"]
        records.append(r.choice(lengths) + body)
    return b"".join(records)


def sparse_area(r: random.Random, count: int) -> bytes:
    """Old GNU sparse entries: a header's four slots or an extension block's 21."""
    out = b""
    offset = 0
    for _ in range(r.randrange(count + 1)):
        offset += r.choice([0, 1, 512, 1000])
        length = r.choice([0, 1, 2, 512])
        out += numeric(r, 12, offset, False) + numeric(r, 12, length, False)
        offset += length
    return out.ljust(24 * count, b"\0")


def header(r: random.Random, typeflag: bytes, size: int) -> bytes:
    """One header block; one in eight is "wild": any field may be malformed."""
    wild = r.randrange(8) == 0
    block = bytearray(BLOCK)
    block[0:100] = r.choice(NAMES)[:100].ljust(100, b"\0")
    block[100:108] = numeric(r, 8, 0o644, wild)
    block[108:116] = numeric(r, 8, r.choice([0, 1000]), wild)
    block[116:124] = numeric(r, 8, 0, wild)
    block[124:136] = numeric(r, 12, size, wild)
    block[136:148] = numeric(r, 12, r.choice([0, 1, 1700000000]), wild)
    block[156:157] = typeflag
    block[157:257] = r.choice(NAMES)[:100].ljust(100, b"\0")
    block[257:265] = r.choice(MAGICS[:2] * 4 + MAGICS)
    block[265:297] = r.choice([b"", b"root", b"\xff"]).ljust(32, b"\0")
    block[297:329] = r.choice([b"", b"root"]).ljust(32, b"\0")
    block[329:337] = numeric(r, 8, 0, wild)
    block[337:345] = numeric(r, 8, 0, wild)
    if typeflag == b"S" and r.random() < 0.7:
        block[386:482] = sparse_area(r, 4)
        block[482] = r.choice([0, 0, 1])
        block[483:495] = numeric(r, 12, r.choice([0, 1, 2000, 4096]), wild)
    elif r.randrange(5) == 0:
        block[345:500] = r.choice([b"pre", b"p/q", b"\xff", b"123", b""]).ljust(155, b"\0")
    if r.randrange(9) == 0:
        block[508:512] = b"tar\0"
    if wild and r.random() < 0.5:
        block[345:369] = r.randbytes(24)
    checks = ["unsigned"] * 10 + ["signed", "spaces"] + (["wrong", "b256"] if wild else [])
    checksum = r.choice(checks)
    block[148:156] = b" " * 8
    unsigned = sum(block)
    signed = sum(b - 256 if b > 127 else b for b in block)
    if checksum == "signed" and signed >= 0:
        block[148:156] = b"%06o\0 " % signed
    elif checksum == "spaces":
        block[148:156] = (b" %o" % unsigned).ljust(8, b" ")
    elif checksum == "wrong":
        block[148:156] = b"%06o\0 " % (unsigned + 1)
    elif checksum == "b256":
        block[148:156] = b"\x80" + unsigned.to_bytes(7, "big")
    else:
        block[148:156] = b"%06o\0 " % unsigned
    assert len(block) == BLOCK
    return bytes(block)


def one(r: random.Random, typeflag: bytes) -> bytes:
    """One header and its data: the data usually matches the size and the type (none for
    links, directories, devices), and an old GNU sparse entry has its extension blocks."""
    if typeflag in (b"x", b"g"):
        data = pax_body(r)
    elif typeflag in (b"L", b"K"):
        data = r.choice(NAMES) + r.choice([b"\0", b"", b"\0junk"])
    elif typeflag == b"S":
        data = r.randbytes(r.randrange(21)) * r.choice([1, 60])
    elif typeflag in HEADER_ONLY and r.randrange(16):
        data = b""
    else:
        data = r.choice([b"", b"hi", b"x" * 513]) + r.randbytes(r.randrange(9))
    size = len(data) + r.choice([0] * 40 + [1, -1, 512, -3])
    if typeflag in HEADER_ONLY and r.randrange(4) == 0:
        size = r.choice([5, 512, 1 << 40])  # a size that means nothing for the type
    out = header(r, typeflag, max(size, 0))
    if typeflag == b"S" and out[482] and r.randrange(6):
        out += sparse_area(r, 21) + bytes([r.choice([0, 0, 0, 1])]) + bytes(7)
    return out + data + bytes(-len(data) % BLOCK)


def member(r: random.Random, typeflag: bytes) -> bytes:
    """An entry, often after PAX or GNU long-name headers."""
    out = b""
    for meta, odds in ((b"x", 3), (b"L", 8), (b"K", 10), (b"x", 10)):
        if r.randrange(odds + 1) == 0:
            out += one(r, meta)
    return out + one(r, typeflag)


ENDS = [bytes(2 * BLOCK)] * 4 + [bytes(BLOCK), b"", bytes(1024) + b"x"]


@st.composite
def tar_stream(draw: st.DrawFn) -> bytes:
    members = draw(
        st.lists(st.tuples(st.sampled_from(FINAL * 4 + RARE), st.integers(0, 2**32)), max_size=6)
    )
    end = draw(st.sampled_from(ENDS))
    damage = draw(st.sampled_from([0] * 10 + [1, 2, 3]))
    seed = draw(st.integers(0, 2**32))
    data = bytearray(b"".join(member(random.Random(s), t) for t, s in members) + end)
    r = random.Random(seed)
    if damage & 1:
        for _ in range(r.randrange(1, 3)):
            if data:
                data[r.randrange(len(data))] = r.randrange(256)
    if damage & 2 and data:
        data = data[: r.randrange(len(data) + 1)]
    return bytes(data)
