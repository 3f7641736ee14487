"""A short command imports only what it uses: ``ocikit --help``, ``--version``, ``help`` and
a usage error load neither the build engine nor pydantic, httpx, rich or the compressors
(``python -X importtime``, the modules counted, never timed: this machine is noisy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "ocikit.build",
    "ocikit.ops.copy",
    "ocikit.ops.check",
    "ocikit.transports.registry",
    "ocikit.transports.daemon",
    "pydantic",
    "httpx",
    "rich",
    "yaml",
    "isal",
    "zstandard",
)


def _imported(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ocikit", *args],
        capture_output=True,
        timeout=60,
    )
    names = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, proc.stderr
    return names


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("help",), ("copy", "--help"), ("copy",), ("help", "check")],
)
def test_a_short_command_imports_only_what_it_uses(args: tuple[str, ...]) -> None:
    names = _imported(*args)
    heavy = sorted(n for n in names if n.split(".")[0] in HEAVY or n.startswith(HEAVY))
    assert heavy == [], f"ocikit {' '.join(args)} imports {heavy[:10]}"


def test_parsing_a_reference_loads_no_transport_implementation() -> None:
    """Every transport parses its reference (and says what it is) without its implementation:
    the registry client (httpx), the engine's, the layout's and the archives' modules load
    when an image is opened."""
    code = (
        "import sys\n"
        "from ocikit.transports import parse_reference\n"
        "for text in ('oci:d:t', 'oci-archive:a.tar@0', 'docker-archive:-', "
        "'docker-daemon:busybox', 'docker://busybox'):\n"
        "    ref = parse_reference(text)\n"
        "    str(ref), ref.kind, ref.properties, ref.streamed\n"
        "print('\\n'.join(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.decode().split())
    implementations = {
        f"ocikit.transports.{m}"
        for m in ("registry", "registry_client", "daemon", "oci_layout", "docker_archive")
    }
    loaded = sorted(n for n in names if n.split(".")[0] in HEAVY or n in implementations)
    assert loaded == [], loaded
