"""OpenAI Chat Completions and Embeddings requests: parsing and the checks routing needs.

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
    check_model(body)
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


# OpenAI's own bound on the inputs of one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


def parse_embeddings_request(raw: bytes | bytearray) -> dict[str, Any]:
    """Parse and check a ``POST /v1/embeddings`` body; raise ``InvalidRequest`` naming the field.

    ``input`` is a string, an array of strings, an array of token ids, or an array of token arrays, none of
    them empty; ``encoding_format`` is ``float`` or ``base64``; ``dimensions`` a positive integer.
    """
    body = parse_json_object(raw)
    check_model(body)
    value = body.get("input")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if not _is_input(value):
        raise InvalidRequest(
            "Invalid 'input': expected a non-empty string, an array of non-empty strings, an array of token ids, "
            f"or an array of non-empty token arrays (at most {MAX_EMBEDDING_INPUTS} inputs).",
            param="input",
            code="invalid_value",
        )
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise InvalidRequest(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and not _positive(dimensions):
        raise InvalidRequest(
            "Invalid 'dimensions': expected an integer greater than 0.", param="dimensions", code="invalid_value"
        )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("Invalid type for 'user': expected a string.", param="user", code="invalid_type")
    if body.get("stream"):
        raise InvalidRequest("Embeddings are not streamed: 'stream' is not supported.", param="stream")
    return body


def embedding_texts(value: Any) -> list[str]:
    """The texts of an (already checked) ``input``: none for token arrays."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)]


def _is_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value or len(value) > MAX_EMBEDDING_INPUTS:
        return False
    if all(isinstance(v, str) and v for v in value):
        return True
    if all(_is_token(v) for v in value):
        return True
    return all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_model(body: dict[str, Any]) -> None:
    """``InvalidRequest`` unless ``model`` is a non-empty string (every model endpoint's first check)."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Invalid type for 'model': expected a non-empty string.", param="model", code="invalid_type"
        )


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
