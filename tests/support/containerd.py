"""A private containerd (its own root, state and socket), for ``ctr images import``.

    with Containerd(tmp) as daemon:
        daemon.ctr("images", "import", "img.tar")

Nothing of the host's containerd is used or touched: the daemon is started with its own
config, and stopped (then its directories removed) on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
START_TIMEOUT = 30.0
NAMESPACE = "ocikit-test"


def can_run() -> str | None:
    """Why a private containerd cannot run here (None: it can)."""
    if CONTAINERD is None or CTR is None:
        return "containerd or ctr is not installed"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


class Containerd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "containerd.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Containerd:
        assert CONTAINERD is not None
        for d in ("root", "state"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        config = self.base / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.base / "root"}"\n'
            f'state = "{self.base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "[debug]\n"
            f'  address = "{self.socket}.debug"\n'
        )
        log = (self.base / "containerd.log").open("wb")
        self._proc = subprocess.Popen(
            [CONTAINERD, "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log_tail()}")
            if self.socket.exists() and self.ctr("version").returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"containerd did not start: {self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "containerd.log").read_text(errors="replace")[-size:]
        return ""

    def ctr(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        assert CTR is not None
        return subprocess.run(
            [CTR, "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True,
            timeout=120,
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # snapshots may be mounted (overlay): unmount what is under our root, then remove it
        with contextlib.suppress(OSError):
            mounts = Path("/proc/self/mounts").read_text().splitlines()
            for line in reversed(mounts):
                target = line.split()[1]
                if target.startswith(str(self.base) + "/"):
                    subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
