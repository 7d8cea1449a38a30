"""A fake Anthropic Messages API upstream (``POST /v1/messages``): an ASGI app for tests and demos.

It speaks the real wire format (message bodies, ``event:`` SSE streams with ``ping``, error bodies,
``request-id`` headers) with no network and no keys, and its replies are deterministic:

- reply text: `Behavior.text`, else what the request asks for: with ``output_config.format`` json_schema
  a JSON value valid against its schema (`proxy.fakes.schema.instance`); when the system prompt asks
  for a "JSON object" (as a model follows an instruction) a JSON object ``{"reply": <the text below>}``;
  else ``f"Fake Claude reply from {model}: "`` + the first 12 words of the last user text (text
  blocks of the last user turn that has any);
- with ``tools``, ``tool_choice`` not "none" and a last turn that is not tool results: `tool_calls`
  ``tool_use`` blocks (one if ``disable_parallel_tool_use``) ``toolu_fake_1``... to the named (else
  the first) tool, whose input is valid against its ``input_schema``;
- usage: ``input_tokens`` = `count_input_tokens`, cache read/creation tokens as the behaviour says,
  ``output_tokens`` = words of the reply (1 per tool call);
- ``max_tokens`` below that truncates the words (``max_tokens``); a stop sequence in the text cuts
  it there (``stop_sequence``).

Like the real API it answers 400 ``invalid_request_error`` to unknown top-level fields, roles other
than user/assistant, a missing ``anthropic-version`` header, and sampling params under 2026-10-21.
`proxy.fakes.openai.Behavior` scripts it as it scripts the OpenAI fake (``reset_after_chunks=N``
counts events after ``message_start``; ``omit_usage`` and ``body_stall`` are ignored: Anthropic always
reports usage); `ClaudeBehavior` adds the Anthropic-only knobs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.fakes.openai import (
    Behavior,
    FakeOpenAI,
    RecordedRequest,
    SimulatedReset,
    encode,
    pause,
    read_body,
    respond,
)
from proxy.fakes.schema import instance, tool_arguments

_PREVIEW_WORDS = 12
_JSON_PIECE = 8  # characters of tool input per input_json_delta
# An instruction to answer with a JSON object, in whatever words the caller chose.
_ASKS_FOR_JSON = re.compile(r"\bJSON object\b", re.IGNORECASE)
_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p",
     "top_k", "tools", "tool_choice", "thinking", "output_config", "service_tier", "cache_control", "container",
     "context_management", "inference_geo", "mcp_servers", "speed"}
)  # fmt: skip
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class ClaudeBehavior(Behavior):
    """`Behavior` plus what only the Messages API has."""

    cache_read_tokens: int = 0  # usage.cache_read_input_tokens to report
    cache_creation_tokens: int = 0  # usage.cache_creation_input_tokens to report
    error_after_events: int | None = None  # streaming: after message_start and N events, an `error` event
    error_type: str = "overloaded_error"  # ... of this type, then a clean end of the body
    thinking: str | None = None  # a thinking block (with its signature) before the answer
    tool_calls: int = 1  # tool_use blocks in a tool reply, unless parallel use is disabled
    stop_reason: str | None = None  # instead of the computed one (e.g. "refusal")


def _claude(behavior: Behavior) -> ClaudeBehavior:
    if isinstance(behavior, ClaudeBehavior):
        return behavior
    return ClaudeBehavior(**{f.name: getattr(behavior, f.name) for f in fields(Behavior)})


def error_body(status: int, message: str) -> bytes:
    """An Anthropic error body for ``status``."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def block_text(content: Any, *, tool_results: bool = True) -> str:
    """The text of a turn's content (a string or blocks), with or without its tool results."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif tool_results and isinstance(block, dict) and block.get("type") == "tool_result":
            texts.append(block_text(block.get("content")))
    return " ".join(texts)


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """The fake's ``input_tokens``: the system prompt and each turn count ``len(text) // 4 + 4``."""
    turns = [body["system"]] if body.get("system") else []
    turns += [m.get("content") for m in body["messages"]]
    return sum(len(block_text(t)) // 4 + 4 for t in turns)


def _is_tool_results(turn: Mapping[str, Any]) -> bool:
    content = turn.get("content")
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _tool_blocks(request: Mapping[str, Any], behavior: ClaudeBehavior) -> list[dict[str, Any]]:
    tools, choice, messages = request.get("tools"), request.get("tool_choice") or {}, request["messages"]
    if not isinstance(tools, list) or not tools or choice.get("type") == "none" or _is_tool_results(messages[-1]):
        return []
    named = [t for t in tools if t.get("name") == choice.get("name")] if choice.get("type") == "tool" else []
    tool = (named or tools)[0]
    count = 1 if choice.get("disable_parallel_tool_use") else behavior.tool_calls
    return [
        {
            "type": "tool_use",
            "id": f"toolu_fake_{i}",
            "name": tool["name"],
            "input": tool_arguments(tool.get("input_schema"), variant=i - 1),
        }
        for i in range(1, count + 1)
    ]


def _answer_text(request: Mapping[str, Any]) -> str:
    """What a model asked for this would write."""
    turns = [m.get("content") for m in request["messages"] if m.get("role") == "user"]
    users = [t for t in (block_text(c, tool_results=False) for c in turns) if t.strip()]
    preview = users[-1].split()[:_PREVIEW_WORDS] if users else []
    text = f"Fake Claude reply from {request['model']}: " + " ".join(preview)
    output_config = request.get("output_config")
    output_format = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        return json.dumps(instance(output_format.get("schema", True)))  # spaced: its words are its tokens
    if _ASKS_FOR_JSON.search(block_text(request.get("system"))):
        return json.dumps({"reply": text})
    return text


def _plan(request: Mapping[str, Any], behavior: ClaudeBehavior) -> dict[str, Any]:
    """The whole message the fake answers with."""
    blocks: list[dict[str, Any]] = []
    if behavior.thinking is not None:
        blocks.append({"type": "thinking", "thinking": behavior.thinking, "signature": "sig_fake"})
    tool_uses = _tool_blocks(request, behavior)
    stop_reason, stop_sequence = "end_turn", None
    if tool_uses:
        blocks += tool_uses
        stop_reason, output = "tool_use", len(tool_uses)
    else:
        text = behavior.text
        if text is None:
            text = _answer_text(request)
        hits = [(text.find(s), s) for s in request.get("stop_sequences") or () if s in text]
        if hits:
            cut, stop_sequence = min(hits)
            text, stop_reason = text[:cut], "stop_sequence"
        words = text.split()
        if request["max_tokens"] < len(words):
            words, stop_reason, stop_sequence = words[: request["max_tokens"]], "max_tokens", None
            text = " ".join(words)
        blocks.append({"type": "text", "text": text})
        output = len(words)
    usage = {
        "input_tokens": count_input_tokens(request),
        "cache_creation_input_tokens": behavior.cache_creation_tokens,
        "cache_read_input_tokens": behavior.cache_read_tokens,
        "output_tokens": output,
        "service_tier": "standard",
    }
    return {
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": blocks,
        "stop_reason": behavior.stop_reason or stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def _events(message: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SSE events of ``message``, as the API sends them (a ping after the first block opens)."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    yield "message_start", {"type": "message_start", "message": {**start, "usage": {**usage, "output_tokens": 1}}}
    for index, block in enumerate(message["content"]):
        opened: dict[str, Any] = {"type": block["type"], "text": ""}
        if block["type"] == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
        elif block["type"] == "tool_use":
            opened = {**block, "input": {}}
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}
        if index == 0:
            yield "ping", {"type": "ping"}
        for delta in _deltas(block):
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    final = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    yield "message_delta", {"type": "message_delta", "delta": final, "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


def _deltas(block: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    if block["type"] == "thinking":
        yield {"type": "thinking_delta", "thinking": block["thinking"]}
        yield {"type": "signature_delta", "signature": block["signature"]}
    elif block["type"] == "text":
        # Each word keeps its trailing whitespace so the pieces join back to the exact text.
        for piece in re.findall(r"\s*\S+\s*", block["text"]):
            yield {"type": "text_delta", "text": piece}
    else:
        raw = orjson.dumps(block["input"]).decode()
        yield {"type": "input_json_delta", "partial_json": ""}
        for i in range(0, len(raw), _JSON_PIECE):
            yield {"type": "input_json_delta", "partial_json": raw[i : i + _JSON_PIECE]}


def _problem(request: Any, headers: Mapping[str, str]) -> str | None:
    """What the real API would reject this request for, if anything."""
    version = headers.get("anthropic-version")
    if not version:
        return "anthropic-version: header is required"
    if not isinstance(request, dict):
        return "The request body must be a JSON object"
    for name in ("model", "messages", "max_tokens"):
        if name not in request:
            return f"{name}: Field required"
    extra = sorted(set(request) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if version >= "2026-10-21":
        for name in ("temperature", "top_p", "top_k"):
            if name in request:
                return f"{name}: is not supported in anthropic-version {version}"
    messages = request["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    return None


class FakeAnthropic(FakeOpenAI):
    """ASGI app for ``POST /v1/messages``; scripted with `push`/``script``/``choose`` like `FakeOpenAI`."""

    error_label = "Fake Anthropic error"
    error_body = staticmethod(error_body)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        if raw is None:
            return
        try:
            body: Any = orjson.loads(raw or b"null")
        except orjson.JSONDecodeError:
            body = None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        self.requests.append(RecordedRequest(method, path, headers, body))
        n = len(self.requests)
        reply_headers = {"content-type": "application/json", "request-id": f"req_fake_{n}"}
        if (method, path) != ("POST", "/v1/messages"):
            await respond(send, 404, reply_headers, error_body(404, f"Not found: {method} {path}"))
        elif (problem := _problem(body, headers)) is not None:
            await respond(send, 400, reply_headers, error_body(400, problem))
        else:
            chosen = self._choose(body) if self._choose is not None else None
            behavior = chosen or (self._script.popleft() if self._script else self.default)
            await self._watched(self._reply(n, body, _claude(behavior), reply_headers, send), receive)

    async def _reply(
        self, n: int, request: dict[str, Any], behavior: ClaudeBehavior, headers: dict[str, str], send: Send
    ) -> None:
        started = await self._start(request, behavior, headers, send)
        if started is None:
            return
        headers = started
        stream = request.get("stream") is True
        message = {"id": f"msg_fake_{n}", **_plan(request, behavior)}
        if not stream:
            await respond(send, 200, headers, orjson.dumps(message))
            return
        await _stream(send, headers, _events(message), behavior)


async def _stream(
    send: Send, headers: Mapping[str, str], events: Iterable[tuple[str, dict[str, Any]]], behavior: ClaudeBehavior
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": encode(headers)})
    reset, failure = behavior.reset_after_chunks, behavior.error_after_events
    for i, (name, data) in enumerate(events):
        if failure is not None and i > failure:
            message = "Overloaded" if behavior.error_type == "overloaded_error" else f"Fake {behavior.error_type}"
            name, data = "error", {"type": "error", "error": {"type": behavior.error_type, "message": message}}
        elif reset is not None and i > reset:
            break
        await pause(behavior.ttft if i == 0 else behavior.chunk_delay)
        event = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": name != "error"})
        if name == "error":
            return
    if reset is not None:
        raise SimulatedReset(f"fake connection reset after {reset} events past message_start")
    await send({"type": "http.response.body", "body": b"", "more_body": False})
