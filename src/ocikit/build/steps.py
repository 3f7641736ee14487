"""Run steps: an image's imports, then its commands, each in a container (``build.sandbox``:
runc or crun) on an overlay of the base's extracted layers (``build.rootfs``); the upper
directory, the runtime's mount points dropped, becomes the layer. The steps see each import
and read-only bind as it was hashed for the key, never the live path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..layer.overlay import overlay_entries
from ..model.jsondoc import quote
from ..ops.check import LowerLayers
from ..ops.gc import RUN_PREFIX
from . import rootfs, sandbox
from .config import runtime_config
from .imports import ImportContent, changed
from .placement import EntryHook, Placed, materialize, stage_for_steps
from .recipe import Bind, BuildError, ImageSpec
from .store import BuildCache, EntryWriter, NewLayer
from .users import check_user_tables, user_ids

DEFAULT_SHELL = ["/bin/sh", "-e", "-c"]  # a failing command fails the step, as in stacker
STEP_QUOTE = 60  # characters of a step's command in its error message
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: writes a tar layer into an entry: ``write`` gets the stream the tar goes to
TarLayerWriter = Callable[[EntryWriter, Callable[[BinaryIO], object]], NewLayer]
#: the base's layers analyzed (``ops.check.analyze_lower``), the writer of the new tar layer
#: and what is told each of its entries as it is written (None: nothing). Asked for once the
#: steps ran: the base may be read while they run (``build.engine``)
LayerWriting = Callable[[], tuple[LowerLayers, TarLayerWriter, EntryHook | None]]


def bind_source(bind: Bind, context: Path) -> Path:
    """A bind's host path (a relative one is in the recipe's context)."""
    src = Path(bind.src)
    return src if src.is_absolute() else (context / src).absolute()


def run_text(spec: ImageSpec) -> str:
    """The run steps' phase: how many there are."""
    count = 1 if isinstance(spec.run, str) else len(spec.run or [])
    return "run 1 step" if count == 1 else f"run {count} steps"


@dataclass
class StepRun:
    """One image's run steps, and what they need of the build."""

    name: str
    spec: ImageSpec
    layer_type: str
    epoch: int
    store: BuildCache
    runtime: str  # runc or crun
    recipe: str  # the recipe's label in log names (``cache.recipe_label``)
    context: Path  # where relative bind sources are
    phase: Callable[[str], None]  # the progress bar's next phase
    step_output: Callable[[str], None]  # each line a step writes, prefixed with the image
    writing: LayerWriting

    def layer(
        self,
        base_tag: str | None,
        entries: Sequence[Placed],
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        entry: EntryWriter,
    ) -> NewLayer | None:
        """The imports, then the steps in a container on an overlay of the base's layers;
        the upper directory becomes the layer in ``entry`` (None: nothing changed)."""
        epoch = self.epoch
        private = self.store.private_dir(RUN_PREFIX, f"build cache {self.store.path}")
        work = Path(private.path)
        lowers: list[int] = []
        later = contextlib.ExitStack()  # the stopped containers' deletions, while this goes on
        try:
            helper = sandbox.Helper()  # the first step's, starting while the root is made
            later.callback(helper.close)  # if no step used it
            base = self.store.open(base_tag) if base_tag else None
            try:
                self.phase("unpacking the base")  # once per base layer, kept in the cache
                lowers = rootfs.layer_dirs(base, self.store.layers, epoch) if base else []
                base_config = dict(base.config.data) if base else {}
            finally:
                if base is not None:
                    base.close()
            upper = work / "upper"
            upper.mkdir()
            materialize(entries, upper, epoch)
            mounts = self._mounts(imports, binds, work)
            container = runtime_config(base_config, self.spec)
            with rootfs.overlay(lowers, upper, work / "work", work / "merged") as merged:
                check_user_tables(merged, f"images.{self.name}.run")
                uid, gid, groups = user_ids(merged, container.get("User") or "", self.name)
                self.phase(run_text(self.spec))
                self._steps(merged, container, uid, gid, groups, mounts, work, later, helper)
            lower, write_tar, on_entry = self.writing()
            self.phase("writing layer")
            self._drop_mount_points(upper, lower)
            base_top = set((lower.tree.root.children or {}).keys())
            return self._upper_layer(entry, upper, base_top, write_tar, on_entry)
        finally:
            try:
                later.close()  # before the directory their bundles are in is removed
            finally:
                for fd in lowers:
                    os.close(fd)
                private.remove()

    def _mounts(
        self,
        imports: Sequence[ImportContent],
        binds: Sequence[ImportContent | None],
        work: Path,
    ) -> list[sandbox.Mount]:
        """What the steps mount: each read-only bind and each import as it was hashed
        (made in the step's private directory from the bytes the key saw, never the live
        path), each writable bind as the host path it is."""
        mounts = []
        for i, (bind, content) in enumerate(zip(self.spec.binds, binds, strict=True)):
            if content is None:
                source = bind_source(bind, self.context)
                mounts.append(sandbox.Mount(str(source), bind.dest, True))
                continue
            staged = stage_for_steps(content, work / f"bind-{i}", self.epoch)
            if staged is None:  # it was resolved: a symlink now means it was swapped
                raise changed(content.origin)
            mounts.append(sandbox.Mount(str(staged), bind.dest))
        for i, c in enumerate(imports):
            staged = stage_for_steps(c, work / f"import-{i}", self.epoch)
            if staged is not None:
                target = f"{sandbox.IMPORTS_DIR}/{c.spec.src.strip('/')}"
                mounts.append(sandbox.Mount(str(staged), target))
        return mounts

    def _steps(
        self,
        merged: Path,
        config: Mapping[str, Any],
        uid: int,
        gid: int,
        groups: Sequence[int],
        mounts: Sequence[sandbox.Mount],
        work: Path,
        later: contextlib.ExitStack,
        helper: sandbox.Helper,
    ) -> None:
        name, spec = self.name, self.spec
        commands = [spec.run] if isinstance(spec.run, str) else list(spec.run or [])
        shell = spec.shell or DEFAULT_SHELL
        env = list(config.get("Env") or []) or [f"PATH={DEFAULT_PATH}"]
        if not any(e.startswith("PATH=") for e in env):
            env.append(f"PATH={DEFAULT_PATH}")
        path = next(e for e in env if e.startswith("PATH=")).removeprefix("PATH=")
        cwd = config.get("WorkingDir") or "/"

        def check_shell(where: str) -> None:
            if not sandbox.has_program(merged, shell[0], path, cwd):
                scratch = " (from: scratch has no shell)" if spec.from_ == "scratch" else ""
                raise BuildError(
                    f"{where}: the image has no {quote(shell[0])[1:-1]}{scratch}; import a "
                    "shell (a static busybox) or set shell:"
                )

        check_shell(f"images.{name}.run")  # before a log is made for nothing
        log_path, log = self.store.open_log(self.recipe, name, self.layer_type)
        with log:
            for i, command in enumerate(commands):
                if len(commands) > 1:
                    self.phase(f"run step {i + 1}/{len(commands)}")
                where = f"images.{name}.run" + (f"[{i}]" if len(commands) > 1 else "")
                shown = quote(command, STEP_QUOTE)
                if i:  # the step before may have changed them
                    check_user_tables(merged, where)
                    check_shell(where)
                log.write(f"--- {where}: {shown}\n")

                def line(text: str, log: Any = log) -> None:
                    log.write(text + "\n")
                    self.step_output(f"{name} | {text}")

                result = sandbox.run_step(
                    merged,
                    [*shell, command],
                    env=env,
                    cwd=cwd,
                    uid=uid,
                    gid=gid,
                    groups=groups,
                    mounts=list(mounts),
                    network_host=spec.network == "host",
                    runtime=self.runtime,
                    on_line=line,
                    bundle=work / f"step-{i}",
                    later=later,
                    helper=helper if i == 0 else None,
                )
                if result.runtime_error is not None:
                    log.write(f"--- {self.runtime}: {result.runtime_error}\n")
                    raise BuildError(
                        f"{where} ({shown}): {self.runtime} could not start the step "
                        f"(exit code {result.exit_code}, log: {log_path}): {result.runtime_error}"
                    )
                if result.exit_code != 0:
                    log.write(f"--- exit code {result.exit_code}\n")
                    tail = " | ".join(result.tail[-5:]) or "no output"
                    raise BuildError(
                        f"{where} ({shown}) failed with exit code {result.exit_code} "
                        f"(log: {log_path}): {tail}"
                    )

    def _drop_mount_points(self, upper: Path, lower: LowerLayers) -> None:
        """What the runtime made for binds (empty directories, an empty file), where the
        base has nothing; following no symlink a step may have put on the way."""
        for bind in self.spec.binds:
            parts = [p for p in bind.dest.split("/") if p]
            rootfs.remove_mount_point(upper, parts, lambda p: lower.tree.lookup(p) is not None)

    def _upper_layer(
        self,
        entry: EntryWriter,
        upper: Path,
        base_top: set[str],
        write_tar: TarLayerWriter,
        on_entry: EntryHook | None,
    ) -> NewLayer | None:
        """The upper directory as the layer; None if the steps and imports changed nothing."""
        epoch = self.epoch
        drop = frozenset(rootfs.MOUNT_POINTS - base_top)
        if next(iter(overlay_entries(upper, drop)), None) is None:
            return None
        if self.layer_type == "squashfs":
            from ..layer import squashfs  # here: a tar layer's step loads no squashfs tool
            from . import squashfs_layers

            out = upper.parent / "layer.sqfs"  # the upper directory made a layer's tree first
            squashfs.make(upper, out, mkfs_time=epoch, drop=rootfs.dropped_names(base_top))
            return squashfs_layers.store_file(entry, out)
        return write_tar(
            entry,
            lambda out: rootfs.write_upper_tar(upper, out, base_top, epoch, on_entry),
        )
