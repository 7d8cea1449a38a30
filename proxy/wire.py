"""OpenAI Chat Completions wire shapes: request parsing, usage, SSE framing.

tiergate keeps the client's body as a plain dict and forwards every field it does not own untouched
(tools, response_format, n, seed, ...). Parsing only checks what routing needs and what an OpenAI
server would reject anyway, so a bad call fails here with a 400 instead of upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import InvalidRequest

DONE_EVENT = b"data: [DONE]\n\n"
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """Parse and check a ``POST /v1/chat/completions`` body; raise ``InvalidRequest`` naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc.msg}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
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


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, in OpenAI's sense (cached tokens are a subset of prompt tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; ``None`` when absent or not an object."""
        if not isinstance(usage, dict):
            return None
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_int(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0),
            reasoning_tokens=_int(
                completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
            ),
            cache_write_tokens=_int(
                prompt_details.get("cache_write_tokens") if isinstance(prompt_details, dict) else 0
            ),
        )

    def to_openai(self) -> dict[str, Any]:
        """This usage as an OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def sse_event(payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An in-stream error; the openai SDK raises ``APIError`` on a ``data`` object with an ``error`` key."""
    return sse_event(orjson.dumps(body))


def model_object(model_id: str, owned_by: str, created: int) -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
