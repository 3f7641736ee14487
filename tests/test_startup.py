"""A short command imports only what it uses: ``ocikit --help``, ``--version``, ``help``, a
usage error, ``inspect``, ``check`` and ``copy`` of a small image, ``gc`` load neither the
build engine nor yaml, httpx, rich, nor what another command or transport needs.

The modules are counted, never timed (this machine is noisy; bench/bench_all.py times the
short commands): each command runs in a child process, as the console script runs it, and
says ``sys.modules`` when it exits (``-X importtime`` misses what ``importlib.import_module``
loads: the lazy names of ``ocikit``, ``ocikit.model`` and ``ocikit.transports``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import ocikit
from ocikit.transports import RegistryOptions
from support.layouts import directory, file, tar_bytes, write_layout
from support.registry import Registry

#: what no short command loads: the build engine, recipes, HTTP, the terminal's widgets
HEAVY = (
    "ocikit.build",
    "yaml",
    "httpx",
    "httpcore",
    "h11",
    "ssl",
    "email",
    "rich",
    "pygments",
)
#: the registry and engine transports, HTTP underneath
REMOTE = (
    "ocikit.transports.registry",
    "ocikit.transports.registry_client",
    "ocikit.transports.httpstream",
    "ocikit.transports.auth",
    "ocikit.transports.daemon",
)
#: squashfs layers and the tools ocikit runs
TOOLS = (
    "ocikit.layer.squashfs",
    "ocikit.layer.squashfs_format",
    "ocikit.layer.overlay",
    "ocikit.tools",
    "subprocess",
)
#: the compressors (a layer read or written)
COMPRESSORS = ("ocikit.layer.compress", "isal", "zstandard")
#: the operations a command does not run (each command: all but its own)
OPS = tuple(
    f"ocikit.ops.{m}"
    for m in ("check", "copy", "copy_image", "export", "gc", "inspect", "repair", "unpack")
)
#: what reads images: transports, layers, operations
IMAGES = (
    *OPS,
    *REMOTE,
    *TOOLS,
    *COMPRESSORS,
    "ocikit.transports.oci_layout",
    "ocikit.transports.docker_archive",
    "ocikit.transports.archive",
    "ocikit.layer.tarstream",
)

_REPORT = (
    "import atexit, sys\n"
    "out = sys.argv[1]\n"
    "sys.argv = ['ocikit', *sys.argv[2:]]\n"
    "def report():\n"
    "    with open(out, 'w') as f:\n"
    "        f.write('\\n'.join(n for n, m in sys.modules.items() if m is not None))\n"
    "atexit.register(report)\n"
    "from ocikit.cli import run\n"
    "run()\n"
)


def _modules(
    tmp_path: Path, *args: str, code: int = 0, env: dict[str, str] | None = None
) -> set[str]:
    """The modules ``ocikit ARGS`` loaded, run as the console script runs it (standard output
    a pipe: no terminal; ``env``: added to the environment)."""
    out = tmp_path / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _REPORT, str(out), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == code, proc.stderr.decode()
    return set(out.read_text().split())


def _loaded(names: set[str], *forbidden: Sequence[str]) -> list[str]:
    """The modules of ``names`` that are, or lie below, one of ``forbidden``: the outermost
    of each package (``httpx``, not also ``httpx._client``)."""
    banned = {b for group in forbidden for b in group}
    hits = {n for n in names if any(n == b or n.startswith(b + ".") for b in banned)}
    return sorted(n for n in hits if n.rpartition(".")[0] not in hits)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image (one gzip layer of three entries) as an OCI layout ``oci/`` (tag ``t``),
    an OCI archive ``oci.tar`` and a docker archive ``docker.tar``."""
    root = tmp_path_factory.mktemp("startup")
    layer = tar_bytes([directory("etc"), file("etc/hello", b"hi\n"), file("etc/x", b"x" * 100)])
    write_layout(root / "oci", [layer], ref="t")
    ocikit.copy(f"oci:{root / 'oci'}:t", f"oci-archive:{root / 'oci.tar'}:t")
    ocikit.copy(f"oci:{root / 'oci'}:t", f"docker-archive:{root / 'docker.tar'}:tiny:1")
    return root


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("help",),
        ("help", "check"),
        ("copy", "--help"),
        ("login", "--help"),
        ("inspect", "--help"),
    ],
)
def test_a_short_command_imports_only_what_it_uses(tmp_path: Path, args: tuple[str, ...]) -> None:
    names = _modules(tmp_path, *args)
    loaded = _loaded(names, HEAVY, IMAGES, ("ocikit.model.manifest", "ocikit.tempfiles"))
    assert loaded == [], f"ocikit {' '.join(args)} imports {loaded}"


@pytest.mark.parametrize(
    "args",
    [("copy",), ("inspect",), ("copy", "--bogus", "a", "b"), ("bogus",), ("inspect", "nope:x")],
)
def test_a_usage_error_imports_only_what_it_uses(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A usage error (a missing argument, an unknown option, command or transport) is said
    before anything that reads an image loads."""
    names = _modules(tmp_path, *args, code=2)
    loaded = _loaded(names, HEAVY, [m for m in IMAGES if m != "ocikit.ops.inspect"])
    assert loaded == [], f"ocikit {' '.join(args)} imports {loaded}"


@pytest.mark.parametrize(
    "ref", ["oci:{}/oci:t", "oci-archive:{}/oci.tar:t", "docker-archive:{}/docker.tar"]
)
@pytest.mark.parametrize("raw", [False, True])
def test_inspect_imports_its_transport_only(
    tmp_path: Path, images: Path, ref: str, raw: bool
) -> None:
    """``inspect`` of a local image: no HTTP, no other operation, no compressor (no layer is
    read), no tool."""
    names = _modules(tmp_path, "inspect", *(["--raw"] if raw else []), ref.format(images))
    assert "ocikit.ops.inspect" in names
    others = [m for m in OPS if m != "ocikit.ops.inspect"]
    loaded = _loaded(names, HEAVY, REMOTE, TOOLS, COMPRESSORS, others)
    assert loaded == [], f"inspect {ref} imports {loaded}"


def test_check_of_a_tar_image_imports_no_squashfs_nor_tools(tmp_path: Path, images: Path) -> None:
    names = _modules(tmp_path, "check", "-q", f"oci:{images}/oci:t")
    assert "ocikit.ops.check" in names
    others = [m for m in OPS if m != "ocikit.ops.check"]
    loaded = _loaded(names, HEAVY, REMOTE, TOOLS, others)
    assert loaded == [], f"check imports {loaded}"


def test_copy_between_layouts_imports_no_repair_nor_tools(tmp_path: Path, images: Path) -> None:
    """A copy without ``--repair`` loads neither the repair nor check's analysis; a local
    copy no HTTP and no tool."""
    names = _modules(tmp_path, "copy", "-q", f"oci:{images}/oci:t", f"oci:{tmp_path}/out:t")
    assert "ocikit.ops.copy" in names
    others = [m for m in OPS if m not in ("ocikit.ops.copy", "ocikit.ops.copy_image")]
    loaded = _loaded(names, HEAVY, REMOTE, TOOLS, others, ("ocikit.ops.loadcheck",))
    assert loaded == [], f"copy imports {loaded}"


def test_gc_imports_a_layout_only_for_a_layout(tmp_path: Path, images: Path) -> None:
    """``gc`` alone sweeps ``$TMPDIR``: no transport implementation, no tool; ``gc oci:DIR``
    reads the layout, and runs no tool unless a killed build left a run behind."""
    names = _modules(tmp_path, "gc", "-q")
    loaded = _loaded(names, HEAVY, [m for m in IMAGES if m != "ocikit.ops.gc"])
    assert loaded == [], f"gc imports {loaded}"
    names = _modules(tmp_path, "gc", "-q", f"oci:{images}/oci")
    assert "ocikit.transports.oci_layout" in names
    loaded = _loaded(names, HEAVY, REMOTE, TOOLS, COMPRESSORS)
    assert loaded == [], f"gc oci:DIR imports {loaded}"


@pytest.mark.parametrize("args", [("doctor",), ("logout", "--authfile", "{auth}", "example.com")])
def test_a_command_speaking_http_loads_no_terminal_widgets(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """httpx imports its own command line (click, rich, pygments) when it can: the command
    line of ocikit, which never runs it, loads httpx without (``doctor`` asks the engine, a
    logout may ask a credential helper: both speak HTTP)."""
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    argv = [a.format(auth=auth) for a in args]
    names = _modules(tmp_path, *argv, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert "httpx" in names
    http = ("httpx", "httpcore", "h11", "ssl", "email")  # httpx decodes zstd bodies: zstandard
    loaded = _loaded(names, [m for m in HEAVY if m not in http], OPS, COMPRESSORS[:2])
    assert loaded == [], f"ocikit {' '.join(args)} imports {loaded}"


def test_parsing_a_reference_loads_no_transport_implementation() -> None:
    """Every transport parses its reference (and says what it is) without its implementation:
    the registry client (httpx), the engine's, the layout's and the archives' modules load
    when an image is opened; the registry options are built without them."""
    code = (
        "import sys\n"
        "from ocikit.transports import Credentials, RegistryOptions, parse_reference\n"
        "for text in ('oci:d:t', 'oci-archive:a.tar@0', 'docker-archive:-', "
        "'docker-daemon:busybox', 'docker://busybox'):\n"
        "    ref = parse_reference(text)\n"
        "    str(ref), ref.kind, ref.properties, ref.streamed\n"
        "RegistryOptions(credentials=Credentials.parse('u:p'), tls_verify=False)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.decode().split())
    implementations = {
        f"ocikit.transports.{m}"
        for m in ("registry", "registry_client", "daemon", "oci_layout", "docker_archive")
    }
    loaded = _loaded(names, HEAVY, COMPRESSORS, tuple(implementations))
    assert loaded == [], loaded


def test_a_re_push_loads_no_compressor_nor_tar_reader(
    tmp_path: Path, images: Path, registry: Registry
) -> None:
    """A push of an image the registry has already (every blob there: one HEAD each) reads
    no layer: neither the compressors nor the tar reader load (a transcode loads them when a
    layer is sent); an OCI layout directory is read without the archive reader."""
    dest = f"docker://{registry.host}/again:1"
    ocikit.copy(f"oci:{images}/oci:t", dest, dest_registry=RegistryOptions(tls_verify=False))
    names = _modules(tmp_path, "copy", "-q", "--dest-tls-verify=false", f"oci:{images}/oci:t", dest)
    assert "ocikit.transports.registry" in names
    others = [m for m in OPS if m not in ("ocikit.ops.copy", "ocikit.ops.copy_image")]
    readers = ("ocikit.layer.tarstream", "ocikit.transports.archive", "tarfile")
    readers += ("ocikit.layer.verified",)  # the record of verified layers: no layer is sent
    loaded = _loaded(names, TOOLS, others, COMPRESSORS[:2], readers, ("ocikit.build",))
    assert loaded == [], f"a re-push imports {loaded}"


@pytest.mark.skipif(os.geteuid() != 0, reason="run steps need root")
def test_a_tar_build_with_a_run_step_loads_no_squashfs(tmp_path: Path) -> None:
    """A run step of a tar build (a tar base) loads none of the squashfs layers' modules:
    they load when a squashfs layer is made or read."""
    from test_run import busybox_base

    busybox_base(tmp_path)
    recipe = tmp_path / "ocikit.yaml"
    recipe.write_text(
        'images:\n  step:\n    from: oci:base:base\n    run: "echo x > /f"\n    cache: false\n'
    )
    cache, out = tmp_path / "cache", tmp_path / "out"
    names = _modules(
        tmp_path,
        "build",
        "-q",
        "-f",
        str(recipe),
        "--cache-dir",
        str(cache),
        "--output",
        f"oci:{out}",
    )
    assert "ocikit.build.steps" in names
    squashfs = ("ocikit.layer.squashfs", "ocikit.layer.squashfs_format")
    loaded = _loaded(names, squashfs, ("ocikit.build.squashfs_layers", "tarfile"))
    assert loaded == [], f"a tar build's run step imports {loaded}"
    # the recipe is validated by ocikit's records (build.schema): no validation library,
    # nor what one pulled in (pydantic's plugin loader: importlib.metadata, email); a base
    # in a layout loads no HTTP
    assert "ocikit.build.schema" in names
    heavy = ("pydantic", "importlib.metadata", "email", *REMOTE, "httpx", "ssl", "rich")
    loaded = _loaded(names, heavy)
    assert loaded == [], f"a build's run step imports {loaded}"


def test_a_build_of_an_import_loads_no_tarfile_nor_squashfs(tmp_path: Path) -> None:
    """A build importing a directory writes its tar with ocikit's own writer: Python's
    tarfile (and the user and group databases it loads) is not loaded, nor squashfs."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("a\n")
    recipe = tmp_path / "ocikit.yaml"
    recipe.write_text(
        "images:\n  t:\n    from: scratch\n    imports:\n      - {src: tree, dest: /tree}\n"
    )
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["build", "-q", "-f", str(recipe), "--cache-dir", str(cache)]
    names = _modules(tmp_path, *args, "--output", f"oci:{out}")
    assert "ocikit.build.placement" in names
    squashfs = ("ocikit.layer.squashfs", "ocikit.layer.squashfs_format")
    loaded = _loaded(names, squashfs, ("ocikit.build.squashfs_layers", "tarfile", "pwd"))
    assert loaded == [], f"a build of an import imports {loaded}"
