"""What docker will refuse, or extract wrongly, in an image ``copy`` writes for it.

``copy`` to ``docker-archive:`` or ``docker-daemon:`` shows every layer's tar entries, as the
layer streams through, to a ``LoadCheck``: the analyzer of ``check`` (ocikit/help/check.md)
on the same bytes, read once. What it finds of severity error becomes one warning a rule
(not one an entry), with what ``--repair`` does about it; ``hint`` adds the same to the
engine's refusal.

Layers are analyzed in order, each on the tree the layers below leave. A sequential copy
feeds each layer's entries to the analyzer as they come; a concurrent one (layers copied at
once) records them, and they are analyzed in order once copied (memory then grows with the
number of paths of the image, as ``check``'s does). A layer the copy does not read (already
at the destination) is not analyzed: the check is then partial, never wrong about a layer it
read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import InputError
from ..layer.analyze import ERROR, SEVERITY, UNSAFE, Finding, LayerAnalyzer, Tree
from ..layer.tarstream import TarEntry
from ..layer.transcode import EntryWatcher
from ..model import Digest
from ..model.jsondoc import counted, one_line, quote
from ..transports import Image

#: what each rule does to the image in docker, where it is known (else: check refuses it)
CONSEQUENCE = {
    "duplicate-path": "docker load refuses the image",
    "replaces-symlinked-dir": "the directory behind the symlink vanishes in the container",
    "parent-not-dir": "docker's extraction fails",
    "unsupported-type": "docker's extraction fails",
    "name-too-long": "docker's extraction fails",
    "owner-out-of-range": "docker applies another owner (cut to 32 bits)",
    "layer-unreadable": "docker cannot load the layer",
}
SHOWN_LAYERS = 5  # layers named in one warning


@dataclass
class _Problem:
    count: int = 0
    layers: list[int] = field(default_factory=list)
    example: Finding | None = None


class _Recording:
    """A layer's entries, kept to be analyzed later (or again, for a repeated layer)."""

    def __init__(self) -> None:
        self.entries: list[TarEntry] = []
        self.error: InputError | None = None


class _Watcher:
    def __init__(self, analyzer: LayerAnalyzer | None, recording: _Recording | None) -> None:
        self.analyzer = analyzer
        self.recording = recording
        self.error: InputError | None = None
        self._n = 0

    def entry(self, entry: TarEntry) -> None:
        if self.analyzer is not None:
            self.analyzer.feed(self._n, entry)
        if self.recording is not None:
            self.recording.entries.append(entry)
        self._n += 1

    def unreadable(self, error: InputError) -> None:
        self.error = error
        if self.recording is not None:
            self.recording.error = error


class LoadCheck:
    """Fed by ``copy`` (``watcher`` for a layer it reads, ``layer_done`` for every layer, in
    order); then ``warnings`` and ``hint``. ``live``: layers are read in order, one at a
    time (else they are recorded and analyzed by ``layer_done``)."""

    def __init__(self, image: Image, *, live: bool) -> None:
        self._digests = [layer.descriptor.digest for layer in image.layers]
        self._live = live
        self._tree = Tree()
        self._repeated = {d for d in self._digests if self._digests.count(d) > 1}
        self._recorded: dict[Digest, _Recording] = {}
        self._watching: dict[int, _Watcher] = {}
        self._lock = threading.Lock()
        self.problems: dict[str, _Problem] = {}
        self.unread: list[int] = []  # layers the copy did not read: not analyzed

    def watcher(self, index: int) -> EntryWatcher:
        """What layer ``index``'s entries are shown to while the copy reads it."""
        digest = self._digests[index]
        recording = None
        if not self._live or digest in self._repeated:
            recording = _Recording()
            with self._lock:
                self._recorded[digest] = recording
        analyzer = LayerAnalyzer(self._tree, index, digest) if self._live else None
        watcher = _Watcher(analyzer, recording)
        if self._live:
            self._watching[index] = watcher
        return watcher

    def layer_done(self, index: int) -> None:
        """Layer ``index`` is copied (every layer below it was, before)."""
        digest = self._digests[index]
        watched = self._watching.pop(index, None)
        if watched is not None and watched.analyzer is not None:
            analyzer, error = watched.analyzer, watched.error
        else:
            with self._lock:
                recording = self._recorded.get(digest)
            if recording is None:
                self.unread.append(index)
                return
            analyzer = LayerAnalyzer(self._tree, index, digest)
            for n, entry in enumerate(recording.entries):
                analyzer.feed(n, entry)
            error = recording.error
        analyzer.finish()
        for rule, n in analyzer.counts.items():
            if SEVERITY.get(rule) == ERROR:
                example = next((f for f in analyzer.findings if f.rule == rule and f.paths), None)
                self._add(rule, n, index, example)
        if error is not None:
            self._add("layer-unreadable", 1, index, Finding("layer-unreadable", str(error)))
        if digest not in self._repeated:
            with self._lock:
                self._recorded.pop(digest, None)  # analyzed: its entries are not needed again

    def _add(self, rule: str, n: int, layer: int, example: Finding | None) -> None:
        problem = self.problems.setdefault(rule, _Problem())
        problem.count += n
        problem.layers.append(layer)
        if problem.example is None:
            problem.example = example

    def warnings(self) -> list[str]:
        """One line a rule found: how many paths, in which layers, the first, what docker
        does with it and what ``--repair`` does."""
        lines = []
        for rule, problem in sorted(self.problems.items()):
            where = _layers(problem.layers)
            example = problem.example
            if rule == "layer-unreadable":
                why = one_line(example.message, 200) if example is not None else ""
                what = f"{where} is not a tar archive docker reads ({why})"
            else:
                what = f"{counted(problem.count, 'path')} in {where}"
                if example is not None and example.paths:
                    what += f" (first: {quote(example.paths[0])} in layer {example.layer})"
            consequence = CONSEQUENCE.get(rule, "`ocikit check` refuses the image")
            lines.append(f"warning: {rule}: {what}: {consequence}; {_remedy(rule)}")
        return lines

    def hint(self) -> str | None:
        """For the engine's refusal: the rules found and the remedy; None if none."""
        if not self.problems:
            return None
        rules = sorted(self.problems)
        remedies = sorted({_remedy(rule) for rule in rules})
        return f"the image has {', '.join(rules)} problems: {'; '.join(remedies)}"


def _remedy(rule: str) -> str:
    if rule == "layer-unreadable":
        return "`ocikit check` tells more"
    if rule in UNSAFE:
        return "`ocikit copy --repair --drop-unsafe` drops those entries"
    return "`ocikit copy --repair` rewrites them"


def _layers(layers: list[int]) -> str:
    shown = [str(n) for n in layers[:SHOWN_LAYERS]]
    if len(layers) > SHOWN_LAYERS:
        return f"layers {', '.join(shown)} and {len(layers) - SHOWN_LAYERS} more"
    if len(shown) == 1:
        return f"layer {shown[0]}"
    return f"layers {', '.join(shown[:-1])} and {shown[-1]}"
