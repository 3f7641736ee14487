"""A private Docker engine for tests and benchmarks. Plain module: no pytest here.

``DockerEngine`` runs ``dockerd`` (Debian's docker.io) on its own socket, data root and exec
root under a short temporary directory (``/tmp/ocikit-dk.XXXXXXXX``: a unix socket path must fit
in 108 bytes), with no bridge and no iptables, and removes everything when stopped: the daemon,
its containerd, the mounts it left, the directory. Nothing is pulled: base images come from
``busybox-static`` through ``docker import``, and builds use the classic builder with
``--network none``.

    with DockerEngine() as engine:
        engine.import_busybox_base("ocikit-test/base:1")
        image_id = engine.build("app:1", "FROM ocikit-test/base:1\\nCOPY a /a\\n", {"a": "x"})
        engine.save(Path("app.tar"), "app:1")
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

DOCKER = "/usr/bin/docker"  # the client of Debian's docker.io; /usr/local/bin/docker differs
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"  # busybox-static: runs in an image with nothing else in it
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
    "head",
    "dd",
)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 600.0


class EngineError(RuntimeError):
    """The engine could not start, or a docker command failed."""


def can_run() -> str | None:
    """Why an engine cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    for path in (DOCKERD, DOCKER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian package docker.io)"
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} is not installed (Debian package busybox-static)"
    return None


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest (last mounted) first."""
    prefix = str(root)
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 2:
                continue
            target = fields[1].replace("\\040", " ").replace("\\011", "\t")
            target = target.replace("\\012", "\n").replace("\\134", "\\")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return list(reversed(found))


def _processes_mentioning(root: Path) -> list[int]:
    """Pids of processes whose command line names ``root`` (our containerd, its shims)."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _terminate(pids: list[int], timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            time.sleep(0.05)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class DockerEngine:
    """One ``dockerd`` of our own. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self, *, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: io.BufferedWriter | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def socket(self) -> Path:
        if self.dir is None:
            raise EngineError("the engine is not started")
        return self.dir / "docker.sock"

    @property
    def log_path(self) -> Path:
        if self.dir is None:
            raise EngineError("the engine is not started")
        return self.dir / "dockerd.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment for a docker client talking to this engine (classic builder)."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> DockerEngine:
        """Start dockerd and wait until ``docker info`` answers; EngineError if it does not."""
        why = can_run()
        if why:
            raise EngineError(why)
        if self._proc is not None:
            raise EngineError("the engine is already started")
        self.dir = Path(tempfile.mkdtemp(prefix="ocikit-dk.", dir="/tmp"))
        atexit.register(self.stop)  # a crash or ^C of the caller leaves no daemon behind
        self._log_file = self.log_path.open("wb")
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
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals dockerd + containerd
        )
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                last = f"dockerd exited with status {self._proc.returncode}"
                break
            try:
                probe = self.docker("info", "--format", "{{.ServerVersion}}", check=False)
            except subprocess.TimeoutExpired:
                continue
            if probe.returncode == 0:
                return self
            last = probe.stderr.decode(errors="replace").strip()
            time.sleep(0.25)
        else:
            last = f"no answer from docker info within {self.start_timeout:.0f} s ({last})"
        tail = self.log_tail()
        self.stop()
        raise EngineError(f"dockerd did not start: {last}\n--- dockerd log (tail) ---\n{tail}")

    def log_tail(self, size: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except (OSError, EngineError):
            return "(no log)"
        return data[-size:].decode(errors="replace")

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL), unmount what it left, remove its directory.

        Safe to call twice, and after a failed start.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None and self.dir is not None:
            # containerd runs in a session of its own; dockerd stops it, but never leave one
            _terminate(_processes_mentioning(self.dir))
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.dir is not None:
            for target in _mounts_under(self.dir):
                done = subprocess.run(["umount", "-R", target], capture_output=True)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", target], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ commands

    def docker(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        capture: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``/usr/bin/docker ARGS`` against this engine; EngineError if it fails and check."""
        proc = subprocess.run(
            [DOCKER, *args],
            input=input,
            env=self.env,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip() if proc.stderr else ""
            raise EngineError(f"docker {' '.join(args)} failed ({proc.returncode}): {err}")
        return proc

    def image_id(self, ref: str) -> str:
        """``docker inspect --format {{.Id}}``: ``sha256:<hex>`` of the image's config."""
        return self.docker("inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()

    def has_image(self, ref: str) -> bool:
        return self.docker("inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def import_busybox_base(self, tag: str) -> str:
        """A base image made of busybox-static and its applets, by ``docker import``.

        Returns the image ID.
        """
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add(name: str, kind: bytes, mode: int, linkname: str = "") -> tarfile.TarInfo:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.linkname = kind, mode, linkname
                info.mtime = 946684800  # fixed: the same base image ID on every run
                return info

            tar.addfile(add("bin", tarfile.DIRTYPE, 0o755))
            with open(BUSYBOX, "rb") as f:
                info = add("bin/busybox", tarfile.REGTYPE, 0o755)
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f)
            for applet in APPLETS:
                tar.addfile(add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, "busybox"))
            for d in ("etc", "tmp", "root"):
                tar.addfile(add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        self.docker("import", "--change", 'CMD ["/bin/sh"]', "-", tag, input=buf.getvalue())
        return self.image_id(tag)

    def build(
        self,
        tag: str,
        dockerfile_text: str,
        files: Mapping[str, bytes | str] | None = None,
    ) -> str:
        """``docker build`` (classic builder, ``--network none``) of a context made of
        ``files`` (relative path -> content) plus the Dockerfile. Returns the image ID."""
        with tempfile.TemporaryDirectory(prefix="ocikit-ctx.") as tmp:
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(dockerfile_text, encoding="utf-8")
            for name, content in (files or {}).items():
                rel = PurePosixPath(name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise ValueError(f"context file {name!r} is not a plain relative path")
                path = ctx.joinpath(*rel.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            self.docker("build", "--network", "none", "-q", "-t", tag, str(ctx))
        return self.image_id(tag)

    def save(self, path: Path, *refs: str) -> Path:
        """``docker save -o path refs...``"""
        self.docker("save", "-o", str(path), *refs)
        return path

    def load(self, path: Path) -> str:
        """``docker load -i path``; returns docker's report ("Loaded image: ...")."""
        return self.docker("load", "-i", str(path)).stdout.decode()

    def remove_image(self, *refs: str) -> None:
        """``docker rmi -f``, ignoring images that are not there."""
        for ref in refs:
            self.docker("rmi", "-f", ref, check=False)
