"""A small JSON value valid against a JSON schema: what a fake model answers to structured output.

Covers what structured outputs and function parameters use (and what pydantic writes): ``$ref`` into
``$defs``/``definitions``, ``anyOf``/``oneOf`` (the first option that is not null), ``allOf``, ``enum``,
``const``, objects (every required property, else every property), arrays (``minItems`` items), strings
(``minLength``/``maxLength``, the common ``format`` values), numbers within their bounds, booleans and
null. A ``pattern`` is not honoured (no general generator); "fake" is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uri": "https://example.com/fake",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 32  # a recursive schema (a tree of nodes) stops at an empty or null value


def example(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid against ``schema`` (refs resolved in ``root``, the schema itself by default)."""
    if not isinstance(schema, dict):
        return None
    root = schema if root is None else root
    if depth > _MAX_DEPTH:
        return None
    if isinstance(schema.get("$ref"), str):
        return example(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0])
            return example(chosen, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged = {
                    **merged,
                    **part,
                    "properties": {**merged.get("properties", {}), **part.get("properties", {})},
                }
        return example(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _typed(kind, schema, root, depth)


def _typed(kind: str, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) else list(properties)
        return {name: example(properties[name], root, depth + 1) for name in names}
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and count > 0 else 1
        return [example(schema.get("items"), root, depth + 1) for _ in range(count)] if depth < _MAX_DEPTH else []
    if kind == "string":
        fmt = schema.get("format")
        text = _FORMATS.get(fmt, "fake") if isinstance(fmt, str) else "fake"
        least, most = schema.get("minLength"), schema.get("maxLength")
        if isinstance(least, int) and len(text) < least:
            text += "x" * (least - len(text))
        return text[:most] if isinstance(most, int) else text
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value: int | float = 1
        if isinstance(low, int | float):
            value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
        high = schema.get("maximum")
        if isinstance(high, int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    return None


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    """A local ``#/...`` reference in ``root``; anything else resolves to an empty schema."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
