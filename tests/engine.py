"""A private Docker engine for tests and benchmarks (no pytest here; bench/ imports it too).

It runs ``dockerd`` on its own socket, data root and exec root under a short temporary path,
with no bridge and no iptables, and removes everything when stopped. Base images come from
``busybox-static`` through ``docker import``: nothing is pulled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DOCKER = "/usr/bin/docker"  # the client of Debian's docker.io, matching its engine
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
APPLETS = (
    "sh",
    "ls",
    "cat",
    "echo",
    "rm",
    "mkdir",
    "ln",
    "true",
    "touch",
    "cp",
    "mv",
    "test",
    "printf",
    "chmod",
    "stat",
    "readlink",
    "sleep",
    "find",
    "sha256sum",
)


class EngineError(RuntimeError):
    pass


def can_run() -> str | None:
    """Why an engine cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    if not os.path.exists(DOCKERD) or not os.path.exists(DOCKER):
        return "docker.io is not installed"
    return None


class DockerEngine:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ocikit-dk.", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "dockerd.log"

    def start(self, timeout: float = 60) -> DockerEngine:
        why = can_run()
        if why:
            raise EngineError(why)
        log = self._log.open("wb")
        self._proc = subprocess.Popen(
            [
                DOCKERD,
                "--host",
                f"unix://{self.socket}",
                "--data-root",
                str(self.dir / "data"),
                "--exec-root",
                str(self.dir / "exec"),
                "--pidfile",
                str(self.dir / "docker.pid"),
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.docker("info", check=False).returncode == 0:
                return self
            time.sleep(0.3)
        tail = self._log.read_text(errors="replace")[-2000:]
        self.stop()
        raise EngineError(f"dockerd did not start:\n{tail}")

    def docker(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [DOCKER, *args], input=input, env=self.env, capture_output=True, timeout=600
        )
        if check and proc.returncode != 0:
            raise EngineError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
        return proc

    def image_id(self, ref: str) -> str:
        return self.docker("inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()

    def import_busybox_base(self, tag: str) -> str:
        """A base image with busybox-static and its applets, made without any registry."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            (root / "bin").mkdir(parents=True)
            shutil.copy2(BUSYBOX, root / "bin" / "busybox")
            for applet in APPLETS:
                (root / "bin" / applet).symlink_to("busybox")
            (root / "tmp").mkdir()
            tar = subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
                check=True,
                capture_output=True,
            ).stdout
            self.docker("import", "-", tag, input=tar)
        return self.image_id(tag)

    def build(self, tag: str, dockerfile: str, files: dict[str, bytes | str] | None = None) -> str:
        """``docker build`` (classic builder, no network) of a context made of ``files``."""
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(dockerfile)
            for name, content in (files or {}).items():
                path = ctx / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            self.docker("build", "--network", "none", "-q", "-t", tag, str(ctx))
        return self.image_id(tag)

    def save(self, path: Path, *refs: str) -> Path:
        self.docker("save", "-o", str(path), *refs)
        return path

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        # overlay mounts and the like that the engine may have left
        mounts = Path("/proc/mounts").read_text().splitlines()
        for line in reversed(mounts):
            target = line.split()[1]
            if target.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
