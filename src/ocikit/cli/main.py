"""``ocikit`` command line. Data goes to stdout, messages to stderr.

Exit codes: 0 success; 1 the operation ran and found problems; 2 bad usage or bad input.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import OcikitError
from ..layer.bounds import DEFAULT_MAX_RATIO
from ..model.jsondoc import MESSAGE_LIMIT, counted, json_text, printable
from . import credentials, params
from .credentials import F
from .progress import reporter, say_through
from .summary import SUMMARY_LINE_LIMIT, copied_line, inspect_summary

if TYPE_CHECKING:
    from ..ops.copy import CopyResult
    from ..transports import RegistryOptions

# Each command imports the operation it runs when it runs: `ocikit --help`, a usage error or
# `ocikit gc` never load the registry client, the build engine or the compressors.

PLATFORM_HELP = "OS/ARCH[/VARIANT] to pick from a multi-platform image"
AUTHFILE_HELP = (
    "The auth file to read credentials from (default: $REGISTRY_AUTH_FILE or "
    "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
    "~/.docker/config.json)."
)
STEP_LINE_LIMIT = 64 << 10  # a run step's line (cut at 16 KiB bytes already, then escaped)


def _fail(message: str, code: int = 2) -> NoReturn:
    _say(f"ocikit: error: {message}")
    sys.exit(code)


def _print_json(data: Any) -> None:
    """JSON on stdout: valid UTF-8, no raw terminal controls, whatever names hold."""
    click.echo(json_text(data))


def _say(line: str, *, err: bool = True, limit: int = MESSAGE_LIMIT) -> None:
    """One line about the input, as a terminal shows it: every control character escaped,
    at most ``limit`` characters (messages quote names already: this is the net)."""
    click.echo(printable(line, limit), err=err)


def _report(result: Any, as_json: bool, quiet: bool, lines: Callable[[], Iterable[str]]) -> None:
    """A command's result: its JSON on stdout with ``--json``; else, unless ``-q``, the
    ``lines`` saying it on stderr (made only when said)."""
    if as_json:
        _print_json(result.to_dict())
    elif not quiet:
        for line in lines():
            _say(line)


def registries(*sides: tuple[str, str]) -> Callable[[F], F]:
    """The options saying how a command reaches registries: ``--PREFIXcreds`` for each
    (prefix, what it is for) side, ``--password-stdin``, ``--authfile``, then
    ``--PREFIXtls-verify`` for each side (``_registry`` makes them a RegistryOptions)."""
    options = [
        click.option(
            f"--{prefix}creds",
            metavar="USER[:PASS]",
            help=f"Credentials for {what} (no :PASS: asked on the terminal).",
        )
        for prefix, what in sides
    ]
    options += [
        credentials.password_stdin_option,
        click.option("--authfile", metavar="FILE", help=AUTHFILE_HELP),
    ]
    options += [
        click.option(
            f"--{prefix}tls-verify",
            type=click.BOOL,
            default=None,
            help=f"Verify the TLS of the registry of {what} (default true; localhost speaks "
            "plain HTTP).",
        )
        for prefix, what in sides
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


#: the options of a command that reads a ``docker://`` image (inspect, check, unpack)
registry_options = registries(("", "a docker:// reference"))


def _registry(
    creds: str | None,
    authfile: str | None,
    tls_verify: bool | None,
    option: str = "--creds",
    **more: Any,
) -> RegistryOptions:
    """How to reach a registry, from the options a command was given (``option``: the one
    that gave ``creds``, for its error; ``more``: other fields of RegistryOptions)."""
    from ..transports import Credentials, RegistryOptions

    return RegistryOptions(
        credentials=Credentials.parse(creds, option) if creds else None,
        tls_verify=tls_verify,
        authfile=authfile,
        **more,
    )


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar and no messages on success."
)


def json_option(what: str = "the result") -> Callable[[F], F]:
    """``--json``: the command's result, its ``to_dict()``, as JSON on stdout."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout.")


class _BrokenPipe(Exception):
    """Standard output's reader went away (not an OSError: click turns an EPIPE into a
    silent ``exit(1)``, which means "problems found" for check)."""


BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a writer killed by SIGPIPE


class _Group(params.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as e:
            if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:
                raise _BrokenPipe() from None
            raise


class _Command(click.Command):
    """A command: its deprecated option spellings applied and its credentials completed
    (a password asked, or read with --password-stdin) before its body runs; the notices
    about deprecated spellings said after it succeeded."""

    def invoke(self, ctx: click.Context) -> Any:
        notices = credentials.complete(ctx)
        result = super().invoke(ctx)
        for line in notices:
            _say(line)
        return result


_Group.command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocikit")
@click.option(
    "--debug",
    is_flag=True,
    help="On an internal error, print the traceback (as OCIKIT_DEBUG=1 does).",
)
def cli(debug: bool) -> None:
    """Daemonless OCI image toolkit.

    \b
    References (as skopeo spells them; PATH - is stdin/stdout):
      oci:PATH[:REF]                    an OCI image layout directory
      oci-archive:PATH[:REF]            a tar of an OCI image layout
      docker-archive:PATH[:NAME:TAG]    what `docker save` writes (any engine)
      docker-archive:PATH@N             the N-th image (0-based) of such an archive
      docker-daemon:NAME[:TAG]          an image in the Docker engine (DOCKER_HOST honoured);
                                        docker-daemon:sha256:ID as a source
      docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry (docker.io if no HOST)

    \b
    Exit codes: 0 success, 1 problems found, 2 bad usage or bad input, 3 internal error,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 141 standard output's reader
    went away (a broken pipe).
    """
    if debug:
        _debug["on"] = True
    _invoked["command"] = click.get_current_context().invoked_subcommand


_debug = {"on": False}
_invoked: dict[str, str | None] = {"command": None}


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--dest-compress-format",
    type=click.Choice(["gzip", "zstd", "none"]),
    help="Layer compression at the destination (default: keep compressed layers, gzip "
    "uncompressed ones; docker-archive is always uncompressed).",
)
@click.option(
    "--dest-compress-level",
    type=int,
    help="gzip 0-9 (0-3: isal, multi-threaded; 4-9: zlib), zstd 1-19.",
)
@click.option("--platform", help=PLATFORM_HELP)
@click.option(
    "--all",
    "all_platforms",
    is_flag=True,
    help="When SRC names an image index (several platforms), copy it whole: every image, "
    "every attached artifact, and the index.",
)
@click.option(
    "--additional-tag",
    "additional_tags",
    multiple=True,
    metavar="NAME:TAG",
    help="Also tag the image so at the destination (repeatable).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite the layers that consumers reject or get wrong (duplicate paths, entries "
    "through or over symlinked directories, absolute names); see ocikit help check.",
)
@click.option(
    "--drop-unsafe",
    is_flag=True,
    help="With --repair: drop entries that cannot be repaired safely instead of failing.",
)
@registries(("src-", "a docker:// source"), ("dest-", "a docker:// destination"))
@click.option(
    "--mount-from",
    multiple=True,
    metavar="REPO",
    help="A repository of the destination registry to mount blobs from (repeatable); the "
    "source's repository is tried anyway when it is on the same registry.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="Layers copied at once (not from a pipe; default 4 with a registry, else 1), and "
    "blobs uploaded at once to a registry (default 4).",
)
@click.option(
    "--verify-existing",
    is_flag=True,
    help="Re-hash every blob the destination already has before reusing it (sizes are always "
    "checked, small blobs always re-hashed); a damaged one is replaced.",
)
@json_option()
@quiet_option
def copy(
    src: str,
    dst: str,
    dest_compress_format: str | None,
    dest_compress_level: int | None,
    platform: str | None,
    all_platforms: bool,
    additional_tags: tuple[str, ...],
    repair: bool,
    drop_unsafe: bool,
    src_creds: str | None,
    dest_creds: str | None,
    authfile: str | None,
    src_tls_verify: bool | None,
    dest_tls_verify: bool | None,
    mount_from: tuple[str, ...],
    jobs: int | None,
    verify_existing: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Copy an image from SRC to DST, verifying every blob on the way.

    \b
    Examples:
      docker save app | ocikit copy docker-archive:- oci:layout:app
      ocikit copy oci:layout:app docker-archive:app.tar:app:latest
      ocikit copy --dest-compress-format zstd docker-archive:a.tar oci-archive:a.oci.tar
    """
    if (as_json and dst.endswith(":-")) or (as_json and dst.split(":", 1)[-1].startswith("-:")):
        _fail("--json prints on stdout, which the destination already uses")
    from ..ops.copy import CopyOptions
    from ..ops.copy import copy as copy_op
    from ..transports.kinds import REGISTRY_JOBS

    options = CopyOptions(
        compression=dest_compress_format,  # type: ignore[arg-type]  # a name: parsed
        compression_level=dest_compress_level,
        platform=platform,  # type: ignore[arg-type]  # OS/ARCH: parsed
        additional_tags=additional_tags,
        progress=(progress := reporter(quiet)),
        repair=repair,
        drop_unsafe=drop_unsafe,
        src_registry=_registry(src_creds, authfile, src_tls_verify, "--src-creds"),
        dest_registry=_registry(
            dest_creds,
            authfile,
            dest_tls_verify,
            "--dest-creds",
            mount_from=mount_from,
            jobs=jobs or REGISTRY_JOBS,
        ),
        jobs=jobs,
        all_platforms=all_platforms,
        verify_existing=verify_existing,
        warn=lambda line: _warn(progress, line),
    )
    result = copy_op(src, dst, options)
    _report(result, as_json, quiet, lambda: _copied_lines(result))


def _copied_lines(result: CopyResult) -> Iterator[str]:
    for r in result.repaired or []:
        changes = ", ".join(f"{n} {k.replace(':', ' ')}" for k, n in r["entries"].items())
        yield f"repaired layer {r['layer']}: {changes}"
    yield copied_line(result)


#: the copy options the library names in its errors, as ``ocikit copy`` spells them
_FLAGS = {
    "platform": "--platform",
    "repair": "--repair",
    "drop_unsafe": "--drop-unsafe",
    "jobs": "--jobs",
    "verify_existing": "--verify-existing",
    "additional_tags": "--additional-tag",
    "credentials": "--creds",
    "tls_verify=False": "--tls-verify=false",
    "layer_types": "--layer-type",
    "output": "--output",
    "targets": "--target",
    "cache_dir": "--cache-dir",
    "substitutions": "--substitute",
    "substitute_files": "--substitute-file",
}
#: the library's option names as each command's flags say them, where they differ
_COMMAND_FLAGS = {
    "copy": {
        "compression": "--dest-compress-format",
        "compression_level": "--dest-compress-level",
        "all_platforms": "--all",
        "credentials": "--src-creds or --dest-creds",
        "tls_verify=False": "--src-tls-verify=false or --dest-tls-verify=false",
    },
    "build": {
        "credentials": "--src-creds or --dest-creds",
        "tls_verify=False": "--src-tls-verify=false or --dest-tls-verify=false",
    },
}
#: ``copy``'s flags for the library's option names
_COPY_FLAGS = {**_FLAGS, **_COMMAND_FLAGS["copy"]}


def _flags() -> dict[str, str]:
    """The flags of the command running, by the library's names for them (an error the
    library raises names options: the user reads them as flags)."""
    return {**_FLAGS, **_COMMAND_FLAGS.get(_invoked["command"] or "", {})}


def _warn(progress: Any, line: str) -> None:
    """A warning on stderr, above the progress bar if one is drawn."""
    if not say_through(progress, printable(line)):
        _say(line)


@cli.command("export-layers")
@click.argument("src")
@click.argument("outdir")
@click.option(
    "--dest-compress-level",
    type=int,
    help="gzip level: 0-3 isal on every core (default 2), 4-9 zlib on one core.",
)
@credentials.deprecated("--level", "dest_compress_level", type=int)
@click.option(
    "--v2metadata",
    metavar="DIR",
    help="docker's image/<driver>/distribution/v2metadata-by-diffid directory: layers with a "
    "record there take digest and source from it in digests.json.",
)
@click.option("--platform", help=PLATFORM_HELP)
@json_option()
@registry_options
@quiet_option
def export_layers(
    src: str,
    outdir: str,
    dest_compress_level: int | None,
    v2metadata: str | None,
    platform: str | None,
    as_json: bool,
    creds: str | None,
    authfile: str | None,
    tls_verify: bool | None,
    quiet: bool,
) -> None:
    """Write the per-layer files a build farm uploads: <layer_id>.tar.gz per layer, the
    config as <hex>.json, digests.json and a legacy manifest.json, for every image of SRC.

    \b
    Examples:
      docker save app | ocikit export-layers docker-archive:- out/
      ocikit export-layers docker-archive:two-images.tar@1 out/
      ocikit export-layers --v2metadata "$V2" docker-archive:app.tar out/

    V2 is docker's image/overlay2/distribution/v2metadata-by-diffid directory.
    """
    from ..ops.export import export_layers as export_op

    result = export_op(
        src,
        outdir,
        level=dest_compress_level,
        v2metadata=v2metadata,
        platform=platform,
        progress=reporter(quiet),
        registry=_registry(creds, authfile, tls_verify),
    )
    layers = sum(len(image.layers) for image in result.images)
    images = counted(len(result.images), "image")
    _report(
        result,
        as_json,
        quiet,
        lambda: [f"exported {images}, {counted(layers, 'layer')} to {result.outdir}"],
    )


@cli.command("help")
@click.argument("topic", required=False)
@click.pass_context
def help_(ctx: click.Context, topic: str | None) -> None:
    """Print a topic the installed package carries: check (the rules of check, copy
    --repair and unpack), recipe (every field of a build recipe). Without TOPIC: the
    commands and the topics."""
    from ..help import TOPICS, text

    if topic is None:
        assert ctx.parent is not None
        click.echo(ctx.parent.get_help())
        click.echo("\nTopics (ocikit help TOPIC):")
        for name, what in TOPICS.items():
            click.echo(f"  {name:<8} {what}")
        return
    if topic not in TOPICS:
        raise click.UsageError(f"no topic {topic!r}; the topics: {', '.join(TOPICS)}", ctx)
    click.echo(text(topic), nl=False)


@cli.command()
@json_option("the report")
def doctor(as_json: bool) -> None:
    """Say which of the tools ocikit drives are found and usable, with their versions.

    \b
    runc (or crun), mount and overlayfs   build: run steps (as root)
    mksquashfs, unsquashfs                squashfs layers
    the docker engine (DOCKER_HOST)       docker-daemon: references
    the native core (C, from the install) speed; without it, the pure-Python path

    Exit 0 whatever it finds: a tool is needed only by what uses it.
    """
    from ..ops.doctor import doctor as doctor_op

    report = doctor_op()
    if as_json:
        _print_json(report.to_dict())
        return
    who = "root" if report.root else "not root: run steps need root"
    click.echo(f"ocikit {report.ocikit} (Python {report.python}, {who})")
    width = max(len(t.name) for t in report.tools)
    for t in report.tools:
        state = "ok" if t.usable else "--"
        detail = (t.version or "found") if t.usable else t.why
        _say(f"{t.name:<{width}}  {state}  {detail}  (for {t.needed_for})", err=False)


@cli.command("gc")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option(
    "--unreferenced",
    is_flag=True,
    help="Also remove every blob of a layout PATH that its index.json does not reach (as "
    "umoci gc does); without it, only blobs that killed ocikit writers left.",
)
@json_option("what was removed")
@quiet_option
def gc(paths: tuple[str, ...], unreferenced: bool, as_json: bool, quiet: bool) -> None:
    """Reclaim what interrupted or killed runs left behind, and nothing a live process holds.

    \b
    Always: ocikit's staging in $TMPDIR (ocikit-tmp-*) that no running ocikit holds.
    Each PATH may be:
      oci:DIR (or DIR holding an OCI layout)   dead writers' private directories, and the
          blobs they put in place that index.json does not reach and no live writer uses
      oci-archive:FILE, docker-archive:FILE    the archive's dead temporary files
      DIR (an export-layers OUTDIR...)         dead .ocikit-tmp-* staging in it

    The next copy or export into the same place reclaims the same things on its own. gc
    also removes the unlocked temporary files of older ocikit versions: run it while no
    older ocikit runs.

    \b
    Examples:
      ocikit gc                                # $TMPDIR only
      ocikit gc oci:images out/                # and a layout, an export directory
      ocikit gc --unreferenced oci:images      # and every blob no tag reaches
    """
    from ..ops.gc import gc as gc_op

    result = gc_op(paths, unreferenced=unreferenced)
    _report(
        result,
        as_json,
        quiet,
        lambda: [
            f"removed {counted(len(result.removed), 'item')}, {result.bytes / (1 << 20):.1f} MiB"
        ],
    )


@cli.command()
@click.argument("ref")
@click.option("--raw", is_flag=True, help="Print the manifest's exact bytes.")
@click.option("--config", "config", is_flag=True, help="Print the config's exact bytes.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (the default when stdout is no terminal)."
)
@click.option("--platform", help=PLATFORM_HELP)
@registry_options
@quiet_option
def inspect(
    ref: str,
    raw: bool,
    config: bool,
    as_json: bool,
    platform: str | None,
    creds: str | None,
    authfile: str | None,
    tls_verify: bool | None,
    quiet: bool,
) -> None:
    """Describe the image at REF: name, digest, image ID, platform, created, sizes, layers,
    entrypoint, cmd, env, labels. A summary on a terminal; JSON with --json or when standard
    output is no terminal (a pipe, a file)."""
    del quiet
    if raw and config:
        _fail("--raw and --config exclude each other")
    if as_json and (raw or config):
        _fail("--json does not go with --raw or --config (they print exact bytes)")
    from ..ops.inspect import inspect as inspect_op
    from ..transports import open_image

    registry = _registry(creds, authfile, tls_verify)
    if raw or config:
        with open_image(ref, platform, registry=registry) as image:
            data = image.manifest_bytes if raw else image.config_bytes
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    info = inspect_op(ref, platform=platform, registry=registry)
    if as_json or not sys.stdout.isatty():
        _print_json(info)
    else:
        for line in inspect_summary(info):
            _say(line, err=False, limit=SUMMARY_LINE_LIMIT)


@cli.command()
@click.argument("ref")
@json_option("the report")
@click.option("--strict", is_flag=True, help="Warnings fail the check too (exit 1).")
@click.option("--platform", help=PLATFORM_HELP)
@click.option(
    "--max-ratio",
    type=click.FloatRange(min=1),
    default=DEFAULT_MAX_RATIO,
    show_default=True,
    help="A layer expanding beyond this many times its compressed size (and 64 MiB) is a "
    "decompression bomb.",
)
@registry_options
@quiet_option
def check(
    ref: str,
    as_json: bool,
    strict: bool,
    platform: str | None,
    max_ratio: float,
    creds: str | None,
    authfile: str | None,
    tls_verify: bool | None,
    quiet: bool,
) -> None:
    """Find what consumers reject or break on in the image at REF.

    Each layer is read once, streaming. Exit 0: clean (warnings allowed); 1: errors found,
    or warnings with --strict; 2: the image cannot be read. The rules: ocikit help check.

    \b
    Examples:
      ocikit check oci:layout:app
      docker save app | ocikit check --json docker-archive:-
    """
    from ..ops.check import check as check_op

    report = check_op(
        ref,
        platform=platform,
        max_ratio=max_ratio,
        progress=reporter(quiet),
        registry=_registry(creds, authfile, tls_verify),
    )
    if as_json:
        _print_json(report.to_dict())
    else:
        for f in report.findings:
            _say(str(f), err=False)
        if not quiet or report.findings:
            verdict = "FAILED" if report.exit_code(strict) else "ok"
            counts = ", ".join(
                [
                    counted(report.layers, "layer"),
                    counted(report.entries, "entry", "entries"),
                    counted(report.errors, "error"),
                    counted(report.warnings, "warning"),
                ]
            )
            _say(f"{verdict}: {report.reference}: {counts}")
    sys.exit(report.exit_code(strict))


@cli.command()
@click.argument("ref")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--platform", help=PLATFORM_HELP)
@click.option(
    "--devices", is_flag=True, help="Create device nodes (as root only; skipped otherwise)."
)
@click.option(
    "--max-ratio",
    type=click.FloatRange(min=1),
    default=DEFAULT_MAX_RATIO,
    show_default=True,
    help="Refuse a layer expanding beyond this many times its compressed size (and 64 MiB).",
)
@json_option()
@registry_options
@quiet_option
def unpack(
    ref: str,
    directory: str,
    platform: str | None,
    devices: bool,
    max_ratio: float,
    as_json: bool,
    creds: str | None,
    authfile: str | None,
    tls_verify: bool | None,
    quiet: bool,
) -> None:
    """Extract the root filesystem of the image at REF into DIRECTORY (new or empty).

    Whiteouts and opaque directories apply. Nothing is ever written outside DIRECTORY: a
    hostile layer (traversal by name, symlink or hardlink, a root that is not a directory,
    malformed whiteouts, a decompression bomb) stops the unpack with exit 2 and DIRECTORY is
    left as it was.
    """
    from ..ops.unpack import unpack as unpack_op

    result = unpack_op(
        ref,
        directory,
        platform=platform,
        devices=devices,
        max_ratio=max_ratio,
        progress=reporter(quiet),
        registry=_registry(creds, authfile, tls_verify),
    )
    skipped = f" ({result.skipped_devices} device nodes skipped)" if result.skipped_devices else ""
    _report(
        result,
        as_json,
        quiet,
        lambda: [
            f"unpacked {result.digest} into {result.directory}: {result.layers} layers, "
            f"{result.entries} entries{skipped}"
        ],
    )


@cli.command()
@click.option(
    "-f",
    "--file",
    "recipe_file",
    default="ocikit.yaml",
    show_default=True,
    metavar="FILE",
    help="The recipe.",
)
@click.option(
    "--output",
    default="oci:oci",
    show_default=True,
    metavar="REF",
    help="oci:DIR (each image tagged by its name) or docker://HOST/PREFIX (PREFIX/NAME:latest).",
)
@click.option(
    "--layer-type",
    "layer_types",
    multiple=True,
    type=click.Choice(["tar", "squashfs"]),
    help="Layer type (repeatable: one image per type; squashfs images are tagged "
    "NAME-squashfs). Default: tar.",
)
@click.option(
    "--dest-compress-format",
    type=click.Choice(["gzip", "zstd", "none"]),
    default="gzip",
    show_default=True,
    help="Compression of tar layers.",
)
@click.option(
    "--dest-compress-level", type=int, help="gzip 0-9 (default 2), zstd 1-19 (default 3)."
)
@credentials.deprecated(
    "--compress", "dest_compress_format", type=click.Choice(["gzip", "zstd", "none"])
)
@credentials.deprecated("--compress-level", "dest_compress_level", type=int)
@click.option(
    "--target", "targets", multiple=True, metavar="NAME", help="Build only NAME and its bases."
)
@click.option(
    "--substitute",
    "substitutions",
    multiple=True,
    metavar="VAR=VALUE",
    help="Value of ${{VAR}} in the recipe (repeatable).",
)
@click.option(
    "--substitute-file",
    "substitute_files",
    multiple=True,
    metavar="FILE",
    help="VAR=VALUE lines (repeatable; --substitute wins).",
)
@click.option(
    "--context", metavar="DIR", help="Where imports are read from (default: the recipe's dir)."
)
@click.option("--cache-dir", metavar="DIR", help="Default: $XDG_CACHE_HOME/ocikit/build.")
@click.option("--no-cache", is_flag=True, help="Build every image; keep nothing in the cache.")
@click.option(
    "--timestamp",
    type=click.Choice(["source-date-epoch", "now"]),
    default="source-date-epoch",
    show_default=True,
    help="Times in the image: $SOURCE_DATE_EPOCH (default 0), mtimes clamped to it; or now.",
)
@registries(("src-", "docker:// bases"), ("dest-", "a docker:// --output"))
@credentials.deprecated("--creds", "src_creds", "dest_creds")
@credentials.deprecated("--tls-verify", "src_tls_verify", "dest_tls_verify", type=click.BOOL)
@click.option(
    "--runtime",
    type=click.Choice(["runc", "crun"]),
    default="runc",
    show_default=True,
    help="The OCI runtime that runs run steps.",
)
@click.option("--print-schema", is_flag=True, help="Print the recipe's JSON Schema and exit.")
@json_option()
@quiet_option
def build(
    recipe_file: str,
    output: str,
    layer_types: tuple[str, ...],
    dest_compress_format: str,
    dest_compress_level: int | None,
    targets: tuple[str, ...],
    substitutions: tuple[str, ...],
    substitute_files: tuple[str, ...],
    context: str | None,
    cache_dir: str | None,
    no_cache: bool,
    timestamp: str,
    src_creds: str | None,
    dest_creds: str | None,
    authfile: str | None,
    src_tls_verify: bool | None,
    dest_tls_verify: bool | None,
    runtime: str,
    print_schema: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Build the images of a recipe (its fields: ocikit help recipe), without a daemon.

    \b
    Examples:
      ocikit build                                  # ./ocikit.yaml into ./oci
      ocikit build -f app.yaml --target app --substitute VERSION=1.2
      ocikit build --layer-type tar --layer-type squashfs --output oci:out
    """
    import gc as collector

    from ..build import (
        BuildOptions,
        load_recipe,
        parse_substitutions,
        recipe_schema,
        source_date_epoch,
    )
    from ..build import build as build_op
    from ..model import Compression

    # what the engine's import made (classes, functions, the recipe models' schemas) lives
    # as long as this process: the cyclic collector need not walk it again, during the
    # build nor when Python ends (~15-20 ms of a build; this process's only, not the API's)
    collector.freeze()
    if print_schema:
        _print_json(recipe_schema())
        return
    values = parse_substitutions(list(substitutions), list(substitute_files))
    recipe = load_recipe(recipe_file, values, context, targets)
    options = BuildOptions(
        output=output,
        layer_types=layer_types or ("tar",),
        compress=Compression.parse(dest_compress_format),
        level=dest_compress_level,
        targets=targets,
        cache_dir=cache_dir,
        no_cache=no_cache,
        epoch=None if timestamp == "now" else source_date_epoch(),
        registry=_registry(src_creds, authfile, src_tls_verify, "--src-creds"),
        dest_registry=_registry(dest_creds, authfile, dest_tls_verify, "--dest-creds"),
        runtime=runtime,
    )
    progress = reporter(quiet)

    def say(line: str, limit: int = MESSAGE_LIMIT) -> None:
        """As ``_say``; above the bar while one is drawn (never through it)."""
        text = printable(line, limit)
        if not say_through(progress, text):
            click.echo(text, err=True)

    log = None if quiet or as_json else say
    step_output = None if quiet else (lambda m: say(m, STEP_LINE_LIMIT))
    result = build_op(recipe, options, progress, log, step_output)
    if as_json:
        _print_json(result.to_dict())


@cli.command()
@click.argument("host")
@click.option(
    "-u", "--username", metavar="USER", help="The user name (default: asked on the terminal)."
)
@credentials.password_stdin_option
@click.option(
    "--authfile",
    metavar="FILE",
    help="The auth file to write (default: $REGISTRY_AUTH_FILE, else the first of the files "
    "ocikit reads that exists, else ~/.docker/config.json).",
)
@click.option(
    "--tls-verify", type=click.BOOL, default=None, help="Verify the registry's TLS (default true)."
)
@click.pass_context
def login(
    ctx: click.Context,
    host: str,
    username: str | None,
    authfile: str | None,
    tls_verify: bool | None,
) -> None:
    """Check credentials for the registry HOST and keep them where docker and skopeo keep
    theirs (or in the credential helper the auth file names).

    The password is asked on the terminal, never echoed, or read with --password-stdin.

    \b
    Examples:
      ocikit login registry.example.com
      echo "$TOKEN" | ocikit login -u ci --password-stdin registry.example.com:5000
    """
    from ..transports import Credentials
    from ..transports.auth import login as login_op
    from ..transports.auth import registry_host

    host = registry_host(host)
    hint = "give --username USER"
    user = username or credentials.ask_username("no --username", hint)
    if credentials.password_stdin(ctx):
        password = credentials.read_password(credentials.stdin())
    else:
        hint = "give the password with --password-stdin"
        password = credentials.ask_password(f"Password for {user}@{host}: ", "no password", hint)
    path = login_op(host, Credentials(user, password), authfile=authfile, tls_verify=tls_verify)
    _say(f"logged in to {host}; the credentials are kept in {path}")


@cli.command()
@click.argument("host")
@click.option(
    "--authfile",
    metavar="FILE",
    help="Forget HOST in this auth file only (default: in every file ocikit reads).",
)
def logout(host: str, authfile: str | None) -> None:
    """Forget the credentials kept for the registry HOST (in the auth files, and in the
    credential helpers they name)."""
    from ..transports.auth import logout as logout_op
    from ..transports.auth import registry_host

    host = registry_host(host)
    places = logout_op(host, authfile)
    if places:
        _say(f"logged out of {host} ({', '.join(places)})")
    else:
        _say(f"not logged in to {host}")


params.worded(cli)  # every parameter's type says, in ocikit's words, what it expected


class _Interrupted(BaseException):
    """SIGINT or SIGTERM: unwinds like KeyboardInterrupt (every cleanup on the way runs),
    past click, which would print a newline of its own for a KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_signals = {"count": 0, "said": 0, "finished": 0}


def _on_signal(signum: int, frame: object) -> None:
    if _signals["finished"]:  # the command is over (its result said): exit as it said
        return
    if _signals["count"]:  # a second one: leave now; the next run or gc reclaims the rest
        _say_interrupted()
        os._exit(128 + signum)
    _signals["count"] = 1
    raise _Interrupted(signum)


def _say_interrupted() -> None:
    if not _signals["said"]:
        _signals["said"] = 1
        os.write(2, b"ocikit: error: interrupted\n")


def _interrupted(signum: int) -> NoReturn:
    """Cleanups have run: say so once and leave, without waiting for worker threads."""
    _say_interrupted()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> NoReturn:
    """The command line. SIGINT and SIGTERM stop it promptly: the work in progress is
    undone (as for any failure) and it exits with 130 or 143; a second one leaves at once."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        code = _dispatch(argv)
    except _Interrupted as e:  # also while an error was being reported
        _interrupted(e.signum)
    _signals["finished"] = 1
    for signum in (signal.SIGINT, signal.SIGTERM):  # the command is over: exit as it said
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def _dispatch(argv: list[str] | None) -> int:
    """Run the command; its exit code, the error (if any) said in one line."""
    try:
        cli.main(args=argv, prog_name="ocikit", standalone_mode=False)
    except _Interrupted:
        raise
    except click.exceptions.Exit as e:
        return e.exit_code
    except SystemExit as e:  # check's verdict
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except click.exceptions.NoArgsIsHelpError as e:  # bare `ocikit`: its help, as docker's
        click.echo(e.ctx.get_help() if e.ctx is not None else "")
        return 0
    except click.UsageError as e:
        return _error(params.usage_message(e), code=2)
    except click.ClickException as e:
        return _error(e.format_message(), code=e.exit_code if e.exit_code != 1 else 2)
    except click.exceptions.Abort:
        _interrupted(signal.SIGINT)
    except OcikitError as e:  # one line; a recipe's errors one per line, after a header
        return _error(*e.lines(_flags()), code=e.exit_code)
    except (BrokenPipeError, _BrokenPipe):  # quietly, as `yes | head` ends
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except KeyboardInterrupt:
        _interrupted(signal.SIGINT)
    except OSError as e:
        from ..tempfiles import describe  # here: help and usage errors load no file handling

        return _error(f"{e.filename}: {describe(e)}" if e.filename else describe(e))
    except Exception as e:  # a bug: say so in one line; the traceback on request
        if _debug["on"] or os.environ.get("OCIKIT_DEBUG"):
            traceback.print_exc()
        return _error(
            f"internal error: {type(e).__name__}: {e} (ocikit --debug prints the traceback)",
            code=3,
        )
    return 0


def _error(message: str, *more: str, code: int = 2) -> int:
    """The error on stderr: its first line after ``ocikit: error:``, then the others (each
    escaped and bounded as every line about the input)."""
    _say(f"ocikit: error: {message}")
    for line in more:
        _say(line)
    return code
