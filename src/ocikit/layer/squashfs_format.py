"""A squashfs image read as the tar entries it stands for, without extracting it.

``check`` needs names, types, modes, owners, sizes, link targets, hardlinks and the overlayfs
marks of a squashfs layer, never its files' content, so this reads the filesystem's own
tables (superblock, inode and directory tables, ids, xattrs) from the spooled blob with
``pread``: memory grows with the paths of one directory and a small cache of metadata
blocks, never with the blob. The entries are those ``overlay.overlay_entries`` gives for the
tree ``unsquashfs`` extracts (the same order, whiteouts and opaque marks, hardlinks), so a
squashfs layer is judged by the rules a tar layer is.

The image is hostile input: every offset is checked against the image, every metadata block
decompresses to at most 8 KiB, a directory met twice (a loop, or a shared subtree that would
multiply the entries) is refused, names are single components (no ``/``, NUL, ``.`` or
``..``, at most 255 bytes) and a directory holds each name once as the kernel expects (a
repeated name is passed on, for ``duplicate-path``). ``budget`` stops the walk when the
entries stand for more bytes than allowed (the tar they stand for: a 512-byte header per
entry, long names, and each file's data), so a tiny image of a huge sparse file, or of
millions of inodes, costs nothing; ``verify_data`` also decompresses every data block and
fragment a file uses (each once), as ``unsquashfs`` would, so a corrupt block is found.

Compressions read: gzip (mksquashfs's default, stacker's), xz, lzma and zstd. lzo and lz4
images are refused with one line.
"""

from __future__ import annotations

import lzma
import os
import struct
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..model.jsondoc import quote
from .paths import OPAQUE, WHITEOUT
from .scan import DecompressionBomb
from .tarstream import TarEntry

MAGIC = b"hsqs"
SUPERBLOCK = struct.Struct("<4sIIIIHHHHHHQQQQQQQQ")
METADATA_SIZE = 8192
NO_XATTR = 0xFFFFFFFF
NO_TABLE = 0xFFFFFFFFFFFFFFFF
NO_FRAGMENT = 0xFFFFFFFF
NAME_MAX = 255
XATTR_LIST_MAX = 1 << 16  # names and values of one file's xattrs, as Linux allows
MAX_BLOCK_SIZE = 1 << 20
_CACHE_BLOCKS = 256  # metadata blocks kept decompressed (2 MiB at most)

# inode types (basic, extended = basic + 7)
_DIR, _FILE, _SYMLINK, _BLKDEV, _CHRDEV, _FIFO, _SOCKET = range(1, 8)
_XATTR_PREFIXES = {0: "user.", 1: "trusted.", 2: "security."}
_XATTR_OOL = 0x100
_OPAQUE_XATTR = "trusted.overlay.opaque"
_COMPRESSIONS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


Bomb = DecompressionBomb  # the entries stand for more bytes than the budget allows


def tar_size(name: str, size: int) -> int:
    """What an entry costs in the tar it stands for: its header, a PAX header for a long
    name, its data padded to 512 bytes."""
    cost = 512 + (size + 511) // 512 * 512
    if len(name) > 100:
        cost += 512 + (len(name) + 40 + 511) // 512 * 512
    return cost


@dataclass(frozen=True)
class Superblock:
    inode_count: int
    block_size: int
    fragment_count: int
    compression: int
    flags: int
    id_count: int
    root_inode: int
    bytes_used: int
    id_table: int
    xattr_table: int
    inode_table: int
    directory_table: int
    fragment_table: int


@dataclass
class _Inode:
    type: int  # basic type (1-7)
    mode: int
    uid: int
    gid: int
    mtime: int
    number: int
    nlink: int = 1
    xattr: int = NO_XATTR
    # directory
    dir_block: int = 0
    dir_offset: int = 0
    dir_size: int = 0
    # file
    size: int = 0
    blocks_start: int = 0
    fragment: int = NO_FRAGMENT
    fragment_offset: int = 0
    block_count: int = 0
    block_list: tuple[int, int] = (0, 0)  # where the blocks' sizes are in the inode table
    # symlink
    target: bytes = b""
    # device
    rdev: int = 0


class SquashfsImage:
    """A squashfs image in a file, read with ``pread``; ``what`` names it in errors."""

    def __init__(self, fd: int, what: str) -> None:
        self._fd = fd
        self.what = what
        self._file_size = os.fstat(fd).st_size
        head = os.pread(fd, SUPERBLOCK.size, 0)
        if len(head) < SUPERBLOCK.size or head[:4] != MAGIC:
            raise InputError(f"{what}: not a squashfs image")
        f = SUPERBLOCK.unpack(head)
        major, minor = f[9], f[10]
        if (major, minor) != (4, 0):
            raise InputError(f"{what}: squashfs version {major}.{minor} (only 4.0 is read)")
        block_size, block_log = f[3], f[6]
        if not 4096 <= block_size <= MAX_BLOCK_SIZE or block_size != 1 << block_log:
            raise InputError(f"{what}: squashfs block size {block_size} is not valid")
        self.sb = Superblock(
            inode_count=f[1],
            block_size=block_size,
            fragment_count=f[4],
            compression=f[5],
            flags=f[7],
            id_count=f[8],
            root_inode=f[11],
            bytes_used=f[12],
            id_table=f[13],
            xattr_table=f[14],
            inode_table=f[15],
            directory_table=f[16],
            fragment_table=f[17],
        )
        sb = self.sb
        if sb.bytes_used > self._file_size:
            raise InputError(f"{what}: the squashfs says {sb.bytes_used} bytes, it has fewer")
        if not (SUPERBLOCK.size <= sb.inode_table <= sb.directory_table <= sb.bytes_used):
            raise InputError(f"{what}: the squashfs's tables are out of place")
        self._decompress = _decompressor(sb.compression, what)
        self._cache: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        # where each metadata table ends (a block of it must start before that)
        self._ends = sorted(
            t
            for t in (
                sb.inode_table,
                sb.directory_table,
                sb.fragment_table,
                sb.id_table,
                sb.xattr_table,
                sb.bytes_used,
            )
            if t != NO_TABLE and t <= sb.bytes_used
        )
        self._ids = self._read_ids()
        self._xattr_head: tuple[int, int] | None = None  # (key-value table, count)
        self._opaque: dict[int, bool] = {}  # xattr set -> makes a directory opaque
        self._fragments: dict[int, int] = {}  # fragment -> its uncompressed size

    # -- low level ---------------------------------------------------------------------------
    def _pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.sb.bytes_used:
            raise InputError(f"{self.what}: the squashfs points outside itself")
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise InputError(f"{self.what}: the squashfs is cut short")
        return data

    def _block(self, start: int) -> tuple[bytes, int]:
        """The metadata block at ``start``: its bytes and where the next one starts."""
        cached = self._cache.get(start)
        if cached is not None:
            self._cache.move_to_end(start)
            return cached
        (header,) = struct.unpack("<H", self._pread(2, start))
        size = header & 0x7FFF
        if size == 0:
            raise InputError(f"{self.what}: an empty squashfs metadata block")
        raw = self._pread(size, start + 2)
        data = raw if header & 0x8000 else self._decompress(raw, METADATA_SIZE)
        if not data or len(data) > METADATA_SIZE:
            raise InputError(f"{self.what}: a squashfs metadata block of the wrong size")
        result = (data, start + 2 + size)
        self._cache[start] = result
        if len(self._cache) > _CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return result

    def _meta(self, table: int, block: int, offset: int, size: int) -> tuple[bytes, int, int]:
        """``size`` bytes of metadata from (``block``, ``offset``) of the table at ``table``;
        also the position after them (block, offset)."""
        end = next((e for e in self._ends if e > table), self.sb.bytes_used)
        out = bytearray()
        while True:
            start = table + block
            if not table <= start < end:
                raise InputError(f"{self.what}: a squashfs reference outside its table")
            data, following = self._block(start)
            if offset > len(data):
                raise InputError(f"{self.what}: a squashfs reference outside its block")
            take = data[offset : offset + size - len(out)]
            out += take
            offset += len(take)
            if len(out) == size:
                if offset == len(data):  # the next read starts on the next block
                    return bytes(out), following - table, 0
                return bytes(out), block, offset
            block, offset = following - table, 0

    def _reader(self, table: int, block: int, offset: int) -> _MetaReader:
        return _MetaReader(self, table, block, offset)

    def _position(self, start: int, index: int, entry_size: int) -> int:
        """Where the metadata block holding entry ``index`` of an indexed table (ids,
        fragments, xattr ids) starts: the table at ``start`` lists them, 8 bytes each."""
        position: int
        (position,) = struct.unpack(
            "<Q", self._pread(8, start + 8 * (index * entry_size // METADATA_SIZE))
        )
        return position

    def _indexed(self, start: int, index: int, entry_size: int) -> bytes:
        data, _next = self._block(self._position(start, index, entry_size))
        at = index * entry_size % METADATA_SIZE
        if at + entry_size > len(data):
            raise InputError(f"{self.what}: a squashfs table entry is missing")
        return data[at : at + entry_size]

    def _read_ids(self) -> list[int]:
        count = self.sb.id_count  # at most 65535 (16 bits)
        if count == 0:
            raise InputError(f"{self.what}: the squashfs has no owner table")
        return [struct.unpack("<I", self._indexed(self.sb.id_table, i, 4))[0] for i in range(count)]

    def _owner(self, index: int) -> int:
        if index >= len(self._ids):
            raise InputError(f"{self.what}: a squashfs inode names an owner that is not there")
        return self._ids[index]

    # -- inodes --------------------------------------------------------------------------------
    def inode(self, ref: int) -> _Inode:
        block, offset = ref >> 16, ref & 0xFFFF
        r = self._reader(self.sb.inode_table, block, offset)
        kind, mode, uid, gid, mtime, number = struct.unpack("<HHHHII", r.read(16))
        inode = _Inode(0, mode & 0o7777, self._owner(uid), self._owner(gid), mtime, number)
        if kind == 1:
            start, nlink, size, off, _parent = struct.unpack("<IIHHI", r.read(16))
            inode.dir_block, inode.nlink, inode.dir_size, inode.dir_offset = start, nlink, size, off
        elif kind == 8:
            nlink, size, start, _parent, _count, off, xattr = struct.unpack("<IIIIHHI", r.read(24))
            inode.nlink, inode.dir_size, inode.dir_block = nlink, size, start
            inode.dir_offset, inode.xattr = off, xattr
        elif kind == 2:
            start, frag, frag_off, size = struct.unpack("<IIII", r.read(16))
            inode.blocks_start, inode.fragment, inode.fragment_offset = start, frag, frag_off
            inode.size = size
        elif kind == 9:
            start, size, _sparse, nlink, frag, frag_off, xattr = struct.unpack(
                "<QQQIIII", r.read(40)
            )
            inode.blocks_start, inode.size, inode.nlink = start, size, nlink
            inode.fragment, inode.fragment_offset, inode.xattr = frag, frag_off, xattr
        elif kind in (3, 10):
            nlink, length = struct.unpack("<II", r.read(8))
            if not 0 < length <= 4095:  # PATH_MAX: no kernel makes a longer one
                raise InputError(f"{self.what}: a squashfs symlink target of {length} bytes")
            inode.nlink, inode.target = nlink, r.read(length)
            if kind == 10:
                (inode.xattr,) = struct.unpack("<I", r.read(4))
        elif kind in (4, 5, 11, 12):
            inode.nlink, inode.rdev = struct.unpack("<II", r.read(8))
            if kind > 7:
                (inode.xattr,) = struct.unpack("<I", r.read(4))
        elif kind in (6, 7, 13, 14):
            (inode.nlink,) = struct.unpack("<I", r.read(4))
            if kind > 7:
                (inode.xattr,) = struct.unpack("<I", r.read(4))
        else:
            raise InputError(f"{self.what}: a squashfs inode of unknown type {kind}")
        inode.type = kind if kind <= 7 else kind - 7
        if inode.type == _FILE:
            bs = self.sb.block_size
            count = inode.size // bs if inode.fragment != NO_FRAGMENT else -(-inode.size // bs)
            inode.block_count = count  # their sizes follow: read by check_data, if asked
            inode.block_list = (r.block, r.offset)
        return inode

    # -- xattrs ----------------------------------------------------------------------------------
    def opaque(self, index: int) -> bool:
        """Whether the xattrs ``index`` make a directory opaque (each set read once)."""
        known = self._opaque.get(index)
        if known is None:
            known = self._opaque[index] = self.xattrs(index).get(_OPAQUE_XATTR) == b"y"
        return known

    def xattrs(self, index: int) -> dict[str, bytes]:
        """The xattrs ``index``: at most 64 KiB of names and values, as Linux allows."""
        if index == NO_XATTR:
            return {}
        if self.sb.xattr_table == NO_TABLE:
            raise InputError(f"{self.what}: a squashfs inode names xattrs, the image has none")
        if self._xattr_head is None:
            self._xattr_head = struct.unpack("<QII", self._pread(16, self.sb.xattr_table))[:2]
        kv_start, count = self._xattr_head
        if index >= count:
            raise InputError(f"{self.what}: a squashfs inode names xattrs that are not there")
        ref, n, _size = struct.unpack("<QII", self._indexed(self.sb.xattr_table + 16, index, 16))
        r = self._reader(kv_start, ref >> 16, ref & 0xFFFF)
        out: dict[str, bytes] = {}
        left = XATTR_LIST_MAX

        def take(size: int) -> int:
            nonlocal left
            left -= size
            if left < 0:
                raise InputError(f"{self.what}: a squashfs file's xattrs exceed 64 KiB")
            return size

        for _ in range(n):
            kind, name_size = struct.unpack("<HH", r.read(take(4)))
            prefix = _XATTR_PREFIXES.get(kind & 0xFF)
            if prefix is None:
                raise InputError(f"{self.what}: a squashfs xattr of unknown kind {kind}")
            name = prefix + r.read(take(name_size)).decode(errors="surrogateescape")
            (value_size,) = struct.unpack("<I", r.read(take(4)))
            if kind & _XATTR_OOL:
                if value_size != 8:
                    raise InputError(f"{self.what}: a squashfs xattr reference is malformed")
                (vref,) = struct.unpack("<Q", r.read(8))
                vr = self._reader(kv_start, vref >> 16, vref & 0xFFFF)
                (real_size,) = struct.unpack("<I", vr.read(4))
                value = vr.read(take(real_size))
            else:
                value = r.read(take(value_size))
            out[name] = value
        return out

    # -- data ------------------------------------------------------------------------------------
    def check_data(self, inode: _Inode) -> None:
        """Decompress the file's blocks and its fragment as ``unsquashfs`` would."""
        offset = inode.blocks_start
        remaining = inode.size
        sizes = self._reader(self.sb.inode_table, *inode.block_list)
        left = inode.block_count
        while left:
            n = min(left, 2048)  # the list is read in pieces: a huge file costs no memory
            left -= n
            for word in struct.unpack(f"<{n}I", sizes.read(4 * n)):
                remaining = self._data_block(word, offset, remaining)
                offset += word & 0xFFFFFF
        if inode.fragment != NO_FRAGMENT:
            frag_size = self._fragment_size(inode.fragment)
            if inode.fragment_offset + remaining > frag_size:
                raise InputError(f"{self.what}: a squashfs fragment is shorter than its file")

    def _data_block(self, word: int, offset: int, remaining: int) -> int:
        """Check one data block; what is left of the file after it."""
        bs = self.sb.block_size
        want = min(bs, remaining)
        size = word & 0xFFFFFF
        if size:  # 0: a hole
            if size > bs:
                raise InputError(f"{self.what}: a squashfs data block of {size} bytes")
            raw = self._pread(size, offset)
            data = raw if word & (1 << 24) else self._decompress(raw, bs)
            if len(data) != want:
                raise InputError(f"{self.what}: a squashfs data block of the wrong size")
        return remaining - want

    def _fragment_size(self, index: int) -> int:
        """The uncompressed size of fragment block ``index`` (decompressed once)."""
        if index >= self.sb.fragment_count or self.sb.fragment_table == NO_TABLE:
            raise InputError(f"{self.what}: a squashfs file names a fragment that is not there")
        known = self._fragments.get(index)
        if known is not None:
            return known
        start, word, _unused = struct.unpack(
            "<QII", self._indexed(self.sb.fragment_table, index, 16)
        )
        size = word & 0xFFFFFF
        if not 0 < size <= self.sb.block_size:
            raise InputError(f"{self.what}: a squashfs fragment of {size} bytes")
        raw = self._pread(size, start)
        data = raw if word & (1 << 24) else self._decompress(raw, self.sb.block_size)
        self._fragments[index] = len(data)
        return len(data)

    # -- directories -----------------------------------------------------------------------------
    def listing(
        self, inode: _Inode, limit: int | None = None, bomb: str = ""
    ) -> list[tuple[bytes, int, int]]:
        """(name, inode reference, inode number) of each entry of a directory inode;
        ``Bomb(bomb)`` past ``limit`` entries."""
        if inode.dir_size < 3:
            raise InputError(f"{self.what}: a squashfs directory of the wrong size")
        remaining = inode.dir_size - 3
        r = self._reader(self.sb.directory_table, inode.dir_block, inode.dir_offset)
        out: list[tuple[bytes, int, int]] = []
        while remaining > 0:
            if remaining < 12:
                raise InputError(f"{self.what}: a squashfs directory is cut short")
            count, start, base = struct.unpack("<III", r.read(12))
            remaining -= 12
            if count >= 256:
                raise InputError(f"{self.what}: a squashfs directory header of {count + 1}")
            for _ in range(count + 1):
                if remaining < 8:
                    raise InputError(f"{self.what}: a squashfs directory is cut short")
                offset, delta, _kind, name_size = struct.unpack("<HhHH", r.read(8))
                name = r.read(name_size + 1)
                remaining -= 8 + name_size + 1
                if (
                    name_size + 1 > NAME_MAX
                    or name in (b".", b"..")
                    or b"/" in name
                    or (b"\0" in name)
                ):
                    raise InputError(
                        f"{self.what}: a squashfs directory holds the name {quote(name)}, "
                        "which no file system has"
                    )
                out.append((name, (start << 16) | offset, base + delta))
                if limit is not None and len(out) > limit:
                    raise Bomb(bomb)
        if remaining < 0:
            raise InputError(f"{self.what}: a squashfs directory overruns its size")
        return out


class _MetaReader:
    """Sequential reads through a metadata table from a (block, offset) position."""

    def __init__(self, image: SquashfsImage, table: int, block: int, offset: int) -> None:
        self._image, self._table, self.block, self.offset = image, table, block, offset

    def read(self, size: int) -> bytes:
        data, self.block, self.offset = self._image._meta(
            self._table, self.block, self.offset, size
        )
        return data


def _decompressor(kind: int, what: str) -> Callable[[bytes, int], bytes]:
    name = _COMPRESSIONS.get(kind)
    if name is None:
        raise InputError(f"{what}: squashfs compression {kind} is unknown")

    def bad() -> InputError:
        return InputError(f"{what}: a squashfs block does not decompress ({name})")

    if name == "gzip":

        def gzip(data: bytes, limit: int) -> bytes:
            d = zlib.decompressobj()
            try:
                out = d.decompress(data, limit)
            except zlib.error:
                raise bad() from None
            if d.unconsumed_tail or not d.eof:
                raise bad()
            return out

        return gzip
    if name in ("xz", "lzma"):
        fmt = lzma.FORMAT_XZ if name == "xz" else lzma.FORMAT_ALONE

        def xz(data: bytes, limit: int) -> bytes:
            d = lzma.LZMADecompressor(fmt)
            try:
                out = d.decompress(data, limit)
            except lzma.LZMAError:
                raise bad() from None
            if not d.needs_input and not d.eof:  # more output than the limit
                raise bad()
            return out

        return xz
    if name == "zstd":
        import io

        import zstandard

        def zstd(data: bytes, limit: int) -> bytes:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            try:
                out = reader.read(limit + 1)
            except zstandard.ZstdError:
                raise bad() from None
            if len(out) > limit:
                raise bad()
            return out

        return zstd
    raise InputError(
        f"{what}: a squashfs compressed with {name}; ocikit reads gzip, xz, lzma and zstd"
    )


def entries(
    image: SquashfsImage,
    budget: int | None = None,
    verify_data: bool = False,
) -> Iterator[TarEntry]:
    """The tar entries the image stands for, as ``overlay_entries`` lists the tree
    ``unsquashfs`` extracts: depth first, names sorted, whiteouts and opaque marks as tar
    names, a regular file met again (same inode, more than one link) as a hardlink. Raises
    ``Bomb`` once the entries stand for more than ``budget`` bytes (None: no limit)."""
    spent = 0
    bomb = f"{image.what} expands beyond {budget} bytes; reading stopped"
    seen_dirs: set[int] = set()
    first_path: dict[int, str] = {}  # inode number -> first path of a multiply linked file
    what = image.what

    def spend(name: str, size: int) -> None:
        nonlocal spent
        spent += tar_size(name, size)
        if budget is not None and spent > budget:
            raise Bomb(bomb)

    def listing(inode: _Inode) -> list[tuple[str, int, int]]:
        # each entry listed costs at least a header: no more than the budget left pays for
        limit = None if budget is None else (budget - spent) // 512
        return _sorted(image.listing(inode, limit, bomb))

    root = image.inode(image.sb.root_inode)
    if root.type != _DIR:
        raise InputError(f"{what}: the squashfs's root is not a directory")
    seen_dirs.add(root.number)
    # directories still to walk: (the directory's path, its entries left, in reverse order)
    stack: list[tuple[str, list[tuple[str, int, int]]]] = [("", listing(root))]
    while stack:
        rel, todo = stack[-1]
        if not todo:
            stack.pop()
            continue
        name, ref, number = todo.pop()
        full = f"{rel}/{name}" if rel else name
        inode = image.inode(ref)
        if inode.number != number:
            raise InputError(f"{what}: a squashfs directory entry names the wrong inode")
        entry: TarEntry | None
        if inode.type == _DIR:
            if inode.number in seen_dirs:
                raise InputError(f"{what}: the squashfs directory {quote(full)} appears twice")
            seen_dirs.add(inode.number)
            entry = TarEntry(full + "/", tarfile.DIRTYPE, 0, mode=inode.mode, **_owner(inode))
            spend(entry.name, 0)
            yield entry
            if inode.xattr != NO_XATTR and image.opaque(inode.xattr):
                entry = TarEntry(f"{full}/{OPAQUE}", tarfile.REGTYPE, 0, **_owner(inode))
                spend(entry.name, 0)
                yield entry
            stack.append((full, listing(inode)))
            continue
        size = 0
        if inode.type == _CHRDEV and inode.rdev == 0:  # overlayfs's whiteout
            wh = f"{rel}/{WHITEOUT}{name}" if rel else f"{WHITEOUT}{name}"
            entry = TarEntry(wh, tarfile.REGTYPE, 0, **_owner(inode))
        elif inode.type == _SYMLINK:
            target = os.fsdecode(inode.target)
            entry = TarEntry(full, tarfile.SYMTYPE, 0, target, inode.mode, **_owner(inode))
        elif inode.type == _FILE:
            link = first_path.get(inode.number) if inode.nlink > 1 else None
            if link is not None:
                entry = TarEntry(full, tarfile.LNKTYPE, 0, link, inode.mode, **_owner(inode))
            else:
                if inode.nlink > 1:
                    first_path[inode.number] = full
                size = inode.size
                entry = TarEntry(full, tarfile.REGTYPE, size, mode=inode.mode, **_owner(inode))
        elif inode.type == _SOCKET:
            continue  # not in a layer (overlay_entries leaves it out too)
        else:
            kind = {_CHRDEV: tarfile.CHRTYPE, _BLKDEV: tarfile.BLKTYPE}.get(
                inode.type, tarfile.FIFOTYPE
            )
            rdev = inode.rdev
            entry = TarEntry(
                full,
                kind,
                0,
                mode=inode.mode,
                devmajor=(rdev >> 8) & 0xFFF,
                devminor=(rdev & 0xFF) | ((rdev >> 12) & 0xFFF00),
                **_owner(inode),
            )
        spend(entry.name, size)
        if size and verify_data:
            image.check_data(inode)
        yield entry


def _owner(inode: _Inode) -> dict[str, Any]:
    return {"uid": inode.uid, "gid": inode.gid, "mtime": inode.mtime}


def _sorted(listing: list[tuple[bytes, int, int]]) -> list[tuple[str, int, int]]:
    """Names as ``os.listdir`` gives them, in reverse of ``sorted`` order (popped from the end)."""
    out = [(os.fsdecode(name), ref, number) for name, ref, number in listing]
    out.sort(key=lambda e: e[0], reverse=True)
    return out
