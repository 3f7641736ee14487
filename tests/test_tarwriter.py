"""Names that are not UTF-8 (a run step's ``printf 'a\\377b'``, a context file from an old
system) are bytes in a layer, written as they are and read back the same by ocikit's reader
and by Go's archive/tar (docker's): never an internal error."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from ocikit.build.rootfs import write_upper_tar
from ocikit.layer.tarstream import TarStream
from ocikit.layer.tarwriter import TarOutput, tar_header
from support import gotar

pytestmark = pytest.mark.usefixtures("file_backend")  # the native core and the Python path

NAMES = [b"a\xffb", b"caf\xe9", b"d\xff/" + b"x" * 150 + b"\xfe", "ok-\u00e9".encode()]


def _tree(root: Path) -> None:
    for raw in NAMES:
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(raw)
    os.symlink(b"caf\xe9", os.path.join(os.fsencode(root), b"link\xff"))


def _read(data: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    stream = TarStream(io.BytesIO(data))
    found = {}
    for entry in stream:
        name = os.fsencode(entry.name)
        found[name] = (entry.type, os.fsencode(entry.linkname))
    return found


def test_names_that_are_not_utf8_are_written_as_bytes(tmp_path: Path, oracle: gotar.GoTar) -> None:
    _tree(tmp_path / "upper")
    out = io.BytesIO()
    write_upper_tar(tmp_path / "upper", out, set(), 0)
    found = _read(out.getvalue())
    for raw in NAMES:
        assert found[raw][0] == b"0", raw
    assert found[b"link\xff"] == (b"2", b"caf\xe9")
    go = oracle.read(out.getvalue())  # docker's reader agrees
    assert go == gotar.ocikit_read(out.getvalue())
    assert {bytes.fromhex(e["name"]) for e in go["entries"]} >= set(NAMES)


def test_a_header_takes_any_name() -> None:
    name = os.fsdecode(b"x\xff" * 80)
    block = tar_header(name, b"0", 0, 0o644, 0, 0, 0, os.fsdecode(b"t\xfe"))
    assert _read(block + bytes(1024)) == {b"x\xff" * 80: (b"0", b"t\xfe")}


def test_small_writes_the_bytes_data_writes() -> None:
    """A file's content from memory (``small``) and streamed (``data``): the same tar bytes,
    across the 1 MiB flushes too."""
    contents = [b"", b"x", bytes(range(256)) * 3, b"y" * 511, b"z" * 512, b"w" * (700 << 10)] * 3
    outs = []
    for use_small in (False, True):
        out = io.BytesIO()
        tar = TarOutput(out)
        for i, content in enumerate(contents):
            tar.header(tar_header(f"f{i}", b"0", len(content), 0o644, 0, 0, 0))
            if use_small:
                tar.small(content)
            else:
                tar.data(io.BytesIO(content), len(content), f"f{i}")
        tar.finish()
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("numbers", [(0o10000000, 0), (0, 0o10000000), (-1, 0)])
def test_a_device_number_past_its_field_is_refused(
    file_backend: str, numbers: tuple[int, int]
) -> None:
    """A header is always whole blocks: a device number that no ustar field (and no PAX
    record) holds is refused, where it made a 514-byte header that broke the tar after it."""
    from ocikit.errors import InputError

    with pytest.raises(InputError, match="does not fit a tar header"):
        tar_header("dev/x", b"3", 0, 0o600, 0, 0, 0, devmajor=numbers[0], devminor=numbers[1])
    assert len(tar_header("dev/x", b"3", 0, 0o600, 0, 0, 0, devmajor=0o7777777)) == 512
