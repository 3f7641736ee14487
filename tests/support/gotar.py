"""Go's ``archive/tar`` as an oracle: the reader docker, containerd and umoci use.

``tests/gotar/main.go`` is built once per session with Debian's ``golang-go`` (the standard
library only: no module download) into a private directory. ``GoTar`` keeps one process
running and sends it byte streams; for each it answers with the entries Go's reader returns
and the error that ended the stream. ``ocikit_read`` reads the same bytes with ocikit's
reader and answers in the same form, so the two can be compared with ``==``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ocikit.errors import InputError
from ocikit.layer.tarstream import XGLTYPE, TarStream

SOURCE = Path(__file__).resolve().parent.parent / "gotar" / "main.go"
GO = shutil.which("go") or "/usr/lib/go/bin/go"


def can_run() -> str | None:
    if not os.path.exists(GO):
        return "no Go toolchain (Debian: golang-go)"
    return None


def build(directory: Path) -> Path:
    """The oracle binary, built into ``directory`` (its own Go cache there too)."""
    binary = directory / "gotar"
    env = dict(
        os.environ,
        GOCACHE=str(directory / "cache"),
        GOPATH=str(directory / "gopath"),
        GOFLAGS="-mod=mod",
        GO111MODULE="off",
        CGO_ENABLED="0",
    )
    subprocess.run(
        [GO, "build", "-o", str(binary), str(SOURCE)],
        check=True,
        capture_output=True,
        env=env,
        cwd=directory,
    )
    return binary


class GoTar:
    """One running oracle; ``read(data)`` is Go's verdict on ``data``, ``clean(name)`` Go's
    ``filepath.Clean`` of a name."""

    def __init__(self, binary: Path) -> None:
        self._proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._binary = binary
        self._cleaner: subprocess.Popen[bytes] | None = None

    def clean(self, name: str) -> str:
        if self._cleaner is None:
            self._cleaner = subprocess.Popen(
                [str(self._binary), "clean"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        assert self._cleaner.stdin is not None and self._cleaner.stdout is not None
        self._cleaner.stdin.write(_hex(name).encode() + b"\n")
        self._cleaner.stdin.flush()
        line = self._cleaner.stdout.readline()
        return bytes.fromhex(line.decode().strip()).decode("utf-8", "surrogateescape")

    def read(self, data: bytes) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(len(data).to_bytes(4, "big") + data)
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the Go oracle stopped")
        return normalize(json.loads(line))

    def close(self) -> None:
        for proc in (self._proc, self._cleaner):
            if proc is not None and proc.stdin:
                proc.stdin.close()
                proc.wait(timeout=10)

    def __enter__(self) -> GoTar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_oracle() -> tuple[GoTar, Path]:
    directory = Path(tempfile.mkdtemp(prefix="ocikit-gotar-"))
    return GoTar(build(directory)), directory


def _hex(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").hex()


def normalize(result: dict[str, Any]) -> dict[str, Any]:
    """The comparable form: an error is only "error" (the messages differ); a global
    header's name and records only when Go kept its records (when one is malformed, Go's
    map order decides what else it applied); data only for an entry read to its end."""
    entries = []
    error = result["error"] is not None
    for i, e in enumerate(result["entries"]):
        last = i == len(result["entries"]) - 1
        if e["type"] == ord(XGLTYPE):
            g: dict[str, Any] = {"type": e["type"], "pax": e["pax"]}
            if e["pax"] is not None:
                g["name"] = e["name"]
            entries.append(g)
            continue
        e = dict(e)
        if error and last:  # the data read failed part way: how far depends on buffers
            e.pop("data", None)
            e.pop("datalen", None)
        entries.append(e)
    return {"entries": entries, "error": "error" if error else None}


def ocikit_read(data: bytes, chunk: int = 32 << 10) -> dict[str, Any]:
    """ocikit's reader on ``data``, every entry's data read whole, in the oracle's form."""
    entries: list[dict[str, Any]] = []
    error = None
    stream = TarStream(io.BufferedReader(io.BytesIO(data)), what="fuzz")  # type: ignore[arg-type]
    buf = bytearray(chunk)
    try:
        for entry in stream:
            e: dict[str, Any] = {
                "type": entry.type[0],
                "name": _hex(entry.name),
                "linkname": _hex(entry.linkname),
                "size": entry.size,
                "mode": entry.mode,
                "uid": entry.uid,
                "gid": entry.gid,
                "mtime": [entry.mtime, entry.mtime_nsec],
                "uname": _hex(entry.uname),
                "gname": _hex(entry.gname),
                "devmajor": entry.devmajor,
                "devminor": entry.devminor,
                "pax": None
                if entry.pax is None
                else sorted([_hex(k), _hex(v)] for k, v in entry.pax.items()),
            }
            if entry.type == XGLTYPE:
                e = {"type": e["type"], "name": e["name"], "pax": e["pax"]}
            entries.append(e)
            digest, length = hashlib.sha256(), 0
            while n := stream.readinto(buf):
                digest.update(memoryview(buf)[:n])
                length += n
            if entry.type != XGLTYPE:
                e["data"], e["datalen"] = digest.hexdigest(), length
    except InputError as exc:
        error = str(exc)
    return normalize({"entries": entries, "error": error})
