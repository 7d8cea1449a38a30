"""Anthropic message -> OpenAI ``chat.completion``; Anthropic usage and stop reasons in OpenAI's terms."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.usage import Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def completion_body(message: Mapping[str, Any]) -> tuple[dict[str, Any], Usage]:
    """An OpenAI ``chat.completion`` and its usage for a Messages response."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()  # compact, like OpenAI's
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        # thinking, redacted_thinking and server-tool blocks have no OpenAI slot
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    usage = usage_from(message.get("usage"))
    finish = finish_reason(message.get("stop_reason"))
    choice = {"index": 0, "message": reply, "finish_reason": finish, "logprobs": None}
    body = {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(message.get("model") or ""),
        "choices": [choice],
        "usage": usage.to_openai(),
    }
    return body, usage


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason``; unknown reasons read as ``stop``."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from(raw: Any) -> Usage:
    """Anthropic usage in OpenAI's sense: cache reads and writes are part of the prompt."""
    raw = raw if isinstance(raw, dict) else {}
    fresh, read, written, output = (
        _count(raw.get(key))
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")
    )
    details = raw.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=fresh + read + written,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=thinking,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
