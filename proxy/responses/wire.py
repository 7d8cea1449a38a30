"""``POST /v1/responses`` bodies: parsing and the checks routing and translation need.

As for chat (``proxy.wire``), the body stays a plain dict and every field tiergate does not read is
forwarded untouched; what is checked is what an OpenAI server would refuse anyway (so a bad call is a
400 here, naming the field, not an upstream's error or a translation crash).
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest
from proxy.wire import check_model, parse_json_object

# field -> (the types it may have besides null, what the message says it should be)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "instructions": ((str,), "a string"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "text": ((dict,), "an object"),
    "reasoning": ((dict,), "an object"),
    "metadata": ((dict,), "an object"),
    "include": ((list,), "an array"),
    "stream": ((bool,), "a boolean"),
    "store": ((bool,), "a boolean"),
    "background": ((bool,), "a boolean"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "stream_options": ((dict,), "an object"),
    "previous_response_id": ((str,), "a string"),
    "conversation": ((str, dict), "a string or an object"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
}
MIN_OUTPUT_TOKENS = 16  # the spec's minimum for max_output_tokens


def parse_responses_request(raw: bytes | bytearray) -> dict[str, Any]:
    """Parse and check a ``POST /v1/responses`` body; raise ``InvalidRequest`` naming the field."""
    body = parse_json_object(raw)
    check_model(body)
    for field, (types, what) in _TYPES.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise _invalid_type(field, what)
    _check_input(body.get("input"))
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < MIN_OUTPUT_TOKENS):
        raise InvalidRequest(
            f"Invalid 'max_output_tokens': expected an integer of at least {MIN_OUTPUT_TOKENS}.",
            param="max_output_tokens",
            code="invalid_value",
        )
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid_type(f"tools[{i}]", "an object with a 'type'")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{i}].name'.",
                param=f"tools[{i}].name",
                code="missing_required_parameter",
            )
    return body


def _check_input(items: Any) -> None:
    if items is None or isinstance(items, str):
        return
    if not isinstance(items, list):
        raise _invalid_type("input", "a string or an array of input items")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid_type(f"input[{i}]", "an object")
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise _invalid_type(f"input[{i}].type", "a string")
        if kind == "message":
            content = item.get("content")
            if not isinstance(content, str | list):
                raise _invalid_type(f"input[{i}].content", "a string or an array of content parts")
            if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
                raise _invalid_type(f"input[{i}].content", "an array of content part objects")
        elif kind in ("function_call", "function_call_output") and not isinstance(item.get("call_id"), str):
            raise InvalidRequest(
                f"Missing required parameter: 'input[{i}].call_id'.",
                param=f"input[{i}].call_id",
                code="missing_required_parameter",
            )


def _invalid_type(field: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{field}': expected {what}.", param=field, code="invalid_type")
