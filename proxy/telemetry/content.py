"""Prompts and completions as the GenAI conventions' message attributes, only when opted in.

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` puts ``gen_ai.input.messages`` and
``gen_ai.output.messages`` (JSON, in the conventions' role + parts shape) on the request span. Even then
no secret leaves: every text goes through the ``Redactor`` (the keys tiergate holds and key-shaped
strings become ``***``) and is cut, so one huge prompt cannot make a span of megabytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from proxy.redact import Redactor

PART_LIMIT = 8_192  # characters per text part kept on a span


def input_messages(messages: Any, redactor: Redactor) -> str:
    """The request's messages as ``gen_ai.input.messages``."""
    out = []
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            out.append({"role": str(message.get("role", "")), "parts": _parts(message, redactor)})
    return orjson.dumps(out).decode()


def output_messages(choices: Iterable[Mapping[str, Any]], redactor: Redactor) -> str:
    """Completion choices (``message`` objects, or deltas joined) as ``gen_ai.output.messages``."""
    out = []
    for choice in choices:
        message = choice.get("message")
        out.append(
            {
                "role": "assistant",
                "parts": _parts(message if isinstance(message, Mapping) else {}, redactor),
                "finish_reason": str(choice.get("finish_reason") or ""),
            }
        )
    return orjson.dumps(out).decode()


def _parts(message: Mapping[str, Any], redactor: Redactor) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(_text(content, redactor))
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(_text(part["text"], redactor))
            elif isinstance(part, Mapping):
                parts.append({"type": str(part.get("type", "other"))})  # an image or a file: its kind only
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts.append(
                {
                    "type": "tool_call",
                    "id": str(call.get("id", "")),
                    "name": str(function.get("name", "")),
                    "arguments": redactor.text(str(function.get("arguments", "")), PART_LIMIT),
                }
            )
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": str(message.get("tool_call_id", "")), "response": parts}]
    return parts


def _text(text: str, redactor: Redactor) -> dict[str, Any]:
    return {"type": "text", "content": redactor.text(text, PART_LIMIT)}
