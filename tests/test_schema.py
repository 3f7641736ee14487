"""The recipe's records (``ocikit.build.schema``): what each type takes and refuses, one error
per union (the member of the value's shape), unknown and missing keys, checks, the dump that
cache keys are made of, and the JSON Schema; never an exception for data, whatever it is.

In process, on hand-built data and on recipes read from text."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocikit.build import RecipeError, load_recipe
from ocikit.build.recipe import Bind, Built, ImageConfigSpec, ImageSpec, Import, Recipe
from ocikit.build.schema import (
    Problem,
    Record,
    checks,
    dump,
    field,
    fields,
    json_schema,
    record,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent


@record
class Inner(Record):
    """An inner record."""

    name: str
    size: int = field(0, description="How big.")


@record
class Outer(Record):
    kind: Literal["a", "b"] = "a"
    on: bool = False
    inner: Inner | None = None
    either: str | list[str] | None = None
    items: list[Inner] = field(factory=list)
    table: dict[str, int] = field(factory=dict)
    keyword: str | None = field(None, alias="class")

    @checks("keyword")
    def _lower(v: str | None) -> str | None:
        if v is not None and v != v.lower():
            raise ValueError("must be lowercase")
        return v.strip() if v else v


def errors(tp: Any, data: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    value, problems = validate(tp, data)
    assert (value is None) == bool(problems)
    return [(p.loc, p.kind, p.message) for p in problems]


def test_a_valid_mapping_is_a_record_with_its_defaults() -> None:
    value, problems = validate(Outer, {"inner": {"name": "x"}, "class": " k "})
    assert problems == []
    assert value == Outer(inner=Inner(name="x"), keyword="k")  # the check converts
    assert value.items == [] and value.table == {} and value.kind == "a"
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.on = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        Inner("x")  # type: ignore[misc]  # keyword-only


TEXT, NUMBER = "Input should be a valid string", "Input should be a valid integer"
MAPPING, LIST = "Input should be a valid dictionary", "Input should be a valid list"
BOOLEAN = "Input should be a valid boolean (true or false)"
NULL_KEY = "a key has no value (YAML reads an empty key or ~ as null)"


@pytest.mark.parametrize(
    ("data", "found"),
    [
        ({"kind": "c"}, [(("kind",), "literal_error", "Input should be 'a' or 'b'")]),
        ({"kind": 1}, [(("kind",), "literal_error", "Input should be 'a' or 'b'")]),
        ({"inner": {"name": 5}}, [(("inner", "name"), "string_type", TEXT)]),
        ({"inner": {"name": "x", "size": True}}, [(("inner", "size"), "int_type", NUMBER)]),
        ({"inner": {"name": "x", "size": "3"}}, [(("inner", "size"), "int_type", NUMBER)]),
        ({"inner": []}, [(("inner",), "dict_type", MAPPING)]),
        ({"items": {"name": "x"}}, [(("items",), "list_type", LIST)]),
        ({"items": [{"name": "x"}, 5]}, [(("items", 1), "dict_type", MAPPING)]),
        ({"table": {"a": "1"}}, [(("table", "a"), "int_type", NUMBER)]),
        ({"table": {None: 1}}, [(("table",), "key_type", NULL_KEY)]),
        ({"on": "maybe"}, [(("on",), "bool_type", BOOLEAN)]),
        ({"on": 2}, [(("on",), "bool_type", BOOLEAN)]),
        ({"class": "K"}, [(("class",), "value_error", "must be lowercase")]),
        ({"inner": {}}, [(("inner", "name"), "missing", "Field required")]),
    ],
)
def test_each_type_refuses_what_is_not_of_it(data: dict[str, Any], found: list[Any]) -> None:
    assert errors(Outer, data) == found


@pytest.mark.parametrize(
    ("word", "value"),
    [("yes", True), ("No", False), ("on", True), ("OFF", False), ("t", True), ("f", False),
     ("1", True), ("0", False), (1, True), (0, False), (True, True), (False, False)],
)  # fmt: skip
def test_a_boolean_takes_the_words_yaml_writers_mean(word: Any, value: bool) -> None:
    assert validate(Outer, {"on": word}) == (Outer(on=value), [])


def test_a_union_reports_the_errors_of_the_member_of_the_values_shape() -> None:
    """One error, not one per member (pydantic said both "should be a valid string" and
    the record's errors for a mapping given where text or a mapping is taken)."""
    assert errors(Outer, {"either": ["a", 5]}) == [
        (("either", 1), "string_type", "Input should be a valid string")
    ]
    assert errors(Outer, {"either": {"a": 1}}) == [
        (("either",), "union_type", "Input should be a valid string or a valid list")
    ]
    assert errors(Outer, {"inner": "x"}) == [
        (("inner",), "dict_type", "Input should be a valid dictionary")
    ]
    assert validate(Outer, {"either": "a"})[0].either == "a"
    assert validate(Outer, {"either": None})[0].either is None
    # the recipe's own: a mapping given as `from` is a {built: NAME}, checked as one
    assert errors(ImageSpec, {"from": {"built": "x", "y": 1}}) == [
        (("from", "y"), "extra_forbidden", "unknown field")
    ]
    assert errors(ImageSpec, {"from": {}}) == [(("from", "built"), "missing", "Field required")]
    # null where text is wanted: said as "has no value" by the recipe's messages
    assert errors(ImageSpec, {"from": None}) == [
        (("from",), "string_type", "Input should be a valid string")
    ]


def test_unknown_keys_name_the_keys_their_mapping_knows() -> None:
    _, problems = validate(Outer, {"knd": "a", "inner": {"name": "x", "sise": 1}})
    keys = tuple(f.key for f in fields(Outer))
    assert problems == [
        Problem(("knd",), "extra_forbidden", "unknown field", "a", keys),
        Problem(("inner", "sise"), "extra_forbidden", "unknown field", 1, ("name", "size")),
    ]
    # the attribute's name is not a key when the field has another (`from_`: `from`)
    assert errors(Outer, {"keyword": "x"}) == [(("keyword",), "extra_forbidden", "unknown field")]
    assert errors(ImageSpec, {"from_": "scratch"})[0][1] == "extra_forbidden"


def test_the_version_is_the_number_1_only() -> None:
    assert validate(Recipe, {"images": {}})[0] == Recipe(images={})
    for wrong in (True, 1.0, "1", 2):
        assert errors(Recipe, {"version": wrong, "images": {}}) == [
            (("version",), "literal_error", "Input should be 1")
        ]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.none() | st.integers() | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(["from", "run", "imports", "config", "binds", "cache", "shell", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSONISH, max_size=6) | JSONISH)
def test_validation_never_raises_whatever_the_data(data: Any) -> None:
    value, problems = validate(ImageSpec, data)
    assert (value is None) == bool(problems)
    assert all(isinstance(p, Problem) and isinstance(p.message, str) for p in problems)
    if value is not None:  # what was taken dumps to data that validates to the same
        assert validate(ImageSpec, dump(value)) == (value, [])


def test_the_dump_is_what_cache_keys_were_made_of(tmp_path: Path) -> None:
    """Every field by its key, in the order declared, defaults included: the same data the
    pydantic models dumped (``model_dump(mode="json", by_alias=True)``), so that a cache
    filled before keeps its keys."""
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    path = tmp_path / "ocikit.yaml"
    path.write_text(
        "images:\n  base:\n    from: scratch\n    build_only: true\n    imports:\n"
        f'      - {{src: f, dest: /f, mode: "0755", owner: "1:2", sha256: "sha256:{"a" * 64}",'
        " extract: false}\n      - {src: d, dest: /d/, mode: 0644}\n"
        "    config: {env: {A: '1'}, cmd: [sleep, 10], user: 1000, exposed_ports: ['80']}\n"
    )
    got = dump(load_recipe(path).images["base"])
    assert json.dumps(got) == json.dumps(
        {
            "from": "scratch",
            "build_only": True,
            "imports": [
                {"src": "f", "dest": "/f", "mode": 493, "owner": "1:2", "sha256": "a" * 64,
                 "extract": False},
                {"src": "d", "dest": "/d/", "mode": 420, "owner": None, "sha256": None,
                 "extract": None},
            ],
            "config": {"env": {"A": "1"}, "entrypoint": None, "cmd": ["sleep", "10"],
                       "user": "1000", "working_dir": None, "labels": None,
                       "exposed_ports": ["80"], "volumes": None, "stop_signal": None},
            "os": None, "arch": None, "variant": None, "annotations": None, "platform": None,
            "run": None, "shell": None, "network": "none", "binds": [], "cache": True,
        }
    )  # fmt: skip


def test_the_json_schema_is_the_shipped_one() -> None:
    shipped = json.loads((ROOT / "docs" / "recipe.schema.json").read_text())
    assert json_schema(Recipe) == shipped
    assert (
        json.dumps(json_schema(Recipe), indent=2) + "\n"
        == (ROOT / "docs" / "recipe.schema.json").read_text()
    )  # the same text, key for key
    inner = json_schema(Outer)["$defs"]["Inner"]
    assert inner["description"] == "An inner record."
    assert inner["properties"]["size"] == {
        "default": 0,
        "description": "How big.",
        "title": "Size",
        "type": "integer",
    }
    assert "description" not in json_schema(Outer)  # no docstring: none made up


def test_records_built_in_python_compare_with_validated_ones() -> None:
    imp = Import(src="f", dest="/f", mode=0o644)
    assert validate(Import, {"src": "f", "dest": "/f", "mode": "0644"}) == (imp, [])
    assert ImageSpec(from_=Built(built="a")).config == ImageConfigSpec()
    assert Bind(src="s", dest="/d").rw is False


def test_a_recipe_with_a_wrong_value_in_a_union_says_it_once(tmp_path: Path) -> None:
    path = tmp_path / "ocikit.yaml"
    path.write_text("images:\n  a:\n    from: scratch\n    run: [echo, [x]]\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems == ["images.a.run[1]: Input should be a valid string"]
