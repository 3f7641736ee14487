"""Output a person reads: ``inspect``'s summary on a terminal (JSON when piped or with
``--json``), one meaning of ``name`` for every transport, the image ID after a copy to docker,
and the warning (with the ``--repair`` hint) before docker refuses an image ``check`` would."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

import ocikit as lib
from support.archives import SAMPLE, describe
from support.cli import OCIKIT, ocikit, ok
from support.dockerd import DockerEngine
from support.layouts import directory, file, symlink, tar_bytes, write_layout
from support.registry import Registry


def on_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``ocikit ARGS`` with standard output on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*OCIKIT, *args],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {}), "COLUMNS": "100"},
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=60), out.decode().replace("\r\n", "\n")


# ---------------------------------------------------------------------------- inspect


def test_inspect_summary_on_a_terminal_json_otherwise(tmp_path: Path) -> None:
    ref = f"docker-archive:{SAMPLE}"
    [image_id] = describe(SAMPLE)[1]
    info = json.loads(ok("inspect", ref).stdout)  # piped: JSON, as before
    assert json.loads(ok("inspect", "--json", ref).stdout) == info
    code, text = on_terminal("inspect", ref)
    assert code == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "hello:latest"]
    assert any(line.split()[:2] == ["digest", info["digest"]] for line in lines)
    assert any(line.split()[:3] == ["image", "ID", image_id[7:19]] for line in lines)
    assert any(
        line.split()[:2] == ["platform", f"{info['os']}/{info['architecture']}"] for line in lines
    )
    assert any(line.startswith("created") and info["created"][:10] in line for line in lines)
    size = sum(layer["size"] for layer in info["layers"])
    # sizes in human units, the total and each layer's
    assert re.search(r"\b\d+(\.\d)? (B|kB|MB|GB)\b", text), text
    assert f"{size:,}" not in text and f" {size} " not in text
    layer_lines = [line for line in lines if re.match(r"\s+\d+\s+sha256:[0-9a-f]{12}\b", line)]
    assert len(layer_lines) == len(info["layers"]), text
    for key in ("cmd", "env"):
        assert any(line.startswith(key) for line in lines), (key, text)
    for env in info["env"]:
        assert env in text
    # --json on a terminal is JSON
    code, text = on_terminal("inspect", "--json", ref)
    assert code == 0 and json.loads(text) == info


def test_inspect_name_means_one_thing(tmp_path: Path, registry: Registry) -> None:
    """``name``: the image's name as docker would tag it (what a copy to docker names it), or
    null; never an OCI ref name, a bare tag or a digest."""
    layout = tmp_path / "l"
    ok("copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:t")
    ok("copy", "-q", f"oci:{layout}:t", f"oci-archive:{tmp_path}/a.tar:t")
    assert lib.inspect(f"docker-archive:{SAMPLE}")["name"] == "hello:latest"
    assert lib.inspect(f"docker-archive:{SAMPLE}:hello")["name"] == "hello:latest"
    assert lib.inspect(f"oci:{layout}:t")["name"] is None
    assert lib.inspect(f"oci-archive:{tmp_path}/a.tar:t")["name"] is None
    remote = f"docker://{registry.host}/ocikit/name:7"
    result = ok("copy", "-q", "--json", "--dest-tls-verify=false", f"oci:{layout}:t", remote)
    digest = json.loads(result.stdout)["digest"]
    by_tag = json.loads(ok("inspect", "--tls-verify=false", remote).stdout)
    assert by_tag["name"] == f"{registry.host}/ocikit/name:7"
    by_digest = f"docker://{registry.host}/ocikit/name@{digest}"
    assert json.loads(ok("inspect", "--tls-verify=false", by_digest).stdout)["name"] is None


# ---------------------------------------------------------------------------- copy to docker


def test_copy_prints_the_image_id(tmp_path: Path) -> None:
    [image_id] = describe(SAMPLE)[1]
    out = tmp_path / "out.tar"
    proc = ok("copy", f"docker-archive:{SAMPLE}", f"docker-archive:{out}:app:1")
    said = proc.stderr.decode()
    assert f"image ID {image_id[7:19]}" in said, said
    result = json.loads(
        ok("copy", "-q", "--json", f"docker-archive:{SAMPLE}", f"docker-archive:{out}:app:1").stdout
    )
    assert result["image_id"] == image_id
    assert lib.copy(f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l:t").image_id == image_id


def _broken_layout(path: Path) -> None:
    """Duplicate paths in layer 1 (docker load refuses it) and a directory over a symlinked
    ``bin`` in layer 2, each several times: one line per class, not per entry."""
    base = tar_bytes([directory("usr"), directory("usr/bin"), symlink("bin", "usr/bin")])
    dups = tar_bytes(
        [file(f"etc/f{i}", "a") for i in range(3)] + [file(f"./etc/f{i}", "b") for i in range(3)]
    )
    over = tar_bytes([directory("bin"), file("bin/tool", "x")])
    write_layout(path, [base, dups, over])


def _warnings(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("warning:")]


def test_copy_to_docker_archive_warns_with_the_repair_hint(tmp_path: Path) -> None:
    layout = tmp_path / "bad"
    _broken_layout(layout)
    out = tmp_path / "out.tar"
    proc = ocikit("copy", "-q", f"oci:{layout}:t", f"docker-archive:{out}:bad:1")
    assert proc.returncode == 0, proc.stderr
    warnings = _warnings(proc.stderr)
    assert len(warnings) == 2, proc.stderr
    dup = next(w for w in warnings if "duplicate-path" in w)
    assert "3 paths" in dup and "layer 1" in dup and "--repair" in dup and "docker load" in dup
    over = next(w for w in warnings if "replaces-symlinked-dir" in w)
    assert "layer 2" in over and "--repair" in over
    # as JSON too, and from the Python API
    proc = ocikit("copy", "-q", "--json", f"oci:{layout}:t", f"docker-archive:{out}:bad:1")
    assert len(json.loads(proc.stdout)["warnings"]) == 2 and len(_warnings(proc.stderr)) == 2
    # a repaired copy, or one to an OCI layout, says nothing
    proc = ok("copy", "-q", "--repair", f"oci:{layout}:t", f"docker-archive:{out}:bad:1")
    assert not _warnings(proc.stderr)
    assert not _warnings(ok("copy", "-q", f"oci:{layout}:t", f"oci:{tmp_path}/o:t").stderr)
    # a clean image neither
    assert not _warnings(
        ok("copy", "-q", f"docker-archive:{SAMPLE}", f"docker-archive:{out}").stderr
    )


@pytest.mark.docker
def test_engine_refusal_comes_with_the_hint(docker_engine: DockerEngine, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]}
    layout = tmp_path / "bad"
    _broken_layout(layout)
    proc = ocikit("copy", "-q", f"oci:{layout}:t", "docker-daemon:ocikit-test/bad:1", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode().splitlines()
    warnings = _warnings(proc.stderr)
    assert len(warnings) == 2 and lines[: len(warnings)] == warnings, lines  # before the error
    [error] = lines[len(warnings) :]
    assert error.startswith("ocikit: error: docker-daemon:ocikit-test/bad:1: the engine says")
    assert "--repair" in error, error
    # repaired, the engine takes it; the ID printed is the one docker shows
    proc = ok("copy", "--repair", f"oci:{layout}:t", "docker-daemon:ocikit-test/bad:1", env=env)
    image_id = docker_engine.image_id("ocikit-test/bad:1")
    assert f"image ID {image_id[7:19]}" in proc.stderr.decode(), proc.stderr
    docker_engine.docker("rmi", "ocikit-test/bad:1")


def test_warnings_are_the_same_copied_at_once_and_for_repeated_layers(tmp_path: Path) -> None:
    """Layers copied at once are analyzed in order afterwards; a repeated layer (copied once)
    is analyzed where it appears again; a layer that is no tar archive is named."""
    layout = tmp_path / "bad"
    _broken_layout(layout)
    out = f"docker-archive:{tmp_path}/out.tar:bad:1"
    one = lib.copy(f"oci:{layout}:t", out, jobs=1).warnings
    assert len(one) == 2
    assert lib.copy(f"oci:{layout}:t", out, jobs=4).warnings == one
    dups = tar_bytes([file("a", "1"), file("./a", "2")])
    write_layout(tmp_path / "twice", [dups, tar_bytes([file("b")]), dups])
    for jobs in (1, 3):
        [line] = lib.copy(f"oci:{tmp_path}/twice:t", out, jobs=jobs).warnings
        assert line.startswith("warning: duplicate-path: 2 paths in layers 0 and 2 "), line
    write_layout(tmp_path / "junk", [tar_bytes([file("a")]), b"\x01" * 1000])
    [line] = lib.copy(f"oci:{tmp_path}/junk:t", out).warnings
    assert line.startswith("warning: layer-unreadable: layer 1 is not a tar archive"), line
    assert "ocikit check" in line
