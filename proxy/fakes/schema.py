"""A value valid against a JSON Schema: what the fake models answer for structured output and tool calls.

``instance(schema)`` walks the schema once and builds the smallest plausible value that satisfies it,
deterministically (``variant`` gives the k-th of several distinct answers, for ``n`` choices and unique
array items). It knows what OpenAI's structured outputs, Anthropic's tool schemas and pydantic's
``model_json_schema()`` use:

- ``type`` (one or a list), ``const``, ``enum``, ``$ref`` to ``#/...`` (``$defs``, ``definitions``, the
  root), recursion (past a depth the value takes the shortest way out: ``null`` branches, required
  properties only, ``minItems`` items);
- ``allOf`` (merged), ``anyOf`` (the first branch that is not ``null``), ``oneOf`` (the first branch
  whose value matches no other branch, checked with ``jsonschema``);
- objects: ``properties`` (the required ones always, the others unless past the depth),
  ``required`` names without a property, ``additionalProperties`` (false: nothing else), min/max
  properties;
- arrays: ``items``, ``prefixItems`` (or draft-7 item lists), ``minItems``/``maxItems``,
  ``uniqueItems``, ``contains``;
- strings: ``minLength``/``maxLength``, ``format`` (date, date-time, email, uri, uuid, ...),
  ``pattern`` (a string built from the regex, checked with ``re.search``);
- integers and numbers: ``minimum``/``maximum``, exclusive bounds (both drafts' spellings),
  ``multipleOf``; booleans; ``null``.

What it cannot satisfy (``not``, ``if``/``then``, a pattern it cannot build) it approximates: the
tests hold it to ``jsonschema`` on the schemas the SDKs send. Kept apart from the fakes that use it so
any fake (chat, Messages, Responses) answers structured requests the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from proxy.fakes.pattern import matching

# Past this many nested objects/arrays/refs a value takes the shortest way out (recursive schemas end).
_DEEP = 6
_GIVE_UP = 64
_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "fake@example.com",
    "idn-email": "fake@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/fake",
    "iri": "https://example.com/fake",
    "uri-reference": "https://example.com/fake",
    "url": "https://example.com/fake",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "regex": "fake",
    "json-pointer": "/fake",
}
_TYPE_HINTS = (
    ("object", ("properties", "required", "additionalProperties", "minProperties", "maxProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)


def instance(schema: Any, *, variant: int = 0) -> Any:
    """A JSON value valid against ``schema`` (a JSON Schema as a dict, or ``True``)."""
    return _Builder(schema).build(schema, 0, variant)


def tool_arguments(schema: Any, *, variant: int = 0) -> dict[str, Any]:
    """A tool call's arguments: an object valid against its parameter schema (``{}`` without one)."""
    if not isinstance(schema, Mapping) or not schema:
        return {}
    value = instance(schema, variant=variant)
    return value if isinstance(value, dict) else {}


class _Builder:
    def __init__(self, root: Any) -> None:
        self.root = root

    def build(self, schema: Any, depth: int, variant: int) -> Any:
        if depth > _GIVE_UP:
            return None  # a recursion no finite value satisfies (a required property of its own type)
        if schema is True or not isinstance(schema, Mapping):
            return "fake" if variant == 0 else f"fake {variant + 1}"
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            target = self.resolve(str(schema["$ref"]))
            return self.build(_merge([target, rest]) if rest else target, depth + 1, variant)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            options = schema["enum"]
            return options[variant % len(options)]
        if isinstance(schema.get("allOf"), list):
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            parts = [self.deref(s) for s in schema["allOf"]]
            return self.build(_merge([rest, *parts]), depth, variant)
        for key in ("oneOf", "anyOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.branch(schema, key, branches, depth, variant)
        kind = self.kind(schema, depth)
        if kind == "null":
            return None
        if kind == "boolean":
            return variant % 2 == 0
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer", variant)
        if kind == "string":
            return _string(schema, variant)
        if kind == "array":
            return self.array(schema, depth, variant)
        return self.object(schema, depth, variant)

    def kind(self, schema: Mapping[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list) and declared:
            types = [t for t in declared if isinstance(t, str)]
            if depth >= _DEEP and "null" in types:
                return "null"
            return next((t for t in types if t != "null"), "null")
        for kind, keys in _TYPE_HINTS:
            if any(key in schema for key in keys):
                return kind
        return "string"

    def branch(self, schema: Mapping[str, Any], key: str, branches: list[Any], depth: int, variant: int) -> Any:
        rest = {k: v for k, v in schema.items() if k != key}
        resolved = [self.deref(b) for b in branches]

        def is_null(branch: Any) -> bool:
            return isinstance(branch, Mapping) and branch.get("type") == "null"

        # Optional[X] is anyOf [X, null]: X says more, until the depth says to stop.
        order = sorted(range(len(resolved)), key=lambda i: is_null(resolved[i]) != (depth >= _DEEP))

        def value(i: int) -> Any:
            return self.build(_merge([rest, resolved[i]]) if rest else resolved[i], depth, variant)

        if key == "anyOf":
            return value(order[0])
        from jsonschema import validators  # only oneOf needs a validator: loaded when first met

        cls = validators.validator_for(self.root if isinstance(self.root, Mapping) else {})
        first = None
        for i in order:
            candidate = value(i)
            others = (b for j, b in enumerate(branches) if j != i)
            if not any(cls({**_root_defs(self.root), **_as_schema(b)}).is_valid(candidate) for b in others):
                return candidate
            first = candidate if first is None else first
        return first

    def object(self, schema: Mapping[str, Any], depth: int, variant: int) -> dict[str, Any]:
        found = schema.get("properties")
        properties: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        names = [n for n in properties if n in required or depth < _DEEP]
        names += [n for n in required if n not in names]
        low, high = _int(schema.get("minProperties"), 0), _int(schema.get("maxProperties"), None)
        if high is not None and len(names) > high:
            keep = [n for n in names if n in required]
            names = keep + [n for n in names if n not in keep][: max(high - len(keep), 0)]
        out: dict[str, Any] = {}
        for name in names:
            spec = properties.get(name, extra if isinstance(extra, Mapping) else True)
            out[name] = self.build(spec, depth + 1, variant)
        k = 1
        while len(out) < low and extra is not False:
            out[f"extra_{k}"] = self.build(extra if isinstance(extra, Mapping) else True, depth + 1, variant)
            k += 1
        return out

    def array(self, schema: Mapping[str, Any], depth: int, variant: int) -> list[Any]:
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 7's tuple form
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix if isinstance(prefix, list) else []
        low, high = _int(schema.get("minItems"), 0), _int(schema.get("maxItems"), None)
        count = max(low, len(prefix), 1 if depth < _DEEP and items is not False else 0)
        if high is not None:
            count = min(count, high)
        unique = schema.get("uniqueItems") is True
        out = [self.build(prefix[i], depth + 1, variant) for i in range(min(count, len(prefix)))]
        for i in range(len(out), count):
            out.append(self.build(items, depth + 1, variant + i if unique else variant))
        contains = schema.get("contains")
        if isinstance(contains, Mapping) and (high is None or len(out) < high):
            wanted = _merge([items, contains]) if isinstance(items, Mapping) else contains  # one item both hold to
            out.append(self.build(wanted, depth + 1, variant + len(out) if unique else variant))
        return out

    def deref(self, schema: Any) -> Any:
        while isinstance(schema, Mapping) and "$ref" in schema and len(schema) == 1:
            schema = self.resolve(str(schema["$ref"]))
        return schema

    def resolve(self, ref: str) -> Any:
        """A local reference (``#``, ``#/$defs/Name``, ``#/definitions/Name``); else any value."""
        if not ref.startswith("#"):
            return True  # a remote reference: nothing to fetch in a fake
        node = self.root
        for part in filter(None, ref[1:].split("/")):
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return True
        return node


def _merge(parts: list[Any]) -> dict[str, Any]:
    """``allOf`` as one schema: properties and required united, other keywords the later part's."""
    out: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
                out[key] = {**out[key], **value}
            elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
                out[key] = [*out[key], *(v for v in value if v not in out[key])]
            else:
                out[key] = value
    return out


def _root_defs(root: Any) -> dict[str, Any]:
    """The root's definitions, so a branch checked on its own still resolves its ``$ref``s."""
    if not isinstance(root, Mapping):
        return {}
    return {k: root[k] for k in ("$defs", "definitions") if k in root}


def _as_schema(branch: Any) -> dict[str, Any]:
    return dict(branch) if isinstance(branch, Mapping) else {}


def _int(value: Any, default: int | None) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _number(schema: Mapping[str, Any], integer: bool, variant: int) -> int | float:
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")
    step = schema.get("multipleOf")
    step = step if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else None
    if integer:  # the bounds as the integers they allow
        if low is not None:
            low, low_open = (math.floor(low) + 1 if low_open else math.ceil(low)), False
        if high is not None:
            high, high_open = (math.ceil(high) - 1 if high_open else math.floor(high)), False

    def inside(v: float) -> bool:
        above = low is None or (v > low if low_open else v >= low)
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    value: float = (1 if integer else 1.5) + variant
    if not inside(value):
        if low is not None and high is not None:
            value = low if integer else (low + high) / 2
        elif low is not None:
            value = low + 1 if low_open else low
        elif high is not None:
            value = high - 1 if high_open else high
    if step is not None:
        # The first multiple at or above the value (or the bound) that is inside, and whose quotient is
        # exact in floating point (jsonschema checks ``int(v / step) == v / step``).
        first = math.ceil((value if low is None else max(low, value - step * 64)) / step)
        for n in range(first, first + 256):
            candidate = n * step
            if (
                inside(candidate)
                and candidate / step == int(candidate / step)
                and (not integer or candidate == int(candidate))
            ):
                value = candidate
                break
    return int(value) if integer else float(value)


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    """A bound and whether it is open; draft 4 spells an open bound as ``exclusiveMinimum: true``."""
    closed, open_ = schema.get(inclusive), schema.get(exclusive)
    if isinstance(open_, bool):
        return (closed, open_) if isinstance(closed, int | float) and not isinstance(closed, bool) else (None, False)
    if isinstance(open_, int | float):
        return open_, True
    if isinstance(closed, int | float) and not isinstance(closed, bool):
        return closed, False
    return None, False


def _string(schema: Mapping[str, Any], variant: int) -> str:
    pattern = schema.get("pattern")
    text: str | None = None
    if isinstance(pattern, str):
        text = matching(pattern)
    if text is None:
        fmt = schema.get("format")
        text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
        if not text:
            text = "fake" if variant == 0 else f"fake {variant + 1}"
    low, high = _int(schema.get("minLength"), 0), _int(schema.get("maxLength"), None)
    if len(text) < low:
        text += "x" * (low - len(text))
    if high is not None and len(text) > high:
        text = text[:high]
    return text
