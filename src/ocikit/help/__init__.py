"""Texts the installed package carries, printed by ``ocikit help TOPIC``: what a user needs
without a clone of the sources.

- ``check``: the rules of ``check``, ``copy --repair`` and ``unpack`` (``check.md``);
- ``recipe``: every field of a build recipe with its description, from the schema itself
  (the records of ``build.recipe``), so it cannot drift from what is validated.
"""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from typing import Any

TOPICS = {
    "check": "the rules of check, copy --repair and unpack",
    "recipe": "the fields of a build recipe (ocikit.yaml)",
}


def text(topic: str) -> str:
    """The help of ``topic`` (one of ``TOPICS``)."""
    if topic == "check":
        return resources.files(__package__).joinpath("check.md").read_text(encoding="utf-8")
    if topic == "recipe":
        from ..build.recipe import recipe_schema

        return _recipe(recipe_schema())
    raise KeyError(topic)


def _recipe(schema: dict[str, Any]) -> str:
    lines = [
        "# The fields of a build recipe (ocikit.yaml)",
        "",
        "A YAML mapping; every key is checked (an unknown one is an error). Paths: `from:`",
        "paths are relative to the recipe's directory, imports and binds to the context.",
        "The JSON Schema: ocikit build --print-schema.",
        "",
    ]
    defs = schema.get("$defs", {})
    _fields(schema, defs, "", lines, set())
    return "\n".join(lines) + "\n"


def _fields(
    node: dict[str, Any], defs: dict[str, Any], at: str, lines: list[str], seen: set[str]
) -> None:
    for name, prop in (node.get("properties") or {}).items():
        where = f"{at}.{name}" if at else name
        desc = prop.get("description") or ""
        kind = _kind(prop, defs)
        lines.append(f"{where}  ({kind})")
        lines.extend(textwrap.wrap(desc, 92, initial_indent="    ", subsequent_indent="    "))
        for ref, suffix in _refs(prop):
            target = ref.rsplit("/", 1)[-1]
            if target in seen:
                continue
            _fields(defs.get(target, {}), defs, where + suffix, lines, seen | {target})


def _refs(prop: dict[str, Any]) -> list[tuple[str, str]]:
    """The models a property holds, with how its path goes on (``.x``, ``[i].x``, ``.NAME.x``)."""
    found: list[tuple[str, str]] = []
    for option in [prop, *(prop.get("anyOf") or [])]:
        if "$ref" in option:
            found.append((option["$ref"], ""))
        items = option.get("items") or {}
        if "$ref" in items:
            found.append((items["$ref"], "[i]"))
        extra = option.get("additionalProperties")
        if isinstance(extra, dict) and "$ref" in extra:
            found.append((extra["$ref"], ".NAME"))
    return found


def _kind(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    options = prop.get("anyOf") or [prop]
    kinds = []
    for option in options:
        if "$ref" in option:
            kinds.append("mapping")
        elif option.get("type") == "array":
            kinds.append("list")
        elif option.get("type") == "object":
            kinds.append("mapping")
        elif "enum" in option:
            kinds.append(" | ".join(str(v) for v in option["enum"]))
        elif "const" in option:
            kinds.append(str(option["const"]))
        elif option.get("type") and option["type"] != "null":
            kinds.append(str(option["type"]))
    default = prop.get("default")
    text = " or ".join(dict.fromkeys(kinds)) or "any"
    if default not in (None, [], {}):
        text += f", default {json.dumps(default)}"
    return text
