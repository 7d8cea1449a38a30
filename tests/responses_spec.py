"""OpenAI's published Responses API spec as validators, and the raw SSE of a Responses stream.

The spec is ``tests/fixtures/openai-openapi/responses.yaml`` (``POST /responses`` and every schema it
references, unmodified; see its README). Bodies and events are checked twice: with jsonschema against
the spec, and parsed by the openai SDK's own typed models (``openai.types.responses``), which is what
a client of tiergate does with them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pydantic
import yaml
from jsonschema import Draft202012Validator
from openai.types.responses import Response, ResponseStreamEvent
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent / "fixtures" / "openai-openapi" / "responses.yaml"
SPEC_URI = "urn:openai-openapi:responses"


@functools.cache
def doc() -> dict[str, Any]:
    with SPEC.open("rb") as f:
        loaded: dict[str, Any] = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<name>``, refs resolved in the document."""
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, Resource.from_contents(doc(), DRAFT202012))
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry)


def assert_valid(name: str, instance: Any) -> None:
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "\n".join(f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])
        raise AssertionError(f"not a valid {name}:\n{detail}\ninstance: {json.dumps(instance)[:2000]}")


def is_valid(name: str, instance: Any) -> bool:
    return validator(name).is_valid(instance)


@functools.cache
def event_schemas() -> dict[str, str]:
    """Each stream event's ``type`` -> the name of its schema (the members of ``ResponseStreamEvent``)."""
    schemas = doc()["components"]["schemas"]
    out = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        out[schemas[name]["properties"]["type"]["enum"][0]] = name
    return out


_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def assert_response(body: Any) -> Response:
    """``body`` is a spec-valid ``Response``; the SDK's model of it."""
    assert_valid("Response", body)
    return Response.model_validate(body)


def assert_event(event: Any) -> Any:
    """``event`` is a spec-valid stream event of its type; the SDK's model of it."""
    kind = event.get("type")
    assert kind in event_schemas(), f"not a Responses stream event type: {kind!r}"
    assert_valid(event_schemas()[kind], event)
    assert_valid("ResponseStreamEvent", event)
    return _EVENTS.validate_python(event)


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of a Responses stream's raw SSE text: each ``event: <type>`` then one ``data:`` line
    whose JSON has that type; no ``[DONE]``."""
    assert text.endswith("\n\n"), text[-200:]
    blocks = text.split("\n\n")
    assert blocks.pop() == ""
    events = []
    for block in blocks:
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        assert lines[1] != "data: [DONE]", "a Responses stream has no [DONE]"
        event = json.loads(lines[1][len("data: ") :])
        assert event["type"] == lines[0][len("event: ") :], block
        events.append(event)
    return events
