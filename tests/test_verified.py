"""The user's record of verified layers (``ocikit.layer.verified``): a copy records that blob
``X`` inflates to diff_id ``D`` once it has verified it; a push of ``X`` whose config says
``D`` then checks the blob's digest only. A config naming another diff_id, a blob whose
bytes changed, and a record anyone else could have written are verified in full (and fail)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ocikit
from ocikit.errors import VerificationError
from ocikit.layer import transcode as transcode_module
from ocikit.layer import verified
from ocikit.transports import RegistryOptions
from support.layouts import file, sha256, tar_bytes, write_layout
from support.registry import Registry

PLAIN = RegistryOptions(tls_verify=False)
LAYER = tar_bytes([file("etc/hello", b"hello\n" * 1000), file("etc/x", b"x" * 5000)])
TRUE_DIFF_ID = sha256(LAYER)
OTHER_DIFF_ID = "sha256:" + "ab" * 32


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own ``$XDG_CACHE_HOME``; the record is ``ocikit/verified/layers`` there."""
    path = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


def _layout(path: Path, diff_id: str | None = None, compression: str = "gzip") -> tuple[Path, str]:
    """A layout of one layer (LAYER, gzip by default), its config saying ``diff_id``
    (default: the true one); and the layer blob's digest."""

    def edit(config: dict) -> None:
        if diff_id is not None:
            config["rootfs"]["diff_ids"] = [diff_id]

    write_layout(path, [LAYER], edit_config=edit, compression=compression)  # type: ignore[arg-type]
    manifest = _manifest(path)
    return path, manifest["layers"][0]["digest"]


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_text())


def _push(layout: Path, registry: Registry, repo: str) -> ocikit.CopyResult:
    return ocikit.copy(f"oci:{layout}:t", f"docker://{registry.host}/{repo}:1", dest_registry=PLAIN)


def _no_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer transcoded (inflated) from here on fails the test."""

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("the layer was inflated again")

    monkeypatch.setattr(transcode_module, "transcode", refuse)


def _flip_a_byte(layout: Path, blob: str) -> None:
    """The blob's bytes changed in place (its size kept): it no longer hashes to ``blob``."""
    path = layout / "blobs" / "sha256" / blob.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _forge(cache: Path, blob: str, diff_id: str) -> Path:
    """A record (private, as ocikit writes it) saying ``blob`` inflates to ``diff_id``."""
    records = cache / "ocikit" / "verified"
    records.mkdir(parents=True, mode=0o700, exist_ok=True)
    path = records / "layers"
    path.write_text(f"{blob} {diff_id}\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_push_records_what_it_verified_and_the_next_inflates_nothing(
    tmp_path: Path,
    cache: Path,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    compression: str,
) -> None:
    layout, blob = _layout(tmp_path / "oci", compression=compression)
    _push(layout, registry, f"verified/first-{compression}")  # verified in full, recorded
    assert verified.load() == {blob: TRUE_DIFF_ID}
    records = cache / "ocikit" / "verified"
    assert records.stat().st_mode & 0o777 == 0o700
    assert (records / "layers").stat().st_mode & 0o777 == 0o600
    assert not [p for p in os.listdir(records) if p.startswith(".ocikit-tmp-")]
    _no_inflating(monkeypatch)
    result = _push(layout, registry, f"verified/second-{compression}")  # every blob sent
    assert [d.digest for d in result.layers] == [blob]


def test_a_pull_records_what_it_verified(
    tmp_path: Path, cache: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, blob = _layout(tmp_path / "oci")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    _push(layout, registry, "verified/pulled")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert verified.load() == {}
    ocikit.copy(
        f"docker://{registry.host}/verified/pulled:1",
        f"oci:{tmp_path}/pulled:t",
        src_registry=PLAIN,
    )
    assert verified.load() == {blob: TRUE_DIFF_ID}


def test_a_pull_of_layers_verified_before_inflates_nothing(
    tmp_path: Path, cache: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull (any copy that writes a blob as it is) of a layer the record knows, whose
    config says the recorded diff_id: the blob's digest is checked as it streams to the
    destination, and it is not inflated again."""
    layout, blob = _layout(tmp_path / "oci")
    _push(layout, registry, "verified/repulled")  # verified in full, recorded
    assert verified.load() == {blob: TRUE_DIFF_ID}
    _no_inflating(monkeypatch)
    for n in (1, 2):
        result = ocikit.copy(
            f"docker://{registry.host}/verified/repulled:1",
            f"oci:{tmp_path}/pulled-{n}:t",
            src_registry=PLAIN,
        )
        assert [d.digest for d in result.layers] == [blob]
        got = tmp_path / f"pulled-{n}" / "blobs" / "sha256" / blob.split(":")[1]
        assert got.read_bytes() == (layout / "blobs" / "sha256" / blob.split(":")[1]).read_bytes()
    ocikit.copy(f"oci:{layout}:t", f"oci-archive:{tmp_path}/copy.tar:t")  # a local copy too


def test_a_copied_layer_the_record_knows_is_still_checked(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the record spares is the inflate, never a check: a config naming another diff_id
    than the recorded one is verified in full (and fails); a blob whose bytes changed fails
    on its digest; either way the destination names nothing."""
    layout, blob = _layout(tmp_path / "bad", OTHER_DIFF_ID)
    _forge(cache, blob, TRUE_DIFF_ID)
    with pytest.raises(VerificationError, match="diff_id"):
        ocikit.copy(f"oci:{layout}:t", f"oci:{tmp_path}/out1:t")
    index = tmp_path / "out1" / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    layout, blob = _layout(tmp_path / "good")
    _flip_a_byte(layout, blob)
    _no_inflating(monkeypatch)
    with pytest.raises(VerificationError, match="digest"):
        ocikit.copy(f"oci:{layout}:t", f"oci:{tmp_path}/out2:t")
    index = tmp_path / "out2" / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []


def test_a_record_relied_on_before_it_fades_is_written_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record keeps the newest ``MAX_RECORDS`` by when they were written: a layer used
    every day but verified long ago would be dropped. A copy that relies on a record among
    the first the bound would drop writes it again (it moves last); one that relies on a
    newer record writes nothing."""
    monkeypatch.setattr(verified, "MAX_RECORDS", 4)
    layout, blob = _layout(tmp_path / "oci")
    others = [(f"sha256:{i:064x}", f"sha256:{i + 100:064x}") for i in range(3)]
    path = _forge(cache, blob, TRUE_DIFF_ID)  # the oldest of four
    path.write_text(path.read_text() + "".join(f"{b} {d}\n" for b, d in others))
    _no_inflating(monkeypatch)
    ocikit.copy(f"oci:{layout}:t", f"oci:{tmp_path}/out1:t")
    assert list(verified.load()) == [*(b for b, _ in others), blob]  # moved last
    verified.remember([others[0]])  # type: ignore[list-item]  # now the blob is second newest
    inode = path.stat().st_ino
    ocikit.copy(f"oci:{layout}:t", f"oci:{tmp_path}/out2:t")
    assert path.stat().st_ino == inode  # not written again
    assert list(verified.load())[-2:] == [blob, others[0][0]]


def test_a_layer_compressed_by_a_copy_is_recorded_and_pushed_without_inflating(
    tmp_path: Path, cache: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer ocikit compressed (an uncompressed source, a docker archive's): its new blob
    is recorded with the diff_id of the content it compressed; the uncompressed source is
    its own diff_id (nothing to record)."""
    write_layout(tmp_path / "plain", [LAYER], compression="none")
    result = ocikit.copy(f"oci:{tmp_path}/plain:t", f"oci:{tmp_path}/gz:t", compression="gzip")
    [layer] = result.layers
    assert layer.media_type.endswith("gzip")
    assert verified.load() == {layer.digest: TRUE_DIFF_ID}
    _no_inflating(monkeypatch)
    _push(tmp_path / "gz", registry, "verified/compressed")


def test_a_check_records_what_it_verified(tmp_path: Path, cache: Path) -> None:
    """``check`` reads every layer whole: what a blob inflates to is recorded, whatever the
    config says (the push compares it with its own config)."""
    layout, blob = _layout(tmp_path / "oci", OTHER_DIFF_ID)
    report = ocikit.check(f"oci:{layout}:t")
    assert report.errors  # the diff_id the config says is not the content's
    assert verified.load() == {blob: TRUE_DIFF_ID}


@pytest.mark.parametrize("operation", ["check", "validate"])
def test_an_image_s_layers_are_recorded_at_once(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """Every layer an operation read whole goes to the record in one rewrite when it ends:
    one a layer made a check of thousands of small layers quadratic (each rewrite reads and
    writes the whole record)."""
    layers = [tar_bytes([file(f"l{i}/f", str(i).encode())]) for i in range(5)]
    write_layout(tmp_path / "oci", layers)
    writes: list[int] = []
    real = verified.remember
    monkeypatch.setattr(
        verified, "remember", lambda pairs: writes.append(len(pairs)) or real(pairs)
    )
    if operation == "check":
        assert not ocikit.check(f"oci:{tmp_path / 'oci'}:t").errors
    else:
        assert ocikit.validate_image(f"oci:{tmp_path / 'oci'}:t") == []
    assert writes == [5]
    assert len(verified.load()) == 5


def test_a_config_naming_another_diff_id_fails_whatever_the_record_says(
    tmp_path: Path, cache: Path, registry: Registry
) -> None:
    layout, blob = _layout(tmp_path / "good")
    _push(layout, registry, "verified/good")
    assert verified.load() == {blob: TRUE_DIFF_ID}
    bad, same_blob = _layout(tmp_path / "bad", OTHER_DIFF_ID)
    assert same_blob == blob
    with pytest.raises(VerificationError, match="diff_id"):
        _push(bad, registry, "verified/bad")


def test_a_changed_blob_fails_whatever_the_record_says(
    tmp_path: Path, cache: Path, registry: Registry
) -> None:
    layout, blob = _layout(tmp_path / "oci")
    _push(layout, registry, "verified/orig")
    _flip_a_byte(layout, blob)
    with pytest.raises(VerificationError, match="digest"):
        _push(layout, registry, "verified/changed")


@pytest.mark.parametrize("fault", ["file-mode", "dir-mode", "file-owner", "dir-owner", "symlink"])
def test_a_record_others_could_write_is_ignored(
    tmp_path: Path, cache: Path, registry: Registry, fault: str
) -> None:
    """A forged record (blob X inflates to D', the config says D') where someone else could
    have written it: the layer is verified in full, and fails. The same record where only
    the user writes is trusted (what makes the check matter)."""
    layout, blob = _layout(tmp_path / "oci", OTHER_DIFF_ID)
    path = _forge(cache, blob, OTHER_DIFF_ID)
    if fault == "file-mode":
        path.chmod(0o644)
    elif fault == "dir-mode":
        path.parent.chmod(0o755)
    elif fault == "file-owner":
        os.chown(path, 4321, 4321)
    elif fault == "dir-owner":
        os.chown(path.parent, 4321, 4321)
    else:
        target = tmp_path / "records"
        path.rename(target)
        path.symlink_to(target)
    if os.geteuid() != 0 and fault.endswith("owner"):
        pytest.skip("only root gives a file away")
    assert verified.load() == {}
    with pytest.raises(VerificationError, match="diff_id"):
        _push(layout, registry, f"verified/forged-{fault}")


def test_a_private_record_is_trusted(tmp_path: Path, cache: Path, registry: Registry) -> None:
    """Why the record must be the user's alone: a forged one there is believed."""
    layout, blob = _layout(tmp_path / "oci", OTHER_DIFF_ID)
    _forge(cache, blob, OTHER_DIFF_ID)
    assert verified.load() == {blob: OTHER_DIFF_ID}
    _push(layout, registry, "verified/believed")


def test_the_record_is_bounded_and_skips_what_it_cannot_read(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verified, "MAX_RECORDS", 3)
    pairs = [(f"sha256:{i:064x}", f"sha256:{i + 100:064x}") for i in range(5)]
    for blob, diff_id in pairs:
        verified.remember([(blob, diff_id)])  # type: ignore[list-item]
    assert verified.load() == dict(pairs[2:])  # the newest kept
    path = cache / "ocikit" / "verified" / "layers"
    path.write_text(path.read_text() + "garbage\nsha256:12 sha256:34\n" + "x" * 10_000 + "\n")
    assert verified.load() == dict(pairs[2:])
    verified.remember([pairs[2]])  # type: ignore[list-item]  # known already: moves last
    assert list(verified.load()) == [pairs[3][0], pairs[4][0], pairs[2][0]]


def test_another_users_cache_is_left_alone(cache: Path) -> None:
    """Run as root with another user's ``$HOME`` (sudo keeping it): nothing is made in that
    user's cache, where it would be root's and of no use to its owner."""
    if os.geteuid() != 0:
        pytest.skip("only root gives a directory away")
    (cache / "ocikit").mkdir(parents=True)
    os.chown(cache / "ocikit", 4321, 4321)
    verified.remember([(f"sha256:{1:064x}", f"sha256:{2:064x}")])  # type: ignore[list-item]
    assert os.listdir(cache / "ocikit") == []


def test_a_cache_that_cannot_be_written_costs_only_the_saving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    verified.remember([(f"sha256:{1:064x}", f"sha256:{2:064x}")])  # type: ignore[list-item]
    assert verified.load() == {}
