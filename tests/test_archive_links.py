"""Links between members of an outer archive resolve inside it, or are refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ocikit.errors import InputError, NotFoundError, UnsafeInputError
from ocikit.transports.archive import TarArchive


def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if isinstance(e, tuple):
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tar.addfile(info, io.BytesIO(e[1]))
            else:
                tar.addfile(e)
    return raw.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.fixture(params=["file", "pipe"])
def open_archive(request, tmp_path):
    def opener(data: bytes) -> TarArchive:
        path = tmp_path / "a.tar"
        path.write_bytes(data)
        if request.param == "file":
            return TarArchive.open(str(path))
        return TarArchive.from_stream(io.BufferedReader(io.BytesIO(data)), "pipe")  # type: ignore[arg-type]

    return opener


def test_symlink_before_and_after_target(open_archive) -> None:
    data = _tar(
        [
            _link("b/layer.tar", "../c/layer.tar"),  # before its target, as docker may write
            ("c/layer.tar", b"layer"),
            _link("d/layer.tar", "../c/layer.tar"),
            _link("e/layer.tar", "/c/layer.tar".lstrip("/"), tarfile.LNKTYPE),
        ]
    )
    with open_archive(data) as a:
        for name in ("b/layer.tar", "./d/layer.tar", "e/layer.tar"):
            with a.open_member(name) as f:
                assert f.read() == b"layer"


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ([_link("a/layer.tar", "../../etc/passwd")], UnsafeInputError),
        ([_link("a/layer.tar", "/etc/passwd")], UnsafeInputError),
        (
            [_link("a/layer.tar", "../b/layer.tar"), _link("b/layer.tar", "../a/layer.tar")],
            UnsafeInputError,
        ),
        ([_link("a/layer.tar", "layer.tar")], UnsafeInputError),
        ([_link("a/layer.tar", "../missing/layer.tar")], NotFoundError),
    ],
)
def test_hostile_links(open_archive, entries, error) -> None:
    with open_archive(_tar([("x", b"x"), *entries])) as a, pytest.raises(error):
        a.open_member("a/layer.tar")


def test_member_escaping_by_name_is_refused(open_archive) -> None:
    """``../evil`` is never reachable: docker's extraction would put it at ``evil``, inside,
    where it could stand for another member; ocikit refuses the archive instead."""
    with pytest.raises(UnsafeInputError, match="leads outside"):
        open_archive(_tar([("../evil", b"x"), ("ok", b"y")]))


def test_members_are_what_extraction_leaves(open_archive) -> None:
    """An absolute name is taken from the top; a later member replaces an earlier one, a
    file replacing a directory takes what was in it; a hardlink keeps the content its target
    had when it was made, even if the target is replaced later (docker extracts it so)."""
    data = _tar(
        [
            ("/abs.json", b"abs"),
            ("d/inner", b"inner"),
            ("d", b"now a file"),
            ("t", b"first"),
            _link("h", "t", tarfile.LNKTYPE),
            ("t", b"second"),
        ]
    )
    with open_archive(data) as a:
        assert a.read_small("abs.json") == b"abs"
        assert a.read_small("d") == b"now a file"
        assert not a.exists("d/inner")
        assert a.read_small("t") == b"second"
        assert a.read_small("h") == b"first"


@pytest.mark.parametrize(
    "entries",
    [
        [_link("s", "real"), ("real/x", b"1"), ("s/manifest.json", b"through a link")],
        [("f", b"file"), ("f/manifest.json", b"below a file")],
    ],
    ids=["through-symlink", "below-file"],
)
def test_members_written_through_links_or_files_are_refused(open_archive, entries) -> None:
    with pytest.raises(UnsafeInputError, match="written through"):
        open_archive(_tar(entries))


def test_symlinked_directories_are_followed_inside_the_archive(open_archive) -> None:
    data = _tar([("real/layer.tar", b"L"), _link("alias", "real"), _link("l", "alias/layer.tar")])
    with open_archive(data) as a:
        assert a.read_small("l") == b"L"
        assert a.read_small("alias/layer.tar") == b"L"


def test_spool_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    data = _tar([("a", b"x" * 100), ("b", b"y" * 10)])
    with TarArchive.from_stream(io.BufferedReader(io.BytesIO(data)), "pipe") as a:  # type: ignore[arg-type]
        assert os.listdir(tmp_path) == []  # anonymous: already unlinked
        with a.open_member("b") as f:
            assert f.read() == b"y" * 10


def test_too_many_members_is_refused(open_archive, monkeypatch) -> None:
    import ocikit.transports.archive as archive

    monkeypatch.setattr(archive, "MAX_MEMBERS", 50)
    with pytest.raises(InputError, match="more than 50 members"):
        open_archive(_tar([(f"f{i}", b"") for i in range(60)]))
