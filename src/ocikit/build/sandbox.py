"""``run`` steps in a real container: an OCI runtime (runc by default, crun on request) run
with a bundle whose config ocikit writes.

The container gets its own mount, pid, ipc and uts namespaces, and its own network namespace
(loopback only) unless the image asks for ``network: host``. It gets a private ``/proc``,
``/dev`` (the runtime's default devices) and ``/tmp``. Root gets Docker's default
capabilities; any other user gets none. The root filesystem is the overlay the caller
mounted. Binds are read-only unless asked otherwise, and the imports are read-only at
``/ocikit/imports/SRC``.

Output (stdout and stderr together) goes line by line to ``on_line``, and the last lines are
kept for the error message: ``tools.lines`` splits it as a terminal shows it (a CR ends a
line too), escapes every control character and cuts a line at 16 KiB, so a step that prints
escapes or a 100 MB line reaches neither the terminal nor memory as it is.

The runtime itself opens the image's ``/etc/passwd`` and ``/etc/group`` in the container to
set the process's user, whoever it is; ``user_table_problem`` says when that read would hang
(a fifo, a pty) or read a device, so that the step is refused before it starts.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnsafeInputError, UsageError
from ..layer.dirfd import DIR_FLAGS, kind, land
from ..model.jsondoc import one_line
from ..tempfiles import private_tmp_dir
from ..tools import READ, UMASK, environment, lines

IMPORTS_DIR = "/ocikit/imports"
RUNWAIT = str(Path(__file__).with_name("runwait.py"))  # run, never imported here
TAIL_LINES = 20
TAIL_LINE = 200  # characters of a line kept for the error message
STATUS_LIMIT = 64 << 10
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
_ids = itertools.count()
# opened by the runtime in the container before the step runs, whatever the user
USER_TABLES = ("etc/passwd", "etc/group")
# what the runtime mounts there is its own (devices, /dev/ptmx, /proc/self/fd), not the image's
RUNTIME_FILESYSTEMS = ("dev", "proc", "sys")


@dataclass(frozen=True)
class Mount:
    source: str
    destination: str
    writable: bool = False


@dataclass(frozen=True)
class _Process:
    """What runs in the container, and as whom (``run_step``'s arguments)."""

    args: Sequence[str]
    env: Sequence[str]
    cwd: str
    uid: int
    gid: int
    groups: Sequence[int]
    mounts: Sequence[Mount]
    network_host: bool
    hostname: str


@dataclass
class StepResult:
    exit_code: int
    tail: list[str] = field(default_factory=list)
    runtime_error: str | None = None  # the runtime could not start the step: its message


def runtime_path(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UsageError(f"run steps need the OCI runtime {name} (Debian: {name})")
    return path


def user_table_problem(rootfs: Path) -> str | None:
    """Why the runtime must not start on ``rootfs``, or None. It reads ``/etc/passwd`` and
    ``/etc/group`` (symlinks followed in the container) to set the user: each must be a
    regular file of the image, or absent. A fifo, a device or a directory there, or a
    symlink into the runtime's ``/dev``, ``/proc`` or ``/sys`` (``/dev/ptmx``), would hang
    the step before it starts or read a device."""
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        provided = []
        for top in RUNTIME_FILESYSTEMS:  # where the runtime mounts them, in this root
            fd, parent, name, _st = land(root_fd, [top])
            os.close(fd)
            provided.append((*parent, name) if name else parent)
        for rel in USER_TABLES:
            fd, parent, name, st = land(root_fd, rel.split("/"))
            os.close(fd)
            where = (*parent, name) if name else parent
            if any(where[: len(p)] == p for p in provided):
                return f"/{rel} leads into /{'/'.join(where)}, which is the runtime's"
            if st is not None and not stat.S_ISREG(st.st_mode):
                return f"/{rel} is {kind(st.st_mode)}, not a file"
    except UnsafeInputError as e:
        return str(e)
    finally:
        os.close(root_fd)
    return None


def has_program(rootfs: Path, program: str, path: str, cwd: str) -> bool:
    """Whether the runtime would find ``program`` to run in ``rootfs``: an executable regular
    file, its symlinks resolved inside the root as the kernel resolves them there (a link
    out of it is followed no further than the root); a name without ``/`` looked up in
    ``path`` (the step's ``PATH``), a relative one from ``cwd``."""
    if "/" in program:
        candidates = [program if program.startswith("/") else f"{cwd}/{program}"]
    else:
        candidates = [
            f"{d if d.startswith('/') else f'{cwd}/{d}'}/{program}" for d in path.split(":") if d
        ]
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        for candidate in candidates:
            try:
                fd, _parent, name, st = land(root_fd, candidate.split("/"))
            except UnsafeInputError:  # a symlink loop, a file on the way
                continue
            os.close(fd)
            if (
                name is not None
                and st is not None
                and stat.S_ISREG(st.st_mode)
                and st.st_mode & 0o111
            ):
                return True
    finally:
        os.close(root_fd)
    return False


class Helper:
    """The step's helper (``runwait``), started ahead of its step: it waits for its command
    on stdin, so its start-up (a Python's, ~10 ms) overlaps what the caller prepares
    meanwhile. Given to ``run_step`` (used once), or closed unused: it then ends, having
    started nothing."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", RUNWAIT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment(),  # the runtime's: fixed, never the user's (tools.environment)
            umask=UMASK,  # the mode of the mount points runc makes in the layer
        )
        self.used = False

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """The helper, told to run ``argv`` (its output: the step's)."""
        assert not self.used and self.proc.stdin is not None
        self.used = True
        try:
            self.proc.stdin.write(b"\0".join(os.fsencode(a) for a in argv))
            self.proc.stdin.close()
        except BrokenPipeError:  # it ended already: no status, said as such
            pass
        return self.proc

    def close(self) -> None:
        """Unused: told so (its stdin ends), and waited for."""
        if not self.used:
            self.used = True
            with self.proc:  # its pipes closed, then waited for
                pass


def run_step(
    rootfs: Path,
    args: Sequence[str],
    *,
    env: Sequence[str],
    cwd: str,
    uid: int,
    gid: int,
    groups: Sequence[int] = (),
    mounts: Sequence[Mount] = (),
    network_host: bool = False,
    hostname: str = "ocikit",
    runtime: str = "runc",
    on_line: Callable[[str], None] | None = None,
    bundle: Path | None = None,
    later: contextlib.ExitStack | None = None,
    helper: Helper | None = None,
) -> StepResult:
    """Run ``args`` in a container on ``rootfs``; its exit code and the last lines it wrote.

    ``bundle``: a new directory for the runtime's bundle and state, inside a private
    directory (``RUN_PREFIX``) of the caller, so that ``reclaim_runs`` finds the container
    if this process is killed; else a private directory of ``$TMPDIR``. ``later``: with a
    ``bundle``, the stopped container is deleted (and the bundle removed) while the caller
    goes on, and ``later`` waits for that when it closes (before the caller removes its
    private directory); on an error or an interruption it is deleted before this returns.
    ``helper``: the step's helper, started ahead (else it is started here)."""
    binary = runtime_path(runtime)
    # runc resolves a relative root or bind source from the bundle, not from here: every
    # path in the config is absolute and resolved
    rootfs = rootfs.resolve(strict=True)
    mounts = [Mount(os.path.realpath(m.source), m.destination, m.writable) for m in mounts]
    private = None
    if bundle is None:
        private = private_tmp_dir("run", "run step")
        bundle = Path(private.path)
    else:
        bundle.mkdir()
    work = bundle.resolve()
    name = f"ocikit-{os.getpid()}-{next(_ids)}"
    state = ["--root", str(work / "state")]
    deferred = False  # the container deleted while the caller goes on (``later``)
    try:
        (work / "runtime").write_text(runtime)  # for reclaim_runs, should this process die
        process = _Process(args, env, cwd, uid, gid, groups, mounts, network_host, hostname)
        config = _config(rootfs, process)
        (work / "config.json").write_text(json.dumps(config, indent=1))
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        helper = helper or Helper()
        with helper.start(_waited(binary, state, work, name)) as proc:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            try:
                for line in lines(lambda: os.read(fd, READ)):
                    tail.append(line if len(line) <= TAIL_LINE else line[:TAIL_LINE] + "...")
                    if on_line is not None:
                        on_line(line)
            except BaseException:  # interrupted: the container is killed, runwait reaps it
                _delete(binary, state, name)  # and ends, before the Popen waits for it
                raise
            code = proc.wait()
        result = _result(work, runtime, code, list(tail))
        if later is not None and private is None and (work / "state").exists():
            later.callback(_deleting(binary, state, name, work))  # the stopped container
            deferred = True
        return result
    finally:
        if not deferred:
            if (work / "state").exists():  # the stopped container (a detached one stays),
                _delete(binary, state, name)  # or one left behind by an interruption
            if private is not None:
                private.remove()
            else:
                shutil.rmtree(work, ignore_errors=True)


def _deleting(binary: str, state: list[str], name: str, work: Path) -> Callable[[], None]:
    """The stopped container's deletion started; what waits for it, then removes ``work``."""
    proc = subprocess.Popen(
        [binary, *state, "delete", "--force", name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
        umask=UMASK,
    )

    def wait() -> None:
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    return wait


def _delete(binary: str, state: list[str], name: str) -> None:
    subprocess.run(
        [binary, *state, "delete", "--force", name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        env=environment(),
        umask=UMASK,
    )


def _waited(binary: str, state: list[str], work: Path, name: str) -> list[str]:
    """What ``runwait`` is told to run: the container, detached (one pipe as its stdout
    and stderr; its exit status in ``work/status``)."""
    return [
        str(work / "status"),
        str(work / "pid"),
        str(work / "runtime.log"),
        binary,
        *state,
        "--log",
        str(work / "runtime.log"),
        "--log-format",
        "json",
        "run",
        "--detach",
        "--pid-file",
        str(work / "pid"),
        "--bundle",
        str(work),
        name,
    ]


def _result(work: Path, runtime: str, helper: int, tail: list[str]) -> StepResult:
    """What ``runwait`` wrote in ``work/status`` (bounded: it is small JSON)."""
    try:
        with open(work / "status", "rb") as f:
            status = json.loads(f.read(STATUS_LIMIT))
        if "exit" in status:
            return StepResult(int(status["exit"]), tail)
        error = one_line(str(status.get("error") or ""), TAIL_LINE * 2)
        return StepResult(int(status["runtime"]), [], error or f"{runtime} failed")
    except (OSError, ValueError, KeyError, TypeError):
        return StepResult(
            helper or 1, tail, f"{runtime} ended without a status (helper exit code {helper})"
        )


def _config(rootfs: Path, p: _Process) -> dict[str, object]:
    """The runtime's ``config.json``."""
    caps = CAPABILITIES if p.uid == 0 else []
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # a container cannot go above it
    if nofile == resource.RLIM_INFINITY or nofile > 1 << 20:
        nofile = 1 << 20
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not p.network_host:
        namespaces.append({"type": "network"})
    base_mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"],
        },
    ]
    for m in p.mounts:
        base_mounts.append(
            {
                "destination": m.destination,
                "type": "bind",
                "source": m.source,
                "options": ["rbind", "rw" if m.writable else "ro"],
            }
        )
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": p.uid, "gid": p.gid, "additionalGids": list(p.groups)},
            "args": list(p.args),
            "env": list(p.env),
            "cwd": p.cwd,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": p.hostname,
        "mounts": base_mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/sched_debug",
                "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }
