"""OpenAI Chat Completions requests: parsing and the checks routing needs.

tiergate keeps the client's body as a plain dict and forwards every field it does not own untouched
(tools, response_format, n, seed, ...). Parsing only checks what routing needs and what an OpenAI
server would reject anyway, so a bad call fails here with a 400 instead of upstream.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# orjson parses up to 1,024 levels but serialises only 254: a body between the two would parse here and
# fail on its way upstream. Real requests (JSON schemas included) nest a few dozen levels at most.
MAX_DEPTH = 128


def parse_chat_request(raw: bytes | bytearray) -> dict[str, Any]:
    """Parse and check a ``POST /v1/chat/completions`` body; raise ``InvalidRequest`` naming the field."""
    body = parse_json_object(raw)
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Invalid type for 'model': expected a non-empty string.", param="model", code="invalid_type"
        )
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "Invalid 'messages': expected a non-empty array of message objects.", param="messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"Invalid type for 'messages[{i}]': expected an object.", param=f"messages[{i}]", code="invalid_type"
            )
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value for 'messages[{i}].role': {role!r}. Supported values are: "
                + ", ".join(sorted(_ROLES))
                + ".",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(
            "Invalid type for 'stream_options': expected an object.", param="stream_options", code="invalid_type"
        )
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequest(
                f"Invalid '{field}': expected an integer greater than 0.", param=field, code="invalid_value"
            )
    return body


def parse_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    """A request body as a JSON object nested at most ``MAX_DEPTH`` deep, else ``InvalidRequest``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc.msg}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if _depth(body) > MAX_DEPTH:
        raise InvalidRequest(f"The request body is nested deeper than {MAX_DEPTH} levels.", code="invalid_value")
    return body


def _depth(value: Any) -> int:
    """How deep containers nest in ``value`` (iterative: the point is bodies too deep to recurse into)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
