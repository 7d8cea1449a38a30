"""Local handlers the tests name in their registries (``tests.handlers_for_tests:<name>``).

``answer`` behaves like a small deterministic model, so the conformance suite can run against
``type: local`` as against a real provider: it calls a tool when the request offers tools, writes
JSON when ``response_format`` asks for it, and raises for a magic prompt. The others each exercise
one branch of the local provider (async, a full message, a bad return value, a crash, a decline).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from proxy.fakes.schema import instance, tool_arguments

# A last user message containing this makes `answer` raise, as a buggy handler would.
RAISE = "[raise]"
# What the raised exception says: it must never reach a client.
SECRET = "handler-internal-detail /srv/secret/path"
_PREVIEW_WORDS = 12


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last(messages: list[Any], role: str) -> dict[str, Any] | None:
    return next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == role), None)


def answer(request: dict[str, Any]) -> str | dict[str, Any]:
    """A deterministic stand-in for a model: text, a tool call, or JSON, as the request asks."""
    messages = request.get("messages") or []
    user = _last(messages, "user")
    prompt = _text(user.get("content")) if user else ""
    if RAISE in prompt:
        raise RuntimeError(SECRET)
    last = messages[-1] if messages else {}
    tools, choice = request.get("tools"), request.get("tool_choice")
    if tools and choice != "none" and last.get("role") != "tool":
        function = tools[0]["function"]
        arguments = json.dumps(tool_arguments(function.get("parameters")), separators=(",", ":"))
        named = {"name": function["name"], "arguments": arguments}
        call = {"id": "call_local_1", "type": "function", "function": named}
        return {"content": None, "tool_calls": [call]}
    if last.get("role") == "tool":
        return f"Local reply after the tool said: {_text(last.get('content'))}"
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json.dumps(instance(response_format["json_schema"]["schema"]))
    if response_format.get("type") == "json_object":
        return json.dumps({"reply": prompt})
    return "Local reply: " + " ".join(prompt.split()[:_PREVIEW_WORDS])


async def answer_async(request: dict[str, Any]) -> str:
    """An async handler: awaited by the provider."""
    await asyncio.sleep(0)
    user = _last(request.get("messages") or [], "user")
    return "async: " + (_text(user.get("content")) if user else "")


def raises(request: dict[str, Any]) -> str:
    raise RuntimeError(SECRET)


def returns_number(request: dict[str, Any]) -> int:
    return 42


def returns_list(request: dict[str, Any]) -> list[str]:
    return ["not", "an", "answer"]


def declines(request: dict[str, Any]) -> None:
    return None


def tool_message(request: dict[str, Any]) -> dict[str, Any]:
    """A full assistant message with a tool call, as a handler may return."""
    call = {"id": "call_weather", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def tool_calls_only(request: dict[str, Any]) -> dict[str, Any]:
    """A message dict that leaves ``content`` out, as a handler author may."""
    call = {"id": "call_weather", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    return {"tool_calls": [call]}


def bad_content(request: dict[str, Any]) -> dict[str, Any]:
    """A message dict whose content is not text."""
    return {"content": 42}


async def sleeps(request: dict[str, Any]) -> str:
    """An async handler that never answers: it waits until cancelled (by tiergate's first-byte timeout)."""
    await asyncio.Event().wait()
    return "too late"


NOT_CALLABLE = "a string, not a function"
