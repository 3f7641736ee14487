"""``docker://`` against a real ``docker-registry`` on 127.0.0.1: push, pull, skopeo's view of
what was pushed, a second push that sends no layer bytes, a copy to another repository that
mounts, a large blob in chunks, and Basic auth with htpasswd. Requests and uploaded bytes are
counted by a forwarding proxy in front of the registry."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.archives import SAMPLE, Archive
from support.cli import assert_one_line_error, ocikit, ok
from support.layouts import file, tar_bytes, write_layout
from support.registry import CountingProxy, Registry
from support.verify import read_layout

USERS = {"alice": "s3cret"}


@pytest.fixture
def proxy(registry: Registry) -> Iterator[CountingProxy]:
    with CountingProxy(registry.host) as p:
        yield p


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[Registry]:
    with Registry(users=USERS) as reg:
        yield reg


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def manifest_of(ref: str, *extra: str) -> bytes:
    return ok("inspect", "--raw", *extra, ref).stdout


@pytest.mark.docker
def test_push_pull_and_skopeo_agree(
    legacy_archive_rich: Archive, proxy: CountingProxy, registry: Registry, tmp_path: Path
) -> None:
    ref = f"docker://{proxy.host}/ocikit/rich:1"
    pushed = json.loads(
        ok("copy", "--json", f"docker-archive:{legacy_archive_rich.path}", ref).stdout
    )
    assert proxy.upload_bytes > 0
    # skopeo sees the same digests
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/ocikit/rich:1")
    )
    assert info["Digest"] == pushed["digest"]
    assert info["Layers"] == [d["digest"] for d in pushed["layers"]]
    raw = manifest_of(f"docker://{registry.host}/ocikit/rich:1")
    assert (
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/ocikit/rich:1")
        == raw
    )
    config = ok("inspect", "--config", f"docker://{registry.host}/ocikit/rich:1").stdout
    assert "sha256:" + hashlib.sha256(config).hexdigest() == legacy_archive_rich.image_id
    # skopeo copies it out; ocikit pulls it: the same manifest bytes
    skopeo(
        "copy",
        "--src-tls-verify=false",
        f"docker://{registry.host}/ocikit/rich:1",
        f"oci:{tmp_path}/sk:t",
    )
    ok("copy", "-q", f"docker://{registry.host}/ocikit/rich:1", f"oci:{tmp_path}/oc:t")
    assert read_layout(tmp_path / "oc", "t").manifest_bytes == raw
    by_digest = f"docker://{registry.host}/ocikit/rich@{pushed['digest']}"
    assert manifest_of(by_digest) == raw
    # push again: one HEAD per blob and the manifest, no layer bytes
    proxy.reset()
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", ref)
    blobs = len({d["digest"] for d in pushed["layers"]}) + 1  # distinct layers, config
    assert proxy.upload_bytes == 0
    assert proxy.count("HEAD", "/blobs/") == blobs
    assert proxy.count("POST") == 0 and proxy.count("PATCH") == 0
    assert proxy.count("PUT", "/manifests/") == 1
    # to another repository of the same registry: mounted, no layer bytes
    proxy.reset()
    ok("copy", "-q", ref, f"docker://{proxy.host}/other/rich:2")
    assert proxy.upload_bytes == 0
    assert proxy.count("POST", "mount=") == blobs
    assert proxy.count("GET", "/blobs/") <= 1, "only the config is read"
    assert manifest_of(f"docker://{registry.host}/other/rich:2") == raw


@pytest.mark.docker
def test_mount_from(legacy_archive_rich: Archive, proxy: CountingProxy) -> None:
    """``--mount-from`` names where the blobs already are."""
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"docker://{proxy.host}/src/a:1")
    proxy.reset()
    ok(
        "copy",
        "-q",
        "--mount-from",
        "src/a",
        f"docker-archive:{legacy_archive_rich.path}",
        f"docker://{proxy.host}/dst/b:1",
    )
    assert proxy.upload_bytes == 0
    assert proxy.count("POST", "mount=") > 0


def test_chunked_upload(proxy: CountingProxy, registry: Registry, tmp_path: Path) -> None:
    """A blob over the single-PUT size goes in one PATCH (the whole blob, as docker and
    skopeo send it: docker-registry takes it), and reads back whole."""
    data = os.urandom(40 << 20)
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("big.bin", data)])])
    ok("copy", "-q", f"oci:{layout}:t", f"docker://{proxy.host}/big/one:1")
    assert proxy.count("PATCH", "/blobs/uploads") == 1
    ok("copy", "-q", f"docker://{registry.host}/big/one:1", f"oci:{tmp_path}/back:t")
    assert (
        read_layout(tmp_path / "back", "t").manifest_bytes
        == read_layout(layout, "t").manifest_bytes
    )


def test_basic_auth(auth_registry: Registry, tmp_path: Path) -> None:
    ref = f"docker://{auth_registry.host}/auth/hello:1"
    src = f"docker-archive:{SAMPLE}"
    proc = ocikit("copy", src, ref)
    assert_one_line_error(proc, contains="authentication failed")
    proc = ocikit("copy", "--dest-creds", "alice:wrong", src, ref)
    assert_one_line_error(proc, contains="authentication failed")
    ok("copy", "-q", "--dest-creds", "alice:s3cret", src, ref)
    proc = ocikit("inspect", ref)
    assert_one_line_error(proc, contains="authentication failed")
    # an auth file, as docker login writes it
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    authfile.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    ok("inspect", "--authfile", str(authfile), ref)
    ok(
        "copy",
        "-q",
        f"{ref}",
        f"oci:{tmp_path}/pulled:t",
        env={"REGISTRY_AUTH_FILE": str(authfile)},
    )
    proc = ocikit("copy", "--dest-creds", "no-colon", src, ref)
    assert_one_line_error(proc, contains="USER:PASSWORD")


def test_errors(registry: Registry) -> None:
    proc = ocikit("inspect", f"docker://{registry.host}/absent/repo:1")
    assert_one_line_error(proc, contains="not found")
    proc = ocikit("inspect", "docker://127.0.0.1:1/x/y:1")
    assert_one_line_error(proc)
    proc = ocikit("inspect", "docker://Bad/Name")
    assert_one_line_error(proc, contains="invalid reference")


def test_bearer_auth(registry: Registry, tmp_path: Path) -> None:
    """The token flow: challenge, token for the scopes with Basic credentials, cached."""
    with CountingProxy(registry.host, bearer=USERS) as proxy:
        ref = f"docker://{proxy.host}/bearer/hello:1"
        src = f"docker-archive:{SAMPLE}"
        proc = ocikit("copy", src, ref)
        assert_one_line_error(proc, contains="refused")
        proc = ocikit("copy", "--dest-creds", "alice:wrong", src, ref)
        assert_one_line_error(proc, contains="refused")
        proxy.token_requests.clear()
        ok("copy", "-q", "--dest-creds", "alice:s3cret", src, ref)
        assert proxy.token_requests == [("alice", ["repository:bearer/hello:pull,push"])]
        ok("copy", "-q", "--src-creds", "alice:s3cret", ref, f"oci:{tmp_path}/back:t")
        assert proxy.token_requests[-1] == ("alice", ["repository:bearer/hello:pull"])


@pytest.mark.parametrize(
    ("faults", "match", "size"),
    [
        (["reset", "500", "429", None, "reset", "500"], "/v2/", 1 << 20),
        ([None, "cut", None, "reset", "cut"], "/blobs/uploads/", 40 << 20),
        (["cut", "cut"], "/blobs/uploads/", 1 << 20),
        ([None, *["500"] * 6], "/blobs/uploads/", 40 << 20),  # POST, then the one PATCH
    ],
    ids=["errors", "chunks-cut", "put-cut", "chunk-resumed"],
)
def test_push_survives_faults(
    registry: Registry, tmp_path: Path, faults: list[str | None], match: str, size: int
) -> None:
    """Connection resets, 500s, 429s and bodies cut short between ocikit and the registry:
    the push completes (retries, resumed chunks, a fresh upload session) and reads back."""
    layout = tmp_path / "layout"
    write_layout(
        layout,
        [tar_bytes([file("a.bin", os.urandom(size))]), tar_bytes([file("b.txt", "small")])],
    )
    with CountingProxy(registry.host) as proxy:
        proxy.inject(faults, match)
        ref = f"docker://{proxy.host}/faults/{len(faults)}-{size}:1"
        ok("copy", "-q", "--jobs", "1", f"oci:{layout}:t", ref)
        assert proxy.faults_done, "the faults happened"
        if faults.count("500") == 6:  # every retry of one chunk failed: resumed, not restarted
            assert proxy.count("GET", "/blobs/uploads/") == 1
            assert proxy.count("POST", "/blobs/uploads/") == 3, "one session per blob"
    back = tmp_path / "back"
    ok("copy", "-q", ref.replace(proxy.host, registry.host), f"oci:{back}:t")
    assert read_layout(back, "t").manifest_bytes == read_layout(layout, "t").manifest_bytes


def test_failed_push_leaves_no_tag(registry: Registry, tmp_path: Path) -> None:
    """A source that breaks half-way: exit 2, one line, and the tag does not exist."""
    data = SAMPLE.read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2])
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    ref = f"docker://{registry.host}/failed/push:1"
    proc = ocikit("copy", f"docker-archive:{truncated}", ref, env={"TMPDIR": str(tmpdir)})
    assert_one_line_error(proc)
    assert_one_line_error(ocikit("inspect", ref), contains="not found")
    assert list(tmpdir.iterdir()) == [], "no staged blob left behind"


@pytest.mark.parametrize(
    ("faults", "expect"),
    [
        (["truncate", "truncate", None], "ok"),
        (["reset", "500", "truncate", "429", None], "ok"),
        (["truncate"] * 8, "the download broke"),
    ],
    ids=["truncated-twice", "mixed", "never-whole"],
)
def test_pull_resumes_broken_downloads(
    registry: Registry, tmp_path: Path, faults: list[str], expect: str
) -> None:
    """A blob download whose connection breaks part-way goes on from the byte it got to
    (a ``Range`` request), a bounded number of times; the pulled image is identical."""
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("a.bin", os.urandom(8 << 20))])])
    ref = f"registry/pull-faults-{len(faults)}-{faults[0]}:1"
    ok("copy", "-q", f"oci:{layout}:t", f"docker://{registry.host}/{ref}")
    big = read_layout(layout, "t").manifest["layers"][0]["digest"]
    with CountingProxy(registry.host) as proxy:
        proxy.inject(faults, f"/blobs/{big}")
        back = tmp_path / "back"
        proc = ocikit("copy", "-q", f"docker://{proxy.host}/{ref}", f"oci:{back}:t")
        if expect != "ok":
            assert_one_line_error(proc, contains=expect)
            assert not (back / "index.json").exists()
            return
        assert proc.returncode == 0, proc.stderr
        ranged = [p for m, p in proxy.requests if m == "GET" and big in p]
        assert len(ranged) == len(faults)
    assert read_layout(back, "t").manifest_bytes == read_layout(layout, "t").manifest_bytes


def test_push_from_a_layout_stages_nothing(registry: Registry, tmp_path: Path) -> None:
    """Blobs of an OCI layout go up from their own files (verified first), the config from
    memory: with no usable temporary directory the push still works."""
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("a.bin", os.urandom(40 << 20))]), tar_bytes([])])
    ref = f"docker://{registry.host}/nostage/one:1"
    env = {"TMPDIR": str(tmp_path / "absent")}
    ok("copy", "-q", f"oci:{layout}:t", ref, env=env)
    ok("copy", "-q", ref, f"oci:{tmp_path}/back:t")
    assert (
        read_layout(tmp_path / "back", "t").manifest_bytes
        == read_layout(layout, "t").manifest_bytes
    )
    # a layer that does not match its digest is refused before anything is tagged
    bad = read_layout(layout, "t").manifest["layers"][1]["digest"]
    path = layout / "blobs" / "sha256" / bad.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = ocikit("copy", f"oci:{layout}:t", f"docker://{registry.host}/nostage/bad:1", env=env)
    assert_one_line_error(proc, contains=bad)
    assert_one_line_error(
        ocikit("inspect", f"docker://{registry.host}/nostage/bad:1"), contains="not found"
    )


def test_redirects_never_carry_credentials(registry: Registry, tmp_path: Path) -> None:
    """A registry behind Bearer auth that sends blob downloads to storage on another host
    (``localhost`` against ``127.0.0.1``): the storage gets no Authorization header, the pull
    completes."""
    layout = tmp_path / "layout"
    write_layout(layout, [tar_bytes([file("a.bin", os.urandom(1 << 20))])])
    ok("copy", "-q", f"oci:{layout}:t", f"docker://{registry.host}/redirect/one:1")
    with CountingProxy(registry.host) as storage:
        port = storage.host.rsplit(":", 1)[1]
        with CountingProxy(
            registry.host, bearer=USERS, redirect_blobs=f"localhost:{port}"
        ) as front:
            ok(
                "copy",
                "-q",
                "--src-creds",
                "alice:s3cret",
                f"docker://{front.host}/redirect/one:1",
                f"oci:{tmp_path}/back:t",
            )
            assert any(a and a.startswith("Bearer ") for a in front.authorizations)
        assert storage.count("GET", "/blobs/sha256:") == 2  # the layer and the config
        assert storage.authorizations == [None] * len(storage.requests)
    assert (
        read_layout(tmp_path / "back", "t").manifest_bytes
        == read_layout(layout, "t").manifest_bytes
    )
