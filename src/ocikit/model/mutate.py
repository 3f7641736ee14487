"""Edits of an image config, as pure functions: each takes a config document (an
``ImageConfig``'s ``data``, or any mapping of its JSON) and returns a new one, the input
untouched; only what an edit changes is copied, every other key keeps its value and its
place. ``encode`` gives the bytes, ``to_config`` a parsed ``ImageConfig`` of them.

The container config's edits (``with_env``, ``with_labels``...) are what a recipe's
``config:`` says; ``append_layer`` adds a diff_id with its history entry, as a layer is
added (a history entry alone, ``empty_layer``, when none is); ``with_diff_ids`` replaces
the diff_ids of layers rewritten (``copy --repair``, squashfs conversions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .manifest import ImageConfig, canonical_json

__all__ = [
    "append_layer",
    "encode",
    "to_config",
    "with_cmd",
    "with_config",
    "with_created",
    "with_diff_ids",
    "with_entrypoint",
    "with_env",
    "with_exposed_ports",
    "with_labels",
    "with_stop_signal",
    "with_user",
    "with_volumes",
    "with_working_dir",
]

Document = Mapping[str, Any]


def _config(doc: Document) -> dict[str, Any]:
    return dict(doc.get("config") or {})


def with_config(doc: Document, **changes: Any) -> dict[str, Any]:
    """``doc`` with keys of its container config (``config``) set: ``Env=[...]``..."""
    return {**doc, "config": {**_config(doc), **changes}}


def with_env(doc: Document, env: Mapping[str, str]) -> dict[str, Any]:
    """Each variable of ``env`` set: an earlier ``NAME=`` of the same name removed, the new
    one appended (in ``env``'s order)."""
    entries = list(_config(doc).get("Env") or [])
    for name, value in env.items():
        entries = [e for e in entries if e.partition("=")[0] != name]
        entries.append(f"{name}={value}")
    return with_config(doc, Env=entries)


def with_entrypoint(doc: Document, argv: Sequence[str]) -> dict[str, Any]:
    return with_config(doc, Entrypoint=list(argv))


def with_cmd(doc: Document, argv: Sequence[str]) -> dict[str, Any]:
    return with_config(doc, Cmd=list(argv))


def with_user(doc: Document, user: str) -> dict[str, Any]:
    return with_config(doc, User=user)


def with_working_dir(doc: Document, path: str) -> dict[str, Any]:
    return with_config(doc, WorkingDir=path)


def with_stop_signal(doc: Document, signal: str) -> dict[str, Any]:
    return with_config(doc, StopSignal=signal)


def with_labels(doc: Document, labels: Mapping[str, str]) -> dict[str, Any]:
    """``labels`` added, replacing those of the same name."""
    return with_config(doc, Labels={**(_config(doc).get("Labels") or {}), **labels})


def with_exposed_ports(doc: Document, ports: Iterable[str]) -> dict[str, Any]:
    """Each port exposed (``80`` means ``80/tcp``)."""
    exposed = dict(_config(doc).get("ExposedPorts") or {})
    for port in ports:
        exposed[port if "/" in port else f"{port}/tcp"] = {}
    return with_config(doc, ExposedPorts=exposed)


def with_volumes(doc: Document, paths: Iterable[str]) -> dict[str, Any]:
    volumes = {**(_config(doc).get("Volumes") or {}), **{p: {} for p in paths}}
    return with_config(doc, Volumes=volumes)


def with_created(doc: Document, created: str) -> dict[str, Any]:
    return {**doc, "created": created}


def append_layer(doc: Document, diff_id: str | None, history: Mapping[str, Any]) -> dict[str, Any]:
    """A layer appended: its ``diff_id`` after the others, ``history`` after theirs. With no
    ``diff_id`` only the history entry is appended, marked ``empty_layer``."""
    entry = dict(history)
    out = {**doc, "history": [*(doc.get("history") or []), entry]}
    if diff_id is None:
        entry["empty_layer"] = True
    else:
        rootfs = doc.get("rootfs") or {"type": "layers"}
        out["rootfs"] = {**rootfs, "diff_ids": [*(rootfs.get("diff_ids") or []), diff_id]}
    return out


def with_diff_ids(doc: Document, diff_ids: Sequence[str]) -> dict[str, Any]:
    """The layers' diff_ids replaced (layers rewritten: the history is theirs still)."""
    return {**doc, "rootfs": {**(doc.get("rootfs") or {}), "diff_ids": list(diff_ids)}}


def encode(doc: Document) -> bytes:
    """The bytes ocikit writes for a config it made: canonical JSON, keys sorted."""
    return canonical_json(doc, sort_keys=True)


def to_config(raw: bytes, what: str = "image config") -> ImageConfig:
    """``raw`` (``encode``'s or a kept order's bytes) parsed and checked as any config is."""
    return ImageConfig.parse(raw, what)
