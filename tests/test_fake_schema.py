"""``proxy.fakes.schema.instance``: a value valid against a JSON Schema, held to ``jsonschema`` itself.

A table of the keywords one by one, the schemas pydantic and the openai SDK's strict mode write for
real models (nested, optional, recursive, constrained), and random schemas from a small grammar.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import validators
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from proxy.fakes.schema import instance, tool_arguments


def assert_valid(schema: Any, value: Any) -> None:
    cls = validators.validator_for(schema)
    errors = [e.message for e in cls(schema).iter_errors(value)]
    assert not errors, f"{value!r} is not valid against {schema!r}: {errors}"


KEYWORDS: list[Any] = [
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["string", "null"]},
    {"type": ["null", "integer"]},
    {"const": "fixed"},
    {"enum": ["a", "b", 3]},
    {"type": "string", "minLength": 12},
    {"type": "string", "maxLength": 2},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "email"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
    {"type": "string", "pattern": "^(red|green)[^0-9]+x?$"},
    {"type": "string", "pattern": "^\\w+@\\w+\\.com$"},
    {"type": "integer", "minimum": 10, "maximum": 12},
    {"type": "integer", "exclusiveMinimum": 5},
    {"type": "integer", "maximum": -3},
    {"type": "integer", "multipleOf": 7, "minimum": 20},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "minimum": 2.5, "multipleOf": 0.5},
    {"type": "number", "multipleOf": 0.01, "minimum": 3},
    {"type": "array", "items": {"type": "integer"}},
    {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
    {"type": "array", "items": {"type": "integer"}, "contains": {"const": 5}},
    {"type": "object"},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "required": ["free"]},
    {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
    {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "required": ["c"], "maxProperties": 1},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
    {"$defs": {"Pos": {"type": "integer", "minimum": 1}}, "type": "array", "items": {"$ref": "#/$defs/Pos"}},
    {"definitions": {"S": {"type": "string"}}, "properties": {"s": {"$ref": "#/definitions/S"}}, "required": ["s"]},
    {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name", "children"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    },
    {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["next"]},
    {"properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]},  # object by its keywords
    True,
    {},
]


@pytest.mark.parametrize("schema", KEYWORDS, ids=[str(i) for i in range(len(KEYWORDS))])
def test_every_keyword_gets_a_valid_value(schema: Any) -> None:
    assert_valid(schema, instance(schema))
    for k in range(1, 4):  # the k-th answer of n choices is valid too
        assert_valid(schema, instance(schema, variant=k))


def test_values_say_what_was_asked() -> None:
    assert instance({"type": "integer", "minimum": 10, "maximum": 12}) == 10
    assert instance({"enum": ["a", "b"]}) == "a" and instance({"enum": ["a", "b"]}, variant=1) == "b"
    assert instance({"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"}) == "AAA-0000"
    assert instance({"type": "array", "items": {"type": "string"}, "minItems": 2, "uniqueItems": True}) == [
        "fake",
        "fake 2",
    ]
    recursive = instance(KEYWORDS[-5])
    depth = 0
    while recursive["children"]:
        recursive, depth = recursive["children"][0], depth + 1
    assert 1 <= depth < 10  # recursion ends: past the depth an array takes its minItems


def test_tool_arguments_are_always_an_object() -> None:
    assert tool_arguments(None) == {} and tool_arguments({}) == {}
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    assert tool_arguments(schema) == {"city": "fake", "days": 1}


# --- what pydantic and the openai SDK send ------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    postcode: Annotated[str, Field(pattern=r"^\d{5}$")]
    country: Literal["FR", "DE"] = "FR"


class Person(BaseModel):
    id: uuid.UUID
    name: Annotated[str, Field(min_length=2, max_length=40)]
    age: Annotated[int, Field(ge=18, le=120)]
    score: Annotated[float, Field(gt=0, lt=1)]
    born: dt.date
    seen: dt.datetime
    colour: Colour
    tags: Annotated[list[str], Field(min_length=1, max_length=3)]
    home: Address
    work: Address | None = None
    pets: dict[str, int] = {}
    friends: list[Person] = []


class Tree(BaseModel):
    label: str
    kids: list[Tree]


@pytest.mark.parametrize("model", [Person, Address, Tree])
def test_pydantic_schemas_get_values_the_model_accepts(model: type[BaseModel]) -> None:
    for schema in (model.model_json_schema(), to_strict_json_schema(model)):
        value = instance(schema)
        assert_valid(schema, value)
        model.model_validate(value)


# --- random schemas -------------------------------------------------------------------------------------

_scalars = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda lo, n: {"type": "integer", "minimum": lo, "maximum": lo + n}, st.integers(-50, 50), st.integers(0, 5)
    ),
    st.builds(lambda lo: {"type": "number", "exclusiveMinimum": lo}, st.floats(-100, 100, allow_nan=False)),
    st.builds(lambda n: {"type": "string", "minLength": n}, st.integers(0, 30)),
    st.builds(
        lambda xs: {"enum": xs}, st.lists(st.integers() | st.text(max_size=5), min_size=1, max_size=4, unique=True)
    ),
    st.sampled_from([{"type": "string", "format": f} for f in ("date", "email", "uri", "uuid", "ipv4")]),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        lambda props, closed, k: {
            "type": "object",
            "properties": props,
            "required": sorted(props)[:k],
            **({"additionalProperties": False} if closed else {}),
        },
        st.dictionaries(st.text("abcdef", min_size=1, max_size=4), children, max_size=4),
        st.booleans(),
        st.integers(0, 4),
    )
    arrays = st.builds(lambda items, lo: {"type": "array", "items": items, "minItems": lo}, children, st.integers(0, 3))
    optional = st.builds(lambda s: {"anyOf": [s, {"type": "null"}]}, children)
    return objects | arrays | optional


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.recursive(_scalars, _compound, max_leaves=12))
def test_random_schemas_get_valid_values(schema: Any) -> None:
    assert_valid(schema, instance(schema))
    assert_valid(schema, instance(schema, variant=2))
