"""The config of an image built: the base's, changed as the recipe's ``config:`` says (the
pure edits of ``model.mutate``), its platform, and the new layer (or an empty one) appended
with its history entry. Pure but for the clock (``--timestamp now``) and the host's
architecture (an image that names none)."""

from __future__ import annotations

import platform as _platform
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..model import Descriptor, Digest
from ..model import mutate as m
from .recipe import ImageSpec


def host_arch() -> str:
    """The host's architecture, in the image-spec's words (``amd64``, ``arm64``...)."""
    machine = _platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def iso_time(epoch: int | None) -> str:
    """``epoch`` (None: now) as the image-spec writes times, to the second, in UTC."""
    when = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(
    base: Mapping[str, Any],
    spec: ImageSpec,
    layer: tuple[Descriptor, Digest] | None,
    epoch: int | None,
    name: str,
) -> dict[str, Any]:
    """The image config: the base's, changed as the recipe says, the new layer appended.
    Of the base's keys only these are kept: its container config, diff_ids and history,
    and its platform where the recipe names none."""
    created = iso_time(epoch)
    doc: dict[str, Any] = {
        "architecture": spec.arch or base.get("architecture") or host_arch(),
        "os": spec.os or base.get("os") or "linux",
        "created": created,
        "config": dict(base.get("config") or {}),
        "rootfs": {
            "type": "layers",
            "diff_ids": list((base.get("rootfs") or {}).get("diff_ids") or []),
        },
        "history": list(base.get("history") or []),
    }
    variant = spec.variant or base.get("variant")
    if variant:
        doc["variant"] = variant
    doc = configured(doc, spec)
    entry = {"created": created, "created_by": f"ocikit build {name}"}
    return m.append_layer(doc, None if layer is None else str(layer[1]), entry)


#: each field of a recipe's ``config:`` and its edit (a field left out keeps the base's)
EDITS: tuple[tuple[str, Callable[[Mapping[str, Any], Any], dict[str, Any]]], ...] = (
    ("env", m.with_env),
    ("entrypoint", m.with_entrypoint),
    ("cmd", m.with_cmd),
    ("user", m.with_user),
    ("working_dir", m.with_working_dir),
    ("labels", m.with_labels),
    ("exposed_ports", m.with_exposed_ports),
    ("volumes", m.with_volumes),
    ("stop_signal", m.with_stop_signal),
)


def configured(doc: Mapping[str, Any], spec: ImageSpec) -> dict[str, Any]:
    """``doc`` with the recipe's ``config:`` applied (what it leaves out stays the base's)."""
    out = dict(doc)
    for name, edit in EDITS:
        value = getattr(spec.config, name)
        if value is not None:
            out = edit(out, value)
    return out


def runtime_config(base: Mapping[str, Any], spec: ImageSpec) -> dict[str, Any]:
    """The container config run steps see: the base's with the recipe's ``config:``."""
    return dict(configured({"config": dict(base.get("config") or {})}, spec)["config"])
