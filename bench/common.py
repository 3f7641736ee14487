"""Shared pieces of the benchmarks: the test archive, measured runs, reports, a Python baseline.

Run as a script, it does in a process of its own what must not weigh on the measuring one:

    python bench/common.py baseline ARCHIVE|- OUTDIR   # the plain-Python baseline
    python bench/common.py archive SIZE_GB PATH        # build the test archive (needs root)
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"  # gitignored: cached archives and kept outputs
OCIKIT = ROOT / ".venv" / "bin" / "ocikit"
MB = 1e6
CHUNK = 1 << 20

# ---------------------------------------------------------------------------- measured runs


@dataclass(frozen=True)
class Usage:
    """What one process cost: wall time from spawn to exit, its CPU time and its peak RSS;
    and how busy the machine was otherwise meanwhile (CPU seconds of everything else)."""

    seconds: float
    cpu_seconds: float
    max_rss_kb: int
    others_cpu_seconds: float

    @property
    def others_share(self) -> float:
        """The share of the machine's CPUs that other processes took during the run."""
        return self.others_cpu_seconds / (self.seconds * len(os.sched_getaffinity(0)))


class RunFailed(RuntimeError):
    pass


def measure(
    argv: Sequence[str], stdin_file: Path | None = None, env: dict[str, str] | None = None
) -> Usage:
    """Run ``argv`` and return its own usage (``os.wait4``).

    With ``stdin_file`` the process reads that file from a real pipe fed by ``cat``; the
    figures are still the process's own, not cat's. Dirty pages of earlier runs are synced
    first so that their write-back is not charged to this one.

    Linux hands the peak RSS of the spawning process (this one) to the command at its exec
    (vfork: this process's peak; fork: its RSS then), so ``max_rss_kb`` is never below
    :func:`rss_floor_kb`: keep this process small and report that floor.
    """
    os.sync()
    with tempfile.TemporaryFile() as log:
        busy_before = busy_cpu_seconds()
        start = time.perf_counter()
        with _stdin_from(stdin_file) as stdin:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=log, stderr=log, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        busy = busy_cpu_seconds() - busy_before
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip()[-1500:]
            raise RunFailed(f"{argv[0]} exited with {proc.returncode}: {tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Usage(seconds, cpu, usage.ru_maxrss, max(0.0, busy - cpu))


def busy_cpu_seconds() -> float:
    """CPU seconds that all processes of the machine spent so far (/proc/stat), steal included."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _stdin_from(path: Path | None) -> Iterator[int | None]:
    """The read end of a pipe that ``cat PATH`` writes to (closed here once handed on)."""
    if path is None:
        yield None
        return
    read_end, write_end = os.pipe()
    feeder = subprocess.Popen(["cat", str(path)], stdout=write_end)
    os.close(write_end)
    try:
        yield read_end
    finally:
        os.close(read_end)
        feeder.wait()


def rss_floor_kb() -> int:
    """The least peak RSS that :func:`measure` can report now: this process's own peak."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def warm_page_cache(path: Path) -> None:
    """``cat PATH > /dev/null``, so that every tool then reads the file from memory."""
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tool_version(argv: Sequence[str]) -> str:
    """The last word of ``TOOL --version`` (both skopeo and ocikit end with the number)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError:
        return "missing"
    words = (proc.stdout or proc.stderr).split()
    return words[-1] if proc.returncode == 0 and words else "not working"


def machine_facts(ocikit: Path = OCIKIT) -> dict[str, str]:
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory_GB": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9:.0f}",
        "kernel": platform.release(),
        "load_1min": f"{os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
        "skopeo": tool_version(["skopeo", "--version"]),
        "ocikit": tool_version([str(ocikit), "--version"]),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def skopeo_argv() -> list[str]:
    """``skopeo``, with ``--insecure-policy`` only where no policy.json exists."""
    policies = [Path("/etc/containers/policy.json"), Path.home() / ".config/containers/policy.json"]
    return ["skopeo"] if any(p.exists() for p in policies) else ["skopeo", "--insecure-policy"]


# ---------------------------------------------------------------------------- OCI outputs


def layout_layers(layout: Path) -> list[dict[str, Any]]:
    """The layer descriptors of the (single) image in an OCI layout directory."""
    index = json.loads((layout / "index.json").read_text())
    algo, digest = index["manifests"][0]["digest"].split(":", 1)
    manifest = json.loads((layout / "blobs" / algo / digest).read_text())
    return list(manifest["layers"])


def check_gzip_layout(layout: Path, expected_layers: int) -> None:
    """Refuse an output that is not the whole image with gzip layers (a fast no-op is no win)."""
    layers = layout_layers(layout)
    if len(layers) != expected_layers:
        raise RunFailed(f"{layout}: {len(layers)} layers, the archive has {expected_layers}")
    for layer in layers:
        if not layer["mediaType"].endswith(("gzip", "tar.gz")):
            raise RunFailed(f"{layout}: a layer is {layer['mediaType']}, not gzip")


# ---------------------------------------------------------------------------- the archive


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    bytes: int
    layers: int
    layer_bytes: int

    def summary(self) -> str:
        return (
            f"{self.path} ({self.bytes / 1e9:.2f} GB, {self.layers} layers, "
            f"{self.layer_bytes / 1e9:.2f} GB of layer tars)"
        )


def describe_archive(path: Path) -> ArchiveInfo:
    """Size and layers of a ``docker save`` archive (legacy or Docker >= 25 form)."""
    with tarfile.open(path) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
        layers = manifest[0]["Layers"]
        layer_bytes = sum(tar.getmember(name).size for name in layers)
    return ArchiveInfo(path, path.stat().st_size, len(layers), layer_bytes)


@dataclass(frozen=True)
class LayerSpec:
    """One COPY layer of the generated image: a share of the budget taken from host trees."""

    name: str
    share: float
    trees: tuple[str, ...]  # empty: pseudo-random application data


def layer_specs() -> tuple[LayerSpec, ...]:
    stdlib = sysconfig.get_paths()["stdlib"]
    return (
        LayerSpec("libs", 0.22, ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu")),
        LayerSpec("bin", 0.14, ("/usr/bin", "/usr/sbin", "/usr/libexec")),
        LayerSpec("share", 0.16, ("/usr/share",)),
        LayerSpec("python", 0.18, (stdlib, *sorted(glob("/usr/lib/python3*")))),
        LayerSpec("toolchain", 0.15, ("/usr/lib/gcc", *sorted(glob("/usr/lib/llvm-*")))),
        LayerSpec("appdata", 0.15, ()),
    )


#: the last layer: a RUN that deletes (whiteouts) and writes a little, as real images do
FINAL_RUN = "RUN rm -rf /usr/share/doc /usr/share/man && mkdir -p /etc && echo ok > /etc/bench"
BASE_TAG = "ocikit-bench/base:1"
IMAGE_TAG = "ocikit-bench/copy:1"


def default_archive_path(size_gb: float) -> Path:
    return WORK / f"bench-{size_gb:g}g.docker.tar"


def ensure_archive(size_gb: float, path: Path | None = None, regenerate: bool = False) -> Path:
    """A real ``docker save`` of about ``size_gb`` GB in several layers, cached at ``path``.

    It is made by a child process, so that this one stays small: Linux counts the peak RSS of
    the process that spawns a command as a floor of the command's own (see :func:`measure`).
    """
    path = path or default_archive_path(size_gb)
    if regenerate or not path.exists():
        command = [sys.executable, __file__, "archive", str(size_gb), str(path)]
        subprocess.run(command, check=True)
    return path


def generate_archive(size_gb: float, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="context.", dir=path.parent))
    try:
        dockerfile = build_context(context, int(size_gb * 1e9))
        (context / "Dockerfile").write_text(dockerfile)
        _docker_save(context, path)
    finally:
        shutil.rmtree(context, ignore_errors=True)


def build_context(context: Path, budget: int) -> str:
    """Fill ``context`` with one directory per layer; return the Dockerfile."""
    lines = [f"FROM {BASE_TAG}"]
    done = 0
    specs = layer_specs()
    for i, spec in enumerate(specs):
        share = int(budget * spec.share)
        if i == len(specs) - 1:  # the last layer makes up any shortfall of the host trees
            share = max(share, budget - done)
        layer_dir = context / spec.name
        if spec.trees:
            done += _copy_trees(spec.trees, layer_dir, share)
        else:
            done += _write_app_data(layer_dir / "srv" / "appdata", share, seed=i)
        lines.append(f"COPY {spec.name}/ /")
        log(f"  layer {spec.name}: {done / 1e9:.2f} GB so far")
    lines.append(FINAL_RUN)
    return "\n".join(lines) + "\n"


def _copy_trees(trees: Sequence[str], dest: Path, budget: int) -> int:
    """Copy files and symlinks of host ``trees`` to ``dest``/<same path>, up to ``budget`` bytes
    (a file that would overshoot it is passed over for smaller ones)."""
    copied = 0
    for tree in trees:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            for name in sorted(filenames):
                copied += _copy_entry(Path(dirpath, name), dest, budget - copied)
    return copied


def _copy_entry(src: Path, dest: Path, room: int) -> int:
    """Copy one symlink, or one regular file that fits in ``room``; return the bytes copied."""
    target = dest / src.relative_to("/")
    try:
        if src.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(src))
        elif src.is_file() and src.stat().st_size <= room:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            return target.stat().st_size
    except OSError:  # unreadable or vanished: pass it over
        pass
    return 0


def _write_app_data(dest: Path, budget: int, seed: int) -> int:
    """Deterministic pseudo-random files that gzip about 2.5x: logs, CSV, binary records."""
    rng = random.Random(seed)
    makers = _data_makers(rng)
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    while written < budget:
        kind, make = rng.choice(makers)
        size = min(rng.randint(CHUNK // 4, 16 * CHUNK), budget - written)
        (dest / f"{written:012d}.{kind}").write_bytes(make(size))
        written += size
    return written


def _data_makers(rng: random.Random) -> list[tuple[str, Callable[[int], bytes]]]:
    syllables = [c + v for c in "bdfgklmnprstz" for v in "aeiou"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(4000)]
    numbers = [f"{rng.lognormvariate(3, 2):.3f}" for _ in range(20000)]

    def rows(tokens: list[str], per_row: int, sep: str, size: int) -> bytes:
        picked = rng.choices(tokens, k=size // 5)
        lines = (sep.join(picked[i : i + per_row]) for i in range(0, len(picked), per_row))
        return "\n".join(lines).encode()[:size].ljust(size, b"\n")

    def records(size: int) -> bytes:
        out = bytearray(rng.randbytes(4096))
        while len(out) < size:  # fresh bytes, then a run repeated from the last 4 KiB
            out += rng.randbytes(rng.randint(32, 128))
            start = rng.randrange(len(out) - 4096, len(out) - 256)
            out += out[start : start + rng.randint(32, 256)]
        return bytes(out[:size])

    return [
        ("log", lambda size: rows(words, 12, " ", size)),
        ("csv", lambda size: rows(numbers, 8, ",", size)),
        ("bin", records),
    ]


def _docker_save(context: Path, path: Path) -> None:
    """Build the image in a private engine (tests/support/dockerd.py) and ``docker save`` it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.dockerd import DockerEngine  # a private dockerd, stopped and cleaned up on exit

    partial = path.with_name(path.name + ".partial")
    with DockerEngine() as engine:
        engine.import_busybox_base(BASE_TAG)
        log("  docker build ...")
        build = ("build", "--network", "none", "-q", "-t", IMAGE_TAG, str(context))
        engine.docker(*build, timeout=1800)
        log("  docker save ...")
        engine.save(partial, IMAGE_TAG)
    partial.replace(path)


# ---------------------------------------------------------------------------- the baseline


@dataclass(frozen=True)
class BaselineLayer:
    name: str
    raw_bytes: int
    gzip_bytes: int


def naive_gzip_layers(source: IO[bytes], outdir: Path) -> list[BaselineLayer]:
    """The plain-Python way: ``tarfile`` in stream mode over a ``docker save``, each layer
    gzipped at level 9 to ``outdir``/<n>.tar.gz, one thread, no digests.

    A layer is any member that is itself a tar (ustar magic), which covers ``<id>/layer.tar``
    of the legacy form and ``blobs/sha256/<hex>`` of the Docker >= 25 form.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    done: list[BaselineLayer] = []
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            src = tar.extractfile(member) if member.isfile() else None
            head = src.read(512) if src else b""
            if src is None or head[257:262] != b"ustar":
                continue
            out_path = outdir / f"{len(done)}.tar.gz"
            with gzip.open(out_path, "wb", compresslevel=9) as out:
                out.write(head)
                shutil.copyfileobj(src, out, CHUNK)
            done.append(BaselineLayer(member.name, member.size, out_path.stat().st_size))
    return done


def baseline_argv(archive: Path, outdir: Path) -> list[str]:
    """The command that runs :func:`naive_gzip_layers` as a process of its own."""
    return [sys.executable, str(Path(__file__).resolve()), "baseline", str(archive), str(outdir)]


# ---------------------------------------------------------------------------- reports


@dataclass
class Row:
    """One tool's line of a report; ratios are against the reference row (skopeo)."""

    tool: str
    input: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    MB_per_s: float | None = None
    speed_vs_ref: float | None = None
    output_MB: float | None = None
    size_vs_ref: float | None = None
    peak_rss_MB: float | None = None
    others_cpu_pct: int | None = None
    error: str | None = None

    @classmethod
    def measured(cls, tool: str, input: str, usage: Usage, input_bytes: int, out: int) -> Row:
        return cls(
            tool,
            input,
            seconds=round(usage.seconds, 2),
            cpu_seconds=round(usage.cpu_seconds, 1),
            MB_per_s=round(input_bytes / MB / usage.seconds, 1),
            output_MB=round(out / MB, 1),
            peak_rss_MB=round(usage.max_rss_kb / 1024, 1),
            others_cpu_pct=round(100 * usage.others_share),
        )

    def compare_to(self, ref: Row) -> None:
        if self.seconds and ref.seconds:
            self.speed_vs_ref = round(ref.seconds / self.seconds, 2)
        if self.output_MB and ref.output_MB:
            self.size_vs_ref = round(self.output_MB / ref.output_MB, 3)


COLUMNS = (  # (field, header, width)
    ("tool", "tool", 10),
    ("input", "input", 6),
    ("seconds", "wall s", 8),
    ("cpu_seconds", "cpu s", 7),
    ("MB_per_s", "MB/s", 8),
    ("speed_vs_ref", "x skopeo", 9),
    ("output_MB", "out MB", 8),
    ("size_vs_ref", "size/sk", 8),
    ("peak_rss_MB", "RSS MB", 8),
    ("others_cpu_pct", "others%", 9),
)


def format_table(rows: Sequence[Row]) -> str:
    lines = [_cells([c[1] for c in COLUMNS])]
    for row in rows:
        if row.error:
            lines.append(_cells([row.tool, row.input, "FAILED"]))
            lines.append(f"    {row.error.splitlines()[0][:200]}")
        else:
            values = asdict(row)
            lines.append(
                _cells(["-" if values[c[0]] is None else str(values[c[0]]) for c in COLUMNS])
            )
    return "\n".join(lines)


def _cells(values: Sequence[str]) -> str:
    """The first two columns left-aligned, the figures right-aligned."""
    return "".join(
        f"{v:<{c[2]}}" if i < 2 else f"{v:>{c[2]}}"
        for i, (v, c) in enumerate(zip(values, COLUMNS, strict=False))
    ).rstrip()


def log(message: str) -> None:
    """Progress goes to stderr, so that ``--json`` keeps stdout clean."""
    print(message, file=sys.stderr, flush=True)


def _main(argv: Sequence[str]) -> None:
    match argv:
        case ["baseline", "-", outdir]:
            naive_gzip_layers(sys.stdin.buffer, Path(outdir))
        case ["baseline", archive, outdir]:
            with open(archive, "rb") as source:
                naive_gzip_layers(source, Path(outdir))
        case ["archive", size_gb, path]:
            generate_archive(float(size_gb), Path(path))
        case _:
            raise SystemExit("usage: common.py baseline ARCHIVE|- OUTDIR | archive SIZE_GB PATH")


if __name__ == "__main__":
    _main(sys.argv[1:])


def best_of(results: dict[str, list[Usage]]) -> dict[str, dict[str, float]]:
    """Per job: the fastest run's wall and CPU seconds, and the highest peak RSS of all runs."""
    report = {}
    for key, usages in results.items():
        best = min(usages, key=lambda u: u.seconds)
        report[key] = {
            "seconds": round(best.seconds, 2),
            "cpu_seconds": round(best.cpu_seconds, 1),
            "peak_rss_MB": round(max(u.max_rss_kb for u in usages) / 1024, 1),
        }
    return report


def print_jobs(report: dict[str, Any], keys: Sequence[str], width: int = 22) -> None:
    """The machine, then a table of the jobs' wall s, CPU s and peak RSS."""
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print(f"\n{'job':{width}} {'wall s':>7} {'cpu s':>6} {'RSS MB':>7}")
    for key in keys:
        r = report[key]
        print(f"{key:{width}} {r['seconds']:7} {r['cpu_seconds']:6} {r['peak_rss_MB']:7}")


def print_aims(aims: dict[str, bool]) -> None:
    print("aims: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in aims.items()))
