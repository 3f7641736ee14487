"""``ocikit doctor``: the tools ocikit drives, found or not, usable or not, and their versions.

Each is looked for as ocikit looks for it when it needs it (``PATH``, then the system's sbin
directories), asked for its version (a few seconds at most, through ``tools.run``: its output
bounded, its environment ocikit's), and judged for what ocikit uses it for: run steps need
runc (or crun) and root (an overlay mount); squashfs layers need squashfs-tools; a
``docker-daemon:`` reference needs an engine answering at ``DOCKER_HOST``.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__, tools
from ..errors import OcikitError

SYSTEM_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VERSION_SECONDS = 10.0


@dataclass(frozen=True)
class ToolStatus:
    name: str
    needed_for: str
    found: str | None  # its path (the engine's address)
    version: str | None
    usable: bool
    why: str = ""  # what is wrong, when it is not usable


@dataclass(frozen=True)
class DoctorReport:
    ocikit: str
    python: str
    root: bool
    tools: list[ToolStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields (each tool's too), as ``--json`` prints them."""
        return asdict(self)


# name, what ocikit needs it for, its Debian package, the argument that prints its version
_TOOLS = (
    ("runc", "build: run steps", "runc", "--version"),
    ("crun", "build: run steps with --runtime crun", "crun", "--version"),
    ("mksquashfs", "build: squashfs layers", "squashfs-tools", "-version"),
    ("unsquashfs", "squashfs layers: run steps on them, unpack", "squashfs-tools", "-version"),
    ("mount", "build: run steps (an overlay mount)", "mount", "--version"),
)


def doctor(search: str | None = None, docker_host: str | None = None) -> DoctorReport:
    """What this machine offers ocikit. ``search``: where tools are looked for (default
    ``PATH``, then the system's directories); ``docker_host``: the engine (default
    ``DOCKER_HOST``, else the local socket)."""
    where = search if search is not None else f"{os.environ.get('PATH', '')}:{SYSTEM_DIRS}"
    root = os.geteuid() == 0
    report = DoctorReport(__version__, platform.python_version(), root)
    for name, purpose, package, flag in _TOOLS:
        report.tools.append(_tool(name, purpose, package, flag, where, root))
    report.tools.append(_overlay(root))
    report.tools.append(_engine(docker_host))
    report.tools.extend(_native_modules())
    return report


def _tool(name: str, purpose: str, package: str, flag: str, where: str, root: bool) -> ToolStatus:
    path = shutil.which(name, path=where)
    if path is None:
        return ToolStatus(name, purpose, None, None, False, f"not found (Debian: {package})")
    try:
        result = tools.run([path, flag], name, timeout=VERSION_SECONDS)
    except (OcikitError, OSError) as e:
        return ToolStatus(name, purpose, path, None, False, f"does not run: {e}")
    version = _first_line(result.stdout) or _first_line(result.stderr)
    if result.code != 0 and not (version and "version" in version.lower()):
        # (unsquashfs -version exits 1 after printing it)
        why = f"{path} {flag} failed: {result.message()}"
        return ToolStatus(name, purpose, path, version, False, why)
    if purpose.startswith("build: run steps") and not root:
        return ToolStatus(name, purpose, path, version, False, "run steps need root")
    return ToolStatus(name, purpose, path, version, True)


# the native core's modules, what each speeds up
_NATIVE = {
    "_tarcore": "speed: check, unpack and copy read tar headers in C",
    "_filecore": "speed: build reads, hashes and writes files in C",
}


def _native_modules() -> list[ToolStatus]:
    """The native core: each module built or not, and used or not (``OCIKIT_NATIVE=0``);
    without it ocikit runs its pure-Python path, the same results, slower."""
    from .. import native

    built = native.available()
    found = []
    for name, purpose in _NATIVE.items():
        label = f"native {name.lstrip('_')}"
        if not built[name]:
            why = "not built: pure Python (reinstall with gcc, python3-dev, libssl-dev)"
            found.append(ToolStatus(label, purpose, None, None, False, why))
        elif not native.enabled():
            found.append(ToolStatus(label, purpose, "built", None, False, "off: OCIKIT_NATIVE=0"))
        else:
            found.append(ToolStatus(label, purpose, "built", "built, in use", True))
    return found


def _overlay(root: bool) -> ToolStatus:
    purpose = "build: run steps (the step's root)"
    try:
        with open("/proc/filesystems", "rb") as f:
            known = f.read(1 << 16).decode(errors="replace")
    except OSError:
        known = ""
    found = any(line.split()[-1:] == ["overlay"] for line in known.splitlines())
    if not found:
        why = "the kernel lists no overlay file system (modprobe overlay)"
        return ToolStatus("overlayfs", purpose, None, None, False, why)
    if not root:
        return ToolStatus("overlayfs", purpose, "kernel", None, False, "mounting needs root")
    return ToolStatus("overlayfs", purpose, "kernel", None, True)


def _engine(docker_host: str | None) -> ToolStatus:
    from ..transports.daemon import Engine

    purpose = "docker-daemon: references"
    engine = None
    try:
        engine = Engine(docker_host)
        version = engine.version()
    except OcikitError as e:
        host = engine.host if engine is not None else (docker_host or "DOCKER_HOST")
        return ToolStatus("docker engine", purpose, host, None, False, _engine_why(str(e), host))
    finally:
        if engine is not None:
            engine.close()
    return ToolStatus("docker engine", purpose, engine.host, version, True)


def _engine_why(message: str, host: str) -> str:
    """``cannot reach the docker engine at HOST: no such socket (...)`` as ``no such socket
    at HOST``: the table names the engine already."""
    prefix = f"cannot reach the docker engine at {host}: "
    if message.startswith(prefix):
        return f"{message[len(prefix) :].split(' (', 1)[0]} at {host}"
    return message


def _first_line(data: bytes) -> str | None:
    for line in data.decode(errors="replace").splitlines():
        if line.strip():
            return line.strip()[:200]
    return None


__all__ = ["DoctorReport", "ToolStatus", "doctor"]
