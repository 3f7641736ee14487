"""Every row of issue 16's table in one run: ocikit beside the tool a user would pick.

    python bench/bench_all.py [--quick] [--runs N] [--rows KEY,...] [--json]
                              [--size-gb 1.2] [--tree-files 20000] [--ocikit PATH]

Per row the sides run interleaved (ocikit, peer, ocikit, peer, ...), each run into a fresh
output that is checked (the image is whole) before it counts; the fastest of --runs counts
for wall and CPU seconds, the highest peak RSS of all runs is shown. "vs peer" is ocikit's
wall time over the peer's; the aim is the issue's. --quick: a 0.06 GB image of few files
and a 2,000-file tree, to check the harness itself (its figures say little about the aims).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_check import LAYOUT, TAG, count_files, ensure_layout, remove, source_state
from bench_copy import copy_case
from common import (
    OCIKIT,
    ROOT,
    WORK,
    RunFailed,
    Usage,
    check_gzip_layout,
    describe_archive,
    ensure_archive,
    log,
    machine_facts,
    measure,
    rss_floor_kb,
    skopeo_argv,
    tool_version,
    warm_page_cache,
)
from save_floor import c_work

HERE = WORK / "all"  # this benchmark's inputs and outputs (gitignored)
SIZE_GB, QUICK_SIZE_GB = 1.2, 0.06  # the image
TREE_FILES, QUICK_TREE_FILES = 20_000, 2_000  # the tree
RUN_STEP = "echo x > /f"
LIMIT_SHARE = 0.9  # check: the aim, 280 MB/s of a ~310 MB/s limit
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ROWS = ("short", "repush", "run", "pull", "repull", "push", "tree", "check", "save", "unpack")

#: the machine's limit for a check: per layer, the blob's sha256 beside an inflate piped into
#: a sha256 of the tar (what a one-pass check must compute at least), C tools only, three
#: processes on the cores; prints "<blob sha256> <tar sha256>" per layer to $1
LIMIT_SH = """\
out=$1; shift
: > "$out"
for blob; do
  openssl dgst -sha256 -r "$blob" > "$out.blob" &
  tar=$(igzip -dc < "$blob" | openssl dgst -sha256 -r)
  wait $!
  echo "$(cut -d' ' -f1 "$out.blob") ${tar%% *}" >> "$out"
done
rm -f "$out.blob"
"""

#: the same in Python where igzip is missing: isal (one thread) and hashlib
LIMIT_PY = """\
import hashlib, sys
from isal import igzip
out = open(sys.argv[1], "w")
for path in sys.argv[2:]:
    blob, tar = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as raw:
        while chunk := raw.read(1 << 20):
            blob.update(chunk)
    with igzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            tar.update(chunk)
    print(blob.hexdigest(), tar.hexdigest(), file=out)
"""


# ---------------------------------------------------------------------------- sides and lines


def _nothing(_run: int) -> None:
    return None


@dataclass
class Side:
    """One tool's part of a line: the commands of run ``i`` (timed one after the other, their
    figures added up), what is done untimed before them and what must hold after them."""

    tool: str
    steps: Callable[[int], list[list[str]]]
    before: Callable[[int], None] = _nothing
    check: Callable[[int], object] = _nothing  # what it returns is not used
    usages: list[Usage] = field(default_factory=list)
    error: str | None = None
    commands: list[str] = field(default_factory=list)  # of the first run

    def run(self, i: int) -> None:
        if self.error:
            return
        try:
            self.before(i)
            steps = self.steps(i)
            self.commands = self.commands or [shlex.join(argv) for argv in steps]
            usages = [measure(argv) for argv in steps]
            self.check(i)
        except (RunFailed, OSError, KeyError, ValueError, subprocess.CalledProcessError) as exc:
            self.error = (str(exc) or type(exc).__name__).strip()
            return
        self.usages.append(
            Usage(
                sum(u.seconds for u in usages),
                sum(u.cpu_seconds for u in usages),
                max(u.max_rss_kb for u in usages),
                sum(u.others_cpu_seconds for u in usages),
            )
        )

    def figures(self) -> dict[str, Any]:
        if self.error or not self.usages:
            error = " ".join((self.error or "not run").split())  # one line
            return {"tool": self.tool, "error": error, "commands": self.commands}
        best = min(self.usages, key=lambda u: u.seconds)
        return {
            "tool": self.tool,
            "seconds": round(best.seconds, 3),
            "cpu_seconds": round(best.cpu_seconds, 2),
            "peak_rss_MB": round(max(u.max_rss_kb for u in self.usages) / 1024, 1),
            "others_cpu_pct": round(100 * best.others_share),
            "all_seconds": [round(u.seconds, 3) for u in self.usages],
            "commands": self.commands,
        }


@dataclass(frozen=True)
class Aim:
    """The issue's aim for a line: ocikit's wall time at most ``max_ratio`` times the peer's,
    or at most ``max_seconds``."""

    text: str
    max_ratio: float | None = None
    max_seconds: float | None = None

    def met(self, seconds: float, ratio: float | None) -> bool | None:
        if self.max_seconds is not None:
            return seconds < self.max_seconds
        if self.max_ratio is not None and ratio is not None:
            return ratio <= self.max_ratio
        return None


@dataclass
class Line:
    """One line of the table: ocikit (``sides[0]``) beside its peer (``sides[1]``) and any
    other peers; ``input_bytes`` gives MB/s; ``setup`` runs once, untimed, before the runs;
    ``judge`` sees the figures of all sides at the end and may name what is wrong."""

    key: str
    row: str
    command: str
    sides: list[Side]
    aim: Aim
    input_bytes: int | None = None
    setup: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None  # after the runs, untimed
    judge: Callable[[list[Side]], str | None] = lambda sides: None
    facts: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        sides = [s.figures() for s in self.sides]
        for side in sides:
            if self.input_bytes and side.get("seconds"):
                side["MB_per_s"] = round(self.input_bytes / 1e6 / side["seconds"], 1)
        ours, peer = sides[0], sides[1]
        ratio = None
        if ours.get("seconds") and peer.get("seconds"):
            ratio = round(ours["seconds"] / peer["seconds"], 2)
        met = self.aim.met(ours["seconds"], ratio) if "seconds" in ours else None
        wrong = self.judge(self.sides)
        return {
            "key": self.key,
            "row": self.row,
            "command": self.command,
            "sides": sides,
            "ratio_vs_peer": ratio,
            "aim": self.aim.text,
            "met": None if wrong else met,
            "input_MB": round(self.input_bytes / 1e6, 1) if self.input_bytes else None,
            **({"problem": wrong} if wrong else {}),
            **self.facts,
        }


# ---------------------------------------------------------------------------- checks of outputs


def child(*args: str) -> str:
    """This script in a child process (``child ...``): the work there, its memory not here
    (Linux makes this process's peak RSS a floor of every measured one)."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "child", *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RunFailed(f"child {args[0]}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def verify_layout(
    layout: Path, ref: str, layers: int, files: int | None = None, content: str | None = None
) -> str:
    """The image ``ref`` of ``layout`` is whole: every blob hashes to its digest, each layer
    to its diff_id (streamed, in a child); ``files``: the regular files of the last layer;
    ``content``: ``NAME=TEXT``, a file of the last layer and its content. Returns what was
    odd but not wrong (a tar without its end, all entries there)."""
    args = ["verify", str(layout), ref, str(layers), str(-1 if files is None else files)]
    return child(*args, *([content] if content else [])).strip()


def verify_registry(host: str, repo: str, tag: str, layers: int) -> None:
    """The registry serves the manifest of ``repo:tag`` and every blob it names, at its size
    (asked by a child: http.client would add megabytes to this process)."""
    child("registry-check", host, repo, tag, str(layers))


def _registry_check(host: str, repo: str, tag: str, layers: int) -> None:
    import http.client

    conn = http.client.HTTPConnection(host, timeout=60)
    try:
        accept = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
        conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
        response = conn.getresponse()
        body = response.read(4 << 20)
        if response.status != 200:
            raise RunFailed(f"{host}/{repo}:{tag}: manifest answered {response.status}")
        manifest = json.loads(body)
        if len(manifest["layers"]) != layers:
            raise RunFailed(f"{repo}:{tag}: {len(manifest['layers'])} layers, not {layers}")
        for desc in [manifest["config"], *manifest["layers"]]:
            conn.request("HEAD", f"/v2/{repo}/blobs/{desc['digest']}")
            head = conn.getresponse()
            head.read()
            size = head.getheader("Content-Length")
            if head.status != 200 or size != str(desc["size"]):
                raise RunFailed(f"{repo}: blob {desc['digest']}: {head.status}, size {size}")
    finally:
        conn.close()


def buildah_layers(buildah: list[str], image: str, layers: int) -> Callable[[int], None]:
    """A check: buildah's storage holds ``image`` with ``layers`` layers."""

    def check(_run: int) -> None:
        proc = subprocess.run(
            [*buildah, "inspect", "--type", "image", image], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RunFailed(f"buildah inspect {image}: {proc.stderr.strip()[-300:]}")
        got = len(json.loads(proc.stdout)["OCIv1"]["rootfs"]["diff_ids"])
        if got != layers:
            raise RunFailed(f"buildah image {image}: {got} layers, not {layers}")

    return check


# ---------------------------------------------------------------------------- the inputs


@dataclass
class Inputs:
    archive: Path
    archive_bytes: int
    layout: Path  # the archive as an OCI layout with gzip layers (tag TAG)
    layers: int
    blobs: list[Path]
    blob_bytes: int
    busybox: Path  # a small OCI layout (tag "busybox"): busybox-static and its applets
    tree_dir: Path  # holds tree/ (N small files) and tree.yaml
    tree_files: int


def prepare(size_gb: float, tree_files: int, ocikit: Path, quick: bool) -> Inputs:
    """Everything the runs read, made once and cached under bench/work (in child processes).

    The image is the ``docker save`` of bench_copy.py; with ``quick`` one of few files (host
    files from /usr/bin, application data): a small image of that kind still holds ~15,000
    entries, and unpacking them dominates a quick run on a slow disk."""
    if quick:
        archive = WORK / f"bench-{size_gb:g}g-few-files.docker.tar"
        if not archive.exists():
            log(f"generating {archive} ...")
            child("few-files-archive", str(size_gb), str(archive))
        layout_path = HERE / f"layout-{size_gb:g}g-few-files"
    else:
        archive = ensure_archive(size_gb)
        layout_path = LAYOUT if size_gb == SIZE_GB else HERE / f"layout-{size_gb:g}g"
    layout = ensure_layout(archive, ocikit, False, layout_path)
    busybox = HERE / "busybox"
    if not (busybox / "index.json").exists():
        child("busybox", str(busybox))
    tree_dir = HERE / f"tree-{tree_files}"
    if not (tree_dir / "ready").exists():
        log(f"generating a {tree_files}-file tree ...")
        child("tree", str(tree_dir), str(tree_files))
    return Inputs(
        archive=archive,
        archive_bytes=archive.stat().st_size,
        layout=layout.path,
        layers=layout.layers,
        blobs=list(layout.blobs),
        blob_bytes=layout.compressed_bytes,
        busybox=busybox,
        tree_dir=tree_dir,
        tree_files=tree_files,
    )


def warm(inputs: Inputs) -> None:
    """Every input read once, so that every tool reads it from the page cache."""
    warm_page_cache(inputs.archive)
    for blob in inputs.blobs:
        warm_page_cache(blob)
    subprocess.run(
        ["sh", "-c", 'find "$1" -type f -exec cat {} + > /dev/null', "sh", str(inputs.tree_dir)],
        check=True,
    )


class RegistryProcess:
    """``docker-registry`` on 127.0.0.1 (tests/support/registry.py), kept by a child process
    until its stdin closes: this process would grow by the http modules that code imports."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "child", "registry"]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        self.host = self._proc.stdout.readline().decode().strip()
        if not self.host:
            self.stop()
            raise RunFailed("docker-registry did not start")

    def stop(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Registries:
    """One registry kept for the whole run (``main``) and fresh ones on demand (``fresh()``
    stops the previous fresh one), all stopped by ``close``."""

    def __init__(self) -> None:
        self.main = RegistryProcess()
        self._fresh: RegistryProcess | None = None

    def fresh(self) -> RegistryProcess:
        if self._fresh is not None:
            self._fresh.stop()
        self._fresh = RegistryProcess()
        return self._fresh

    def close(self) -> None:
        for registry in (self._fresh, self.main):
            if registry is not None:
                registry.stop()


class Buildah:
    """buildah with a private storage under bench/work/all/buildah, runc (crun needs a
    cgroup setup this machine may not have) and no network, as ocikit's run steps."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.argv = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run")]
        self.storage = f"containers-storage:[overlay@{root / 'root'}+{root / 'run'}]"

    def rm(self, *names: str) -> None:
        subprocess.run([*self.argv, "rm", *names], capture_output=True)

    def close(self) -> None:
        """Containers and images removed, then the storage."""
        if shutil.which("buildah") and self.root.exists():
            subprocess.run([*self.argv, "rm", "--all"], capture_output=True)
            subprocess.run([*self.argv, "rmi", "--all", "--force"], capture_output=True)
        remove(self.root)


# ---------------------------------------------------------------------------- the lines


def always(argv: list[str]) -> Callable[[int], list[list[str]]]:
    """The steps of a side that runs one command, the same every run."""
    return lambda _run: [argv]


def short_lines(inputs: Inputs, ocikit: str, skopeo: list[str]) -> list[Line]:
    small = inputs.busybox
    pairs = [
        ("--help", [ocikit, "--help"], [*skopeo, "--help"]),
        ("--version", [ocikit, "--version"], [*skopeo, "--version"]),
        (
            "inspect oci:SMALL",
            [ocikit, "inspect", f"oci:{small}:busybox"],
            [*skopeo, "inspect", f"oci:{small}:busybox"],
        ),
    ]
    lines = []
    for what, ours, theirs in pairs:

        def warm_up(ours: list[str] = ours, theirs: list[str] = theirs) -> None:
            for argv in (ours, theirs):
                subprocess.run(argv, capture_output=True)

        lines.append(
            Line(
                "short",
                "short command",
                what,
                [Side("ocikit", always(ours)), Side("skopeo", always(theirs))],
                Aim("< 0.12 s", max_seconds=0.12),
                setup=warm_up,
            )
        )
    return lines


def registry_lines(
    inputs: Inputs, ocikit: str, skopeo: list[str], registries: Registries
) -> dict[str, Line]:
    src = f"oci:{inputs.layout}:{TAG}"
    out = HERE / "out"
    host = registries.main.host
    ours_copy = [ocikit, "copy", "-q"]
    sk_push = [*skopeo, "copy", "-q", "--dest-tls-verify=false"]
    sk_pull = [*skopeo, "copy", "-q", "--src-tls-verify=false"]

    def first_pushes() -> None:  # the image once in the registry: untimed
        for argv in (
            [*ours_copy, src, f"docker://{host}/again-ocikit:1"],
            [*sk_push, src, f"docker://{host}/again-skopeo:1"],
            [*sk_push, src, f"docker://{host}/big:1"],
            [*sk_push, src, f"docker://{host}/again-python:1"],
            [*sk_push, src, f"docker://{host}/again-stdlib:1"],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    # the plain-Python baselines: the standard library's HTTP alone, and with click imported as
    # ocikit's command line imports it (what any Python command costs before its own code)
    stdlib = [sys.executable, str(Path(__file__).with_name("repush_floor.py"))]
    floor = [*stdlib, "--click"]

    def pushed(repo: str, where: Callable[[], str]) -> Callable[[int], None]:
        return lambda i: verify_registry(where(), repo, "1", inputs.layers)

    repush = Line(
        "repush",
        "re-push of an unchanged image",
        "copy oci:BIG docker://127.0.0.1:PORT/x (second time)",
        [
            Side(
                "ocikit",
                lambda i: [[*ours_copy, src, f"docker://{host}/again-ocikit:1"]],
                check=pushed("again-ocikit", lambda: host),
            ),
            Side(
                "skopeo",
                lambda i: [[*sk_push, src, f"docker://{host}/again-skopeo:1"]],
                check=pushed("again-skopeo", lambda: host),
            ),
            Side(
                "python+click",
                lambda i: [[*floor, str(inputs.layout), TAG, host, "again-python", "1"]],
                check=pushed("again-python", lambda: host),
            ),
            Side(
                "python",
                lambda i: [[*stdlib, str(inputs.layout), TAG, host, "again-stdlib", "1"]],
                check=pushed("again-stdlib", lambda: host),
            ),
        ],
        Aim("<= 2x skopeo", max_ratio=2.0),
        setup=first_pushes,
    )

    def pulled(tool: str) -> Path:
        return out / f"pull-{tool}"

    def pull_side(tool: str, argv: list[str], record: Path | None = None) -> Side:
        """``record``: ocikit's ``$XDG_CACHE_HOME``, emptied before each run (a first pull:
        no layer verified before, every diff_id computed); None: the user's, as it is."""

        def before(_run: int) -> None:
            remove(pulled(tool))
            if record is not None:
                remove(record)

        env = ["env", f"XDG_CACHE_HOME={record}"] if record is not None else []
        return Side(
            tool,
            lambda i: [[*env, *argv, f"docker://{host}/big:1", f"oci:{pulled(tool)}:{TAG}"]],
            before=before,
            check=lambda i: verify_layout(pulled(tool), TAG, inputs.layers),
        )

    pull = Line(
        "pull",
        "pull from a local registry to oci:",
        "copy docker://127.0.0.1:PORT/big oci:OUT, its layers never verified before",
        [pull_side("ocikit", ours_copy, out / "pull-xdg"), pull_side("skopeo", sk_pull)],
        Aim("<= 1.2x skopeo, diff_ids verified", max_ratio=1.2),
        input_bytes=inputs.blob_bytes,
        setup=first_pushes,  # the image in the registry, whichever rows run
    )

    def verified_once() -> None:  # the pull's layers in the user's record: untimed
        first_pushes()
        argv = [*ours_copy, f"docker://{host}/big:1", f"oci:{pulled('ocikit')}:{TAG}"]
        subprocess.run(argv, check=True, capture_output=True)

    repull = Line(
        "repull",
        "re-pull of layers ocikit verified",
        "the same pull, the user's record of verified layers knowing its layers",
        [pull_side("ocikit", ours_copy), pull_side("skopeo", sk_pull)],
        Aim("<= 1.2x skopeo (the pull row's)", max_ratio=1.2),
        input_bytes=inputs.blob_bytes,
        setup=verified_once,
    )

    fresh: dict[str, str] = {}

    def new_registry(_run: int) -> None:
        fresh["host"] = registries.fresh().host

    def push_side(tool: str, argv: list[str]) -> Side:
        return Side(
            tool,
            lambda i: [[*argv, src, f"docker://{fresh['host']}/fresh-{i}:1"]],
            before=new_registry,
            check=lambda i: verify_registry(fresh["host"], f"fresh-{i}", "1", inputs.layers),
        )

    push = Line(
        "push",
        "push to a fresh registry",
        "copy oci:BIG docker://127.0.0.1:PORT/fresh-N",
        [push_side("ocikit", ours_copy), push_side("skopeo", sk_push)],
        Aim("<= 1x skopeo", max_ratio=1.0),
        input_bytes=inputs.blob_bytes,
    )
    return {"repush": repush, "pull": pull, "repull": repull, "push": push}


def run_line(inputs: Inputs, ocikit: str, buildah: Buildah) -> Line:
    here = HERE / "run"
    recipe = here / "run.yaml"
    cache, out = here / "cache", here / "out"
    build = [ocikit, "build", "-q", "-f", str(recipe), "--cache-dir", str(cache)]
    base_image = "localhost/ocikit-bench-busybox:1"
    b = buildah.argv
    run = [*b, "run", "--runtime", "runc", "--network", "none"]

    def setup() -> None:
        """The base in each tool's store, and one step run, untimed: the timed runs measure
        the step, not the first import of the base."""
        remove(here)
        here.mkdir(parents=True)
        recipe.write_text(
            "images:\n  step:\n"
            f"    from: oci:{inputs.busybox}:busybox\n"
            f"    run: {json.dumps(RUN_STEP)}\n"
            "    cache: false\n"
        )
        subprocess.run([*build, "--output", f"oci:{out}"], check=True, capture_output=True)
        copy = [*skopeo_argv(), "copy", "-q", f"oci:{inputs.busybox}:busybox"]
        subprocess.run([*copy, buildah.storage + base_image], check=True, capture_output=True)
        buildah.rm("bench-run")
        for argv in buildah_steps(0):
            subprocess.run(argv, check=True, capture_output=True)

    def buildah_steps(_run: int) -> list[list[str]]:
        return [
            [*b, "from", "-q", "--name", "bench-run", base_image],
            [*run, "bench-run", "sh", "-c", RUN_STEP],
            [*b, "commit", "-q", "bench-run", "ocikit-bench-run:1"],
        ]

    return Line(
        "run",
        "RUN step",
        f"FROM busybox + RUN {RUN_STEP}",
        [
            Side(
                "ocikit",
                lambda i: [[*build, "--output", f"oci:{out}"]],
                before=lambda i: remove(out),
                check=lambda i: verify_layout(out, "step", 2, content="f=x\n"),
            ),
            Side(
                "buildah",
                buildah_steps,
                before=lambda i: buildah.rm("bench-run"),
                check=buildah_layers(b, "localhost/ocikit-bench-run:1", 2),
            ),
        ],
        Aim("<= 1x buildah", max_ratio=1.0),
        setup=setup,
    )


def tree_line(inputs: Inputs, ocikit: str, buildah: Buildah) -> Line:
    here = HERE / "out" / "tree"
    tree = inputs.tree_dir / "tree"
    cache, out, umoci = here / "cache", here / "oci", here / "umoci"
    n = inputs.tree_files
    build = [ocikit, "build", "-q", "-f", str(inputs.tree_dir / "tree.yaml")]
    b = buildah.argv

    def umoci_image(_run: int) -> None:  # an empty image to insert into: untimed
        remove(umoci)
        subprocess.run(["umoci", "init", "--layout", str(umoci)], check=True)
        subprocess.run(["umoci", "new", "--image", f"{umoci}:t"], check=True)

    def fresh_build(_run: int) -> None:
        remove(cache)
        remove(out)

    facts: dict[str, Any] = {}

    def umoci_check(_run: int) -> None:
        """umoci 0.4.7 ends a layer without the tar's last padding and end-of-archive blocks
        (umoci issue 436): counted when every entry is there, and said."""
        if odd := verify_layout(umoci, "t", 1, files=n):
            facts["umoci_insert_layer"] = f"{odd} (umoci 0.4.7; umoci issue 436)"

    return Line(
        "tree",
        f"{n:,}-file tree as a layer",
        "build of a recipe importing the tree",
        [
            Side(
                "ocikit",
                lambda i: [[*build, "--cache-dir", str(cache), "--output", f"oci:{out}"]],
                before=fresh_build,
                check=lambda i: verify_layout(out, "tree", 1, files=n),
            ),
            Side(
                "umoci insert",
                lambda i: [["umoci", "insert", "--image", f"{umoci}:t", str(tree), "/tree"]],
                before=umoci_image,
                check=umoci_check,
            ),
            Side(
                "buildah copy",
                lambda i: [
                    [*b, "from", "-q", "--name", "bench-tree", "scratch"],
                    [*b, "copy", "-q", "bench-tree", str(tree), "/tree"],
                    [*b, "commit", "-q", "bench-tree", "ocikit-bench-tree:1"],
                ],
                before=lambda i: buildah.rm("bench-tree"),
                check=buildah_layers(b, "localhost/ocikit-bench-tree:1", 1),
            ),
        ],
        Aim("<= 1x umoci insert", max_ratio=1.0),
        input_bytes=count_files(tree)[1],
        facts=facts,
    )


def check_line(inputs: Inputs, ocikit: str) -> Line:
    result = HERE / "out" / "limit.txt"
    blobs = [str(p) for p in inputs.blobs]
    if shutil.which("igzip") and shutil.which("openssl"):
        script, run = HERE / "limit.sh", "sh"
        how = "igzip -dc | openssl sha256, beside openssl sha256 of the blob, layer by layer"
    else:
        script, run = HERE / "limit.py", sys.executable
        how = "python: isal.igzip + hashlib (no igzip or openssl here), layer by layer"
    script.write_text(LIMIT_SH if run == "sh" else LIMIT_PY)
    limit = [run, str(script), str(result), *blobs]

    def limit_check(_run: int) -> None:
        """The pipeline computed every blob's digest and every layer's diff_id."""
        got = [line.split() for line in result.read_text().splitlines()]
        config = json.loads(child("config", str(inputs.layout), TAG))
        want = [
            [p.name, d.split(":", 1)[1]]
            for p, d in zip(inputs.blobs, config["rootfs"]["diff_ids"], strict=True)
        ]
        if got != want:
            raise RunFailed(f"the limit's digests differ from the image's: {got} != {want}")

    line = Line(
        "check",
        "check of a gzip image",
        "check oci:BIG (MB/s of compressed input)",
        [
            Side("ocikit", lambda i: [[ocikit, "check", "-q", f"oci:{inputs.layout}:{TAG}"]]),
            Side(
                "limit", lambda i: [limit], before=lambda i: result.unlink(True), check=limit_check
            ),
        ],
        Aim(f">= {LIMIT_SHARE:.0%} of the limit (issue: >= 280 MB/s)", max_ratio=1 / LIMIT_SHARE),
        input_bytes=inputs.blob_bytes,
    )
    line.facts["the_limit"] = how
    return line


def save_line(inputs: Inputs, ocikit: str, skopeo: list[str]) -> Line:
    gzip = ["--dest-compress-format", "gzip"]
    source = f"docker-archive:{inputs.archive}"
    layers = describe_archive(inputs.archive).layers

    def side(tool: str, prefix: list[str]) -> Side:
        out = HERE / "out" / f"save-{tool}"
        case = copy_case(tool, prefix, gzip, source)  # bench_copy.py's commands

        def check(_run: int) -> None:
            check_gzip_layout(out, layers)
            verify_layout(out, "bench", layers)

        return Side(tool, lambda i: [case.argv(out)], before=lambda i: remove(out), check=check)

    line = Line(
        "save",
        "docker save -> oci",
        "copy docker-archive:BIG.tar oci:OUT (gzip)",
        [side("ocikit", [ocikit]), side("skopeo", skopeo)],
        Aim(">= 4.5x faster than skopeo", max_ratio=1 / 4.5),
        input_bytes=inputs.archive_bytes,
    )

    def floor() -> None:
        """The C work alone (save_floor.py), untimed: the least time any converter can take."""
        found = c_work(str(inputs.archive))
        line.facts["c_work_alone"] = (
            " + ".join(f"{k} {v:.2f}" for k, v in found["cpu_s"].items())
            + f" = {found['total_cpu_s']:.2f} CPU s: no conversion under {found['floor_s']:.2f} s"
            f" on {found['cores']} cores (bench/save_floor.py)"
        )

    line.setup = floor
    return line


def unpack_line(inputs: Inputs, ocikit: str) -> Line:
    """Each run unpacks into a directory of its own, all removed after the runs: a tree of
    33k files deleted just before a timed unpack made both tools 3-4x slower, in system
    time (ext4 mounted with online discard here: creating files after gigabytes were
    deleted costs the allocator; see the README)."""
    out = HERE / "out"

    def ours(i: int) -> Path:
        return out / f"unpack-ocikit-{i}"

    def bundle(i: int) -> Path:
        return out / f"unpack-umoci-{i}"

    counts: dict[str, tuple[int, int]] = {}

    def counted(tool: str, tree: Callable[[int], Path]) -> Callable[[int], None]:
        def check(run: int) -> None:
            counts[tool] = count_files(tree(run))
            if counts[tool][0] == 0:
                raise RunFailed(f"{tree(run)}: no files")

        return check

    def remove_all() -> None:
        for path in out.glob("unpack-*"):
            remove(path)

    def judge(_sides: list[Side]) -> str | None:
        if len(counts) == 2 and counts["ocikit"] != counts["umoci"]:
            return f"files and bytes differ: ocikit {counts['ocikit']}, umoci {counts['umoci']}"
        return None

    umoci = ["umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"])]
    line = Line(
        "unpack",
        "unpack",
        "unpack oci:BIG DIR",
        [
            Side(
                "ocikit",
                lambda i: [[ocikit, "unpack", "-q", f"oci:{inputs.layout}:{TAG}", str(ours(i))]],
                check=counted("ocikit", ours),
            ),
            Side(
                "umoci",
                lambda i: [[*umoci, "--image", f"{inputs.layout}:{TAG}", str(bundle(i))]],
                check=counted("umoci", lambda i: bundle(i) / "rootfs"),
            ),
        ],
        Aim("<= 1x umoci (keep)", max_ratio=1.0),
        input_bytes=inputs.blob_bytes,
        setup=remove_all,
        teardown=remove_all,
        judge=judge,
    )
    line.facts["files_and_bytes"] = counts  # filled by the checks
    return line


# ---------------------------------------------------------------------------- running, reports


def run_lines(lines: Sequence[Line], runs: int) -> None:
    """Per line: its setup, then ``runs`` rounds of every side in turn (A, B, A, B, ...)."""
    start = time.monotonic()
    for line in lines:
        log(f"[{time.monotonic() - start:5.0f} s] {line.row}: {line.command} ...")
        try:
            line.setup()
        except (OSError, subprocess.CalledProcessError, RunFailed) as exc:
            detail = getattr(exc, "stderr", None) or b""
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            for side in line.sides:
                side.error = f"setup failed: {exc} {detail.strip()[-300:]}".strip()
            continue
        for i in range(runs):
            for side in line.sides:
                side.run(i)
        line.teardown()


def missing_tools(line: Line) -> str | None:
    needed = {"repush": ["skopeo"], "pull": ["skopeo"], "push": ["skopeo"], "save": ["skopeo"]}
    needed |= {"repull": ["skopeo"]}
    needed |= {"short": ["skopeo"], "run": ["buildah", "runc", "skopeo"], "unpack": ["umoci"]}
    needed |= {"tree": ["umoci"]}
    gone = [tool for tool in needed.get(line.key, []) if shutil.which(tool) is None]
    return f"not installed: {', '.join(gone)}" if gone else None


def buildah_version() -> str:
    """``buildah version 1.28.2 (image-spec ...)``: the third word."""
    try:
        proc = subprocess.run(["buildah", "--version"], capture_output=True, text=True)
    except OSError:
        return "missing"
    words = proc.stdout.split()
    return words[2] if proc.returncode == 0 and len(words) > 2 else "not working"


def ratio_words(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 1:
        return f"{ratio:.2f}x slower"
    return f"{1 / ratio:.2f}x faster"


def print_table(report: dict[str, Any]) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    sizes = report["inputs"]
    print(
        f"inputs: {sizes['archive']} ({sizes['archive_MB']} MB), layout {sizes['layout']}"
        f" ({sizes['layers']} gzip layers, {sizes['blob_MB']} MB of blobs),"
        f" tree of {sizes['tree_files']} files; best of {report['runs']} runs"
        + (" (--quick)" if report["quick"] else "")
    )
    for note in report["notes"]:
        print(f"note: {note}")
    head = (
        f"\n{'row':36} {'tool':13} {'wall s':>7} {'cpu s':>6} {'RSS MB':>7} {'MB/s':>7}"
        f" {'others%':>7}  {'vs peer':>13}  aim"
    )
    print(head)
    for line in report["lines"]:
        title = f"{line['row']}: {line['command']}" if line["key"] == "short" else line["row"]
        for n, side in enumerate(line["sides"]):
            label = title if n == 0 else ""
            if "error" in side:
                print(f"{label[:36]:36} {side['tool']:13} FAILED: {side['error'][:300]}")
                continue
            cells = (
                f"{label[:36]:36} {side['tool']:13} {side['seconds']:7.2f}"
                f" {side['cpu_seconds']:6.2f} {side['peak_rss_MB']:7.1f}"
                f" {side.get('MB_per_s', '-'):>7} {side['others_cpu_pct']:7}"
            )
            if n == 0:
                met = {True: "yes", False: "NO", None: "n/a"}[line["met"]]
                cells += f"  {ratio_words(line['ratio_vs_peer']):>13}  {line['aim']}: {met}"
            print(cells)
        if line.get("problem"):
            print(f"{'':36} problem: {line['problem']}")
    print(f"\ncommands of the first run (W: {HERE}; buildah's --root and --runroot left out):")
    for line in report["lines"]:
        print(f"  {line['row']}" + (f" ({line['command']})" if line["key"] == "short" else ""))
        for side in line["sides"]:
            for command in side["commands"]:
                command = _short(command, report)
                print(f"    {side['tool']}: {command[:150]}{' ...' * (len(command) > 150)}")
        for key, value in line.items():
            if key not in LINE_KEYS:
                print(f"    {key.replace('_', ' ')}: {value}")


#: the fields of every line's report; any other is a fact of that line, printed below it
LINE_KEYS = {"key", "row", "command", "sides", "ratio_vs_peer", "aim", "met", "input_MB"}
LINE_KEYS |= {"problem"}


def _short(command: str, report: dict[str, Any]) -> str:
    """A command with the work directory as W and the tools by their names."""
    command = command.replace(report["buildah_storage_args"], "")
    return command.replace(str(HERE), "W").replace(report["ocikit_path"] + " ", "ocikit ")


def notes(runs: int, floor_mb: float) -> list[str]:
    return [
        "inputs read once before the runs: every tool reads them from the page cache;"
        " dirty pages synced before each timed command",
        f"sides interleaved per line (ocikit, peer, ocikit, peer, ...); the fastest of {runs}"
        " runs counts for wall and CPU s (user + system, the process and the children it"
        " waited for), RSS is the highest of all runs",
        "every output checked before it counts (untimed): blobs hash to their digests, layers"
        " to their diff_ids (a child process), registries serve every blob",
        "vs peer: ocikit's wall time over the peer's; others%: the share of the CPUs that other"
        " processes took meanwhile (the figures hold when it is low)",
        f"RSS: the process's own (wait4); this process's peak is a floor, here {floor_mb} MB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small inputs: check the harness")
    parser.add_argument("--runs", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows ({','.join(ROWS)})")
    parser.add_argument("--size-gb", type=float, help="the image (default 1.2; --quick 0.06)")
    parser.add_argument("--tree-files", type=int, help="the tree (default 20000; --quick 2000)")
    parser.add_argument("--ocikit", type=Path, default=OCIKIT, help="the ocikit to measure")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    size_gb: float = args.size_gb or (QUICK_SIZE_GB if args.quick else SIZE_GB)
    tree_files: int = args.tree_files or (QUICK_TREE_FILES if args.quick else TREE_FILES)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    if unknown := set(keys) - set(ROWS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))} (known: {', '.join(ROWS)})")

    facts = machine_facts(args.ocikit)
    facts["umoci"] = tool_version(["umoci", "--version"])
    facts["buildah"] = buildah_version()
    if args.ocikit != OCIKIT:
        facts["ocikit"] += f" ({args.ocikit})"
    else:  # the commit measured, and how many files of src/ differ from it
        head, _, dirty = source_state().partition(" + uncommitted ")
        facts["source"] = head + (f" + {len(dirty.split())} files changed" if dirty else "")
    HERE.mkdir(parents=True, exist_ok=True)
    compile_ocikit(args.ocikit)
    inputs = prepare(size_gb, tree_files, args.ocikit, args.quick)
    log("warming the page cache ...")
    warm(inputs)
    ocikit, skopeo = str(args.ocikit), skopeo_argv()
    buildah = Buildah(HERE / "buildah")
    with contextlib.ExitStack() as stack:
        registries = Registries()
        stack.callback(registries.close)
        stack.callback(buildah.close)
        stack.callback(remove, HERE / "out")
        stack.callback(remove, HERE / "run")
        (HERE / "out").mkdir(exist_ok=True)
        lines = every_line(inputs, ocikit, skopeo, registries, buildah, keys)
        for line in lines:
            if why := missing_tools(line):
                for side in line.sides:
                    side.error = side.error or why
        run_lines([line for line in lines if not line.sides[0].error], args.runs)
        reports = [line.report() for line in lines]
    floor = round(rss_floor_kb() / 1024, 1)
    report = {
        "machine": facts,
        "quick": args.quick,
        "runs": args.runs,
        "inputs": {
            "archive": str(inputs.archive),
            "archive_MB": round(inputs.archive_bytes / 1e6, 1),
            "layout": str(inputs.layout),
            "layers": inputs.layers,
            "blob_MB": round(inputs.blob_bytes / 1e6, 1),
            "tree_files": inputs.tree_files,
        },
        "notes": notes(args.runs, floor),
        "ocikit_path": ocikit,
        "buildah_storage_args": " " + shlex.join(buildah.argv[1:]),
        "rss_floor_MB": floor,
        "lines": reports,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


def compile_ocikit(ocikit: Path) -> None:
    """Byte-compile the ocikit measured, as an installation is: with PYTHONDONTWRITEBYTECODE
    set (some shells and CI set it) an editable install would otherwise compile its modules
    again at every start, which no installed ocikit does. Python reads .pyc files whatever
    that variable says."""
    python = ocikit.parent / "python"
    if not python.exists():  # another ocikit (--ocikit): its own business
        return
    code = "import ocikit, os, sys; print(os.path.dirname(ocikit.__file__))"
    package = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    subprocess.run([python, "-m", "compileall", "-q", package.stdout.strip()], check=True)


def every_line(
    inputs: Inputs,
    ocikit: str,
    skopeo: list[str],
    registries: Registries,
    buildah: Buildah,
    keys: Sequence[str],
) -> list[Line]:
    """The lines of the issue's table, in its order, for the rows asked."""
    lines: list[Line] = []
    registry = registry_lines(inputs, ocikit, skopeo, registries)
    for key in ROWS:
        if key not in keys:
            continue
        if key == "short":
            lines += short_lines(inputs, ocikit, skopeo)
        elif key in registry:
            lines.append(registry[key])
        elif key == "run":
            lines.append(run_line(inputs, ocikit, buildah))
        elif key == "tree":
            lines.append(tree_line(inputs, ocikit, buildah))
        elif key == "check":
            lines.append(check_line(inputs, ocikit))
        elif key == "save":
            lines.append(save_line(inputs, ocikit, skopeo))
        elif key == "unpack":
            lines.append(unpack_line(inputs, ocikit))
    return lines


# ---------------------------------------------------------------------------- child processes


def _child(argv: Sequence[str]) -> None:
    """What runs in a child process: inputs made once, outputs checked, a registry kept."""
    sys.path.insert(0, str(ROOT / "tests"))
    from bench_build import TREE_RECIPE, _tree
    from support.dockerd import APPLETS, BUSYBOX
    from support.layouts import directory, file, symlink, tar_bytes, write_layout
    from support.verify import read_layout

    match argv:
        case ["busybox", path]:  # the small image: busybox-static, as the tests' docker base
            entries = [directory("bin"), file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)]
            entries += [symlink(f"bin/{applet}", "busybox") for applet in APPLETS]
            entries += [directory("etc"), directory("tmp", 0o1777), directory("root")]
            partial = Path(path + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_layout(partial, [tar_bytes(entries)], ref="busybox")
            partial.replace(path)
        case ["tree", path, files]:  # bench_build.py's tree and recipe
            root = Path(path)
            shutil.rmtree(root, ignore_errors=True)
            _tree(root / "tree", int(files), 7)
            (root / "tree.yaml").write_text(TREE_RECIPE)
            (root / "ready").write_text("")
        case ["few-files-archive", size_gb, path]:
            _few_files_archive(int(float(size_gb) * 1e9), Path(path))
        case ["config", layout, ref]:
            print(json.dumps(read_layout(Path(layout), ref).config))
        case ["verify", layout, ref, layers, files, *content]:
            _verify(read_layout(Path(layout), ref), int(layers), int(files), content)
        case ["registry-check", host, repo, tag, layers]:
            _registry_check(host, repo, tag, int(layers))
        case ["registry"]:  # until stdin closes (the parent is done, or gone)
            from support.registry import Registry

            with Registry() as registry:
                print(registry.host, flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    sys.stdin.read()
        case _:
            raise SystemExit(f"bench_all.py child: unknown {list(argv)}")


def _few_files_archive(budget: int, path: Path) -> None:
    """A ``docker save`` of bench_copy.py's kind with few files: a layer of host files from
    /usr/bin (a fifth of the budget), application data for the rest in three layers, the RUN."""
    import tempfile

    from common import BASE_TAG, FINAL_RUN, _copy_trees, _docker_save, _write_app_data

    path.parent.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="context.", dir=path.parent))
    try:
        lines = [f"FROM {BASE_TAG}"]
        done = _copy_trees(("/usr/bin",), context / "bin", budget // 5)
        lines.append("COPY bin/ /")
        for i in range(3):
            share = (budget - done) // (3 - i)
            done += _write_app_data(context / f"app{i}" / "srv" / f"app{i}", share, seed=i)
            lines.append(f"COPY app{i}/ /")
        (context / "Dockerfile").write_text("\n".join([*lines, FINAL_RUN]) + "\n")
        _docker_save(context, path)
    finally:
        shutil.rmtree(context, ignore_errors=True)


def _verify(image: Any, layers: int, files: int, content: list[str]) -> None:
    """Every layer of ``image`` (support.verify.LayoutImage) streamed once: its sha256 and
    size, and the sha256 of its tar against the diff_id; the last one's entries counted."""
    import hashlib
    import tarfile

    from isal import igzip

    descs, diff_ids = image.manifest["layers"], image.config["rootfs"]["diff_ids"]
    assert len(descs) == layers == len(diff_ids), f"{len(descs)} layers, {layers} expected"
    for n, (desc, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        path = image.blob_path(desc["digest"])
        blob = hashlib.sha256()
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                blob.update(chunk)
        assert "sha256:" + blob.hexdigest() == desc["digest"], f"layer {n}: blob digest"
        assert path.stat().st_size == desc["size"], f"layer {n}: size"
        gz = desc["mediaType"].endswith(("gzip", "tar.gz"))
        with igzip.open(path, "rb") if gz else open(path, "rb") as stream:
            reader: Any = _Hashing(stream)  # a file object enough for tarfile's "r|"
            found: dict[str, bytes] = {}
            regular = 0
            if n == len(descs) - 1 and (files >= 0 or content):
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    try:
                        for member in tar:
                            regular += member.isfile()
                            name = member.name.removeprefix("./")
                            for want in content:
                                if want.split("=", 1)[0] == name and member.isfile():
                                    f = tar.extractfile(member)
                                    found[name] = f.read() if f else b""
                    except tarfile.ReadError as exc:  # counted below: every entry must be there
                        print(f"layer {n}: the tar ends early ({exc}): no end-of-archive blocks")
            while reader.read(1 << 20):
                pass
        assert "sha256:" + reader.hash.hexdigest() == diff_id, f"layer {n}: diff_id"
        if n == len(descs) - 1:
            assert files < 0 or regular == files, f"{regular} files in the layer, not {files}"
            for want in content:
                name, text = want.split("=", 1)
                assert found.get(name) == text.encode(), f"{name}: {found.get(name)!r}"


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, stream: Any) -> None:
        import hashlib

        self.stream = stream
        self.hash = hashlib.sha256()

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.hash.update(data)
        return data


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"]:
        main()
    else:
        try:
            _child(sys.argv[2:])
        except (AssertionError, RunFailed) as exc:  # what is wrong with an output: one line
            sys.exit(f"{type(exc).__name__}: {exc}")
