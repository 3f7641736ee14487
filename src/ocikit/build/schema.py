"""Typed records: the recipe's schema as frozen dataclasses, validated from parsed YAML with
every error and its path, dumped back to JSON-ready data, and described as JSON Schema.

A record is a ``@record`` class (a frozen, keyword-only dataclass deriving from ``Record``)
whose fields are ``field(...)``: a default or a factory, a description, and the key it has in
the file (``alias``, for a name Python reserves: ``from``). Its annotations are the schema:
``str``, ``int``, ``bool``, ``None``, ``Literal[...]``, ``list[T]``, ``dict[str, T]``,
another record, and unions of these. Functions marked ``@checks("name", ...)`` refine a
field's value once its type is right: they return it (possibly converted) or raise
ValueError with what is wrong.

Why not a validation library: the six records of a recipe took pydantic 0.1 s of every
build's start (its import and the construction of its validators), more than a whole run
step. What this does instead is small, and every rule it applies is written here:

- a value of the wrong type is an error, with one exception made for what YAML writers
  mean: a boolean field takes the words ``true/false, yes/no, on/off, y/n, t/f, 1/0``
  (any case, as text or the numbers 0 and 1);
- a union takes the member of the value's shape (text, number, list, mapping) and reports
  that member's errors, not one per member;
- an unknown key is an error (``extra_forbidden``), a missing required one too (``missing``);
- ``validate`` never raises for bad data: it returns the problems, each with its location
  (keys and list indexes), a kind, a message and the input.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import (
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
)

__all__ = [
    "Field",
    "Problem",
    "Record",
    "checks",
    "dump",
    "field",
    "fields",
    "is_record",
    "json_schema",
    "members",
    "record",
    "validate",
]

T = TypeVar("T")
Loc = tuple[str | int, ...]

# what a boolean field takes besides true and false (pydantic's and YAML 1.1's words)
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_MISSING: Any = dataclasses.MISSING


class Problem(NamedTuple):
    """One error of the data: where (keys and indexes from the top), what kind
    (``missing``, ``extra_forbidden``, ``string_type``, ``value_error``, ...), the message,
    the value found, and for an unknown key the keys its mapping knows."""

    loc: Loc
    kind: str
    message: str
    input: Any = None
    known: tuple[str, ...] = ()


class Record:
    """The base of records: ``@record`` makes a subclass a frozen keyword-only dataclass."""

    _written_doc: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the docstring as written (dataclass makes one up for a class without)
        cls._written_doc = cls.__dict__.get("__doc__")


def field(
    default: Any = _MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    description: str | None = None,
    alias: str | None = None,
) -> Any:
    """A record's field: its default (or ``factory``), description and key in the file."""
    metadata = {"description": description, "alias": alias}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """A ``Record`` subclass as a frozen, keyword-only dataclass."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def checks(*names: str) -> Callable[[Callable[[Any], Any]], Any]:
    """Marks a function of a record's class body as the check of the fields ``names``."""

    def mark(fn: Callable[[Any], Any]) -> Any:
        fn._checked_fields = names  # type: ignore[attr-defined]
        return staticmethod(fn)

    return mark


@dataclasses.dataclass(frozen=True)
class Field:
    """What a record knows of one of its fields."""

    name: str  # the attribute
    key: str  # in the file
    annotation: Any
    required: bool
    default: Any  # _MISSING when required or made by a factory
    description: str | None
    checks: tuple[Callable[[Any], Any], ...]


def is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record) and dataclasses.is_dataclass(tp)


def fields(cls: type[Record]) -> tuple[Field, ...]:
    """The fields of a record, in the order they are declared."""
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = _fields(cls)
    return known


_FIELDS: dict[type[Record], tuple[Field, ...]] = {}


def _fields(cls: type[Record]) -> tuple[Field, ...]:
    hints = typing.get_type_hints(cls)
    found: dict[str, list[Callable[[Any], Any]]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            fn = getattr(value, "__func__", None)
            for name in getattr(fn, "_checked_fields", ()):
                found.setdefault(name, []).append(fn)  # type: ignore[arg-type]
    return tuple(
        Field(
            name=f.name,
            key=f.metadata.get("alias") or f.name,
            annotation=hints[f.name],
            required=f.default is _MISSING and f.default_factory is _MISSING,
            default=f.default,
            description=f.metadata.get("description"),
            checks=tuple(found.get(f.name, ())),
        )
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]  # a @record
    )


def members(tp: Any) -> tuple[Any, ...]:
    """The members of a union (a type alone: itself)."""
    if get_origin(tp) in (Union, types.UnionType):
        return get_args(tp)
    return (tp,)


# -- validation --------------------------------------------------------------------------


def validate(tp: Any, data: Any) -> tuple[Any, list[Problem]]:
    """``data`` (parsed YAML or JSON) as a value of ``tp``, and every problem found; the
    value is None when there is a problem."""
    problems: list[Problem] = []
    ok, value = _value(tp, data, (), problems)
    return (value if ok and not problems else None), problems


def _value(tp: Any, data: Any, loc: Loc, problems: list[Problem]) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(get_args(tp), data, loc, problems)
    if is_record(tp):
        return _record(tp, data, loc, problems)
    if origin is list:
        if not isinstance(data, list):
            return _wrong(tp, data, loc, problems)
        (item,) = get_args(tp)
        items = [_value(item, x, (*loc, i), problems) for i, x in enumerate(data)]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        if not isinstance(data, dict):
            return _wrong(tp, data, loc, problems)
        _, item = get_args(tp)
        good, out = True, {}
        for k, x in data.items():
            if not isinstance(k, str):
                what = (
                    "has no value (YAML reads an empty key or ~ as null)"
                    if k is None
                    else (f"{k!r} is not text")
                )
                problems.append(Problem(loc, "key_type", f"a key {what}", k))
                good = False
                continue
            ok, out[k] = _value(item, x, (*loc, k), problems)
            good = good and ok
        return good, out
    if _fits(tp, data):
        return True, _bool(data) if tp is bool else data
    return _wrong(tp, data, loc, problems)


def _fits(tp: Any, data: Any) -> bool:
    """Whether ``data`` is a value of the simple type ``tp`` as it is (a boolean: as YAML
    writers write one)."""
    if tp is str:
        return isinstance(data, str)
    if tp is bool:
        return _bool(data) is not None
    if tp is int:
        return isinstance(data, int) and not isinstance(data, bool)
    if tp is type(None):
        return data is None
    if get_origin(tp) is Literal:
        return any(type(data) is type(v) and data == v for v in get_args(tp))
    if tp is Any:
        return True
    raise TypeError(f"the schema has a type records do not know: {tp!r}")


def _bool(data: Any) -> bool | None:
    if isinstance(data, bool):
        return data
    if isinstance(data, int) and data in (0, 1):
        return bool(data)
    if isinstance(data, str):
        word = data.lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def _shape(tp: Any, data: Any) -> bool:
    """Whether ``data`` has the shape of ``tp`` (a union's member): its errors, if any, are
    the ones to report."""
    origin = get_origin(tp)
    if origin is list:
        return isinstance(data, list)
    if origin is dict or is_record(tp):
        return isinstance(data, dict)
    return _fits(tp, data)


def _union(
    options: tuple[Any, ...], data: Any, loc: Loc, problems: list[Problem]
) -> tuple[bool, Any]:
    chosen = [m for m in options if _shape(m, data)]
    if len(chosen) > 1:  # several fit: the first that validates, else the first's errors
        for m in chosen:
            tried: list[Problem] = []
            ok, value = _value(m, data, loc, tried)
            if ok and not tried:
                return True, value
    if chosen:
        return _value(chosen[0], data, loc, problems)
    if data is None and str in options:  # said as "has no value": see recipe._format
        problems.append(Problem(loc, "string_type", "Input should be a valid string", None))
        return False, None
    wanted = [m for m in options if m is not type(None)]
    if len(wanted) == 1:  # an optional value: the type's own error
        return _wrong(wanted[0], data, loc, problems)
    said = " or ".join(_expected(m) for m in wanted)
    problems.append(Problem(loc, "union_type", f"Input should be {said}", data))
    return False, None


def _wrong(tp: Any, data: Any, loc: Loc, problems: list[Problem]) -> tuple[bool, None]:
    kind = "literal_error" if get_origin(tp) is Literal else f"{_name(tp)}_type"
    problems.append(Problem(loc, kind, f"Input should be {_expected(tp)}", data))
    return False, None


def _name(tp: Any) -> str:
    if is_record(tp) or get_origin(tp) is dict:
        return "dict"
    if get_origin(tp) is list:
        return "list"
    return {str: "string", int: "int", bool: "bool", type(None): "none"}.get(tp, "value")


def _expected(tp: Any) -> str:
    if get_origin(tp) is Literal:
        shown = [repr(v) for v in get_args(tp)]
        return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f" or {shown[-1]}"
    return {
        "dict": "a valid dictionary",
        "list": "a valid list",
        "string": "a valid string",
        "int": "a valid integer",
        "bool": "a valid boolean (true or false)",
        "none": "null",
    }.get(_name(tp), repr(tp))


def _record(cls: type[Record], data: Any, loc: Loc, problems: list[Problem]) -> tuple[bool, Any]:
    if not isinstance(data, dict):
        return _wrong(cls, data, loc, problems)
    before = len(problems)
    known = fields(cls)
    keys = tuple(f.key for f in known)
    for k, x in data.items():
        if k not in keys:
            where = (*loc, k if isinstance(k, str | int) else repr(k))
            problems.append(Problem(where, "extra_forbidden", "unknown field", x, keys))
    values = {}
    for f in known:
        at = (*loc, f.key)
        if f.key not in data:
            if f.required:
                problems.append(Problem(at, "missing", "Field required", data))
            continue
        ok, value = _value(f.annotation, data[f.key], at, problems)
        if not ok:
            continue
        try:
            for check in f.checks:
                value = check(value)
        except ValueError as e:
            problems.append(Problem(at, "value_error", str(e), value))
            continue
        values[f.name] = value
    if len(problems) > before:
        return False, None
    return True, cls(**values)


# -- output ------------------------------------------------------------------------------


def dump(value: Any) -> Any:
    """A value as JSON-ready data: records as mappings of their keys (every field, in the
    order declared), lists and mappings of these."""
    if is_record(type(value)):
        return {f.key: dump(getattr(value, f.name)) for f in fields(type(value))}
    if isinstance(value, list | tuple):
        return [dump(x) for x in value]
    if isinstance(value, dict):
        return {k: dump(x) for k, x in value.items()}
    return value


def json_schema(cls: type[Record]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a record: the other records it holds in ``$defs``."""
    defs: dict[str, Any] = {}
    top = _record_schema(cls, defs)
    if defs:
        top = {"$defs": dict(sorted(defs.items())), **top}
    return top


def _record_schema(cls: type[Record], defs: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in fields(cls):
        schema = _type_schema(f.annotation, defs)
        if not f.required and f.default is not _MISSING:
            schema["default"] = dump(f.default)
        if f.description:
            schema["description"] = f.description
        if "$ref" not in schema:
            schema["title"] = f.key.replace("_", " ").title()
        props[f.key] = dict(sorted(schema.items()))
    out: dict[str, Any] = {"additionalProperties": False}
    if cls._written_doc:
        out["description"] = inspect.cleandoc(cls._written_doc)
    out["properties"] = props
    if required := [f.key for f in fields(cls) if f.required]:
        out["required"] = required
    out.update(title=cls.__name__, type="object")
    return out


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type_schema(m, defs) for m in get_args(tp)]}
    if is_record(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # while it is made: a record that holds itself
            defs[tp.__name__] = _record_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is list:
        return {"items": _type_schema(get_args(tp)[0], defs), "type": "array"}
    if origin is dict:
        return {"additionalProperties": _type_schema(get_args(tp)[1], defs), "type": "object"}
    if origin is Literal:
        values = get_args(tp)
        kind = _json_type(type(values[0]))
        if len(values) == 1:
            return {"const": values[0], "type": kind}
        return {"enum": list(values), "type": kind}
    return {"type": _json_type(tp)}


def _json_type(tp: Any) -> str:
    return {str: "string", int: "integer", bool: "boolean", type(None): "null"}[tp]
