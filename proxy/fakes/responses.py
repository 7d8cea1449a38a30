"""The fake OpenAI upstream's Responses API (``POST /v1/responses``), plain and streamed.

Wired into `proxy.fakes.openai.FakeOpenAI` (its scripted `Behavior`s apply: status, headers, body,
delays, ``reset_after_chunks``, ``omit_usage``, ``text``); bodies and events follow OpenAI's published
spec, and replies are deterministic:

- reply text: `Behavior.text`, else with ``text.format`` json_schema the JSON of a value valid against
  the schema (`proxy.fakes.schema`, spaced as the chat fake writes it), else ``f"Fake reply from {model}: "`` + the first 12 words of
  the last user text of ``input``;
- with function ``tools``, ``tool_choice`` not "none" and a last input item that is not a
  ``function_call_output``: one ``function_call`` (``call_id`` ``call_fake_1``) to the named (else the
  first) function, its arguments valid against the tool's ``parameters``;
- ``input_tokens`` = ``len(text) // 4 + 4`` per message (instructions included); ``output_tokens`` =
  words of the reply (1 for a call); ``max_output_tokens`` below that truncates the words (status
  ``incomplete``, reason ``max_output_tokens``).

Like the real API it answers 400 to a field the spec does not have (so a chat-only param tiergate
forwarded shows), to a ``max_output_tokens`` under 16, and to a ``previous_response_id`` it did not make;
it keeps every response not sent with ``store: false``, so a follow-up can name it. A stream is
``event:`` + ``data:`` per event with ``sequence_number``s and no ``[DONE]``; ``reset_after_chunks=N``
sends ``response.created`` and at most N more events, then breaks the connection (before
``response.completed`` at the latest).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Send

from proxy.fakes.schema import instance, tool_arguments

Delay = float | asyncio.Event


class Behavior(Protocol):
    """What this module reads of `proxy.fakes.openai.Behavior` (which it does not import: that module
    imports this one)."""

    @property
    def text(self) -> str | None: ...
    @property
    def omit_usage(self) -> bool: ...
    @property
    def reset_after_chunks(self) -> int | None: ...
    @property
    def ttft(self) -> Delay: ...
    @property
    def chunk_delay(self) -> Delay: ...


class Fake(Protocol):
    """What this module uses of `proxy.fakes.openai.FakeOpenAI`: its script and its answer machinery."""

    stored: dict[str, dict[str, Any]]

    def _behavior(self, body: dict[str, Any]) -> Any: ...

    async def _watched(self, answer: Coroutine[Any, Any, None], receive: Receive) -> None: ...

    async def _start(
        self, request: dict[str, Any], behavior: Any, headers: dict[str, str], send: Send
    ) -> dict[str, str] | None: ...


class SimulatedReset(Exception):
    """Raised inside the app to make the server abort the connection mid-stream."""


# CreateResponse's fields in the spec (tests/fixtures/openai-openapi/responses.yaml).
FIELDS = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
     "max_output_tokens", "max_tool_calls", "temperature", "top_p", "top_logprobs", "metadata", "user",
     "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
     "previous_response_id", "background", "prompt", "service_tier", "truncation", "include", "store",
     "moderation", "stream", "stream_options", "conversation", "context_management"}
)  # fmt: skip
_PREVIEW_WORDS = 12
_MIN_OUTPUT_TOKENS = 16
_ARGUMENT_PIECE = 8  # characters of arguments per function_call_arguments.delta


async def handle(
    fake: Fake, n: int, method: str, body: Any, headers: dict[str, str], receive: Receive, send: Send
) -> None:
    """Answer one request to ``/responses`` on ``fake``."""
    if method != "POST":
        await _error(send, 405, headers, f"Method {method} not allowed", None)
        return
    problem = _problem(body, fake.stored)
    if problem is not None:
        await _error(send, 400, headers, *problem)
        return
    await fake._watched(_answer(fake, n, body, fake._behavior(body), headers, send), receive)


def _problem(body: Any, stored: Mapping[str, Any]) -> tuple[str, str | None] | None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "Request body must be a JSON object with a 'model'", "model"
    for name in body:
        if name not in FIELDS:
            return f"Unknown parameter: '{name}'.", name
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < _MIN_OUTPUT_TOKENS):
        return "Invalid 'max_output_tokens': integer below minimum value 16.", "max_output_tokens"
    previous = body.get("previous_response_id")
    if previous is not None and previous not in stored:
        return f"Previous response with id '{previous}' not found.", "previous_response_id"
    return None


async def _answer(
    fake: Fake, n: int, request: dict[str, Any], behavior: Behavior, headers: dict[str, str], send: Send
) -> None:
    started = await fake._start(request, behavior, headers, send)
    if started is None:
        return
    response = _response(n, request, behavior)
    if request.get("store") is not False:
        fake.stored[response["id"]] = response
    if request.get("stream") is not True:
        await _respond(send, 200, started, orjson.dumps(response))
        return
    await _stream(send, started, _events(response), behavior)


async def _error(send: Send, status: int, headers: Mapping[str, str], message: str, param: str | None) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    await _respond(send, status, headers, orjson.dumps({"error": error}))


async def _respond(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _pause(delay: Delay) -> None:
    if isinstance(delay, asyncio.Event):
        await delay.wait()
    else:
        await asyncio.sleep(delay)


def _response(n: int, request: Mapping[str, Any], behavior: Behavior) -> dict[str, Any]:
    """The whole ``response`` object the fake answers ``request`` with."""
    model = request["model"]
    tool = _tool_to_call(request)
    status, incomplete = "completed", None
    if tool is not None:
        arguments = orjson.dumps(tool_arguments(tool.get("parameters"))).decode()
        output = [
            {"id": f"fc_fake_{n}", "type": "function_call", "call_id": "call_fake_1", "name": tool["name"],
             "arguments": arguments, "status": "completed"}
        ]  # fmt: skip
        words = 1
    else:
        text = behavior.text if behavior.text is not None else _text(request)
        pieces = text.split()
        limit = request.get("max_output_tokens")
        if isinstance(limit, int) and limit < len(pieces):
            pieces, status, incomplete = pieces[:limit], "incomplete", {"reason": "max_output_tokens"}
            text = " ".join(pieces)
        words = len(pieces)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output = [{"id": f"msg_fake_{n}", "type": "message", "role": "assistant", "status": status, "content": [part]}]
    prompt = input_tokens(request)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": words,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + words,
    }
    now = int(time.time())
    text_param, reasoning = _object(request.get("text")), _object(request.get("reasoning"))
    return {
        "id": f"resp_fake_{n}",
        "object": "response",
        "created_at": now,
        "status": status,
        "completed_at": now if status == "completed" else None,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "store": request.get("store") is not False,
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text_param.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [_echoed(t) for t in request.get("tools") or ()],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        **({} if behavior.omit_usage else {"usage": usage}),
        "metadata": request.get("metadata") or {},
        **({"user": request["user"]} if isinstance(request.get("user"), str) else {}),
    }


def _echoed(tool: Any) -> Any:
    """A function tool as OpenAI echoes it: ``description``, ``parameters`` and ``strict`` (default true) set."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    strict = tool.get("strict")
    return {**tool, "description": tool.get("description"), "parameters": tool.get("parameters"),
            "strict": strict if isinstance(strict, bool) else True}  # fmt: skip


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tool_to_call(request: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in request.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    choice = request.get("tool_choice")
    items = request.get("input")
    if not tools or choice == "none":
        return None
    if isinstance(items, list) and items and isinstance(items[-1], dict):
        if items[-1].get("type") == "function_call_output":
            return None  # the tool already answered: reply with text, as a model would
    if isinstance(choice, dict) and choice.get("type") == "function":
        named = [t for t in tools if t.get("name") == choice.get("name")]
        return named[0] if named else tools[0]
    return tools[0]


def _text(request: Mapping[str, Any]) -> str:
    fmt = _object(request.get("text")).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(instance(fmt.get("schema", True)))  # spaced: its words are its output tokens
    users = [text for role, text in _messages(request) if role == "user"]
    preview = users[-1].split()[:_PREVIEW_WORDS] if users else []
    return f"Fake reply from {request['model']}: " + " ".join(preview)


def _messages(request: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(role, text) of the instructions and each message of ``input``."""
    if isinstance(request.get("instructions"), str):
        yield "developer", request["instructions"]
    items = request.get("input")
    if isinstance(items, str):
        yield "user", items
        return
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
        yield str(item.get("role")), content if isinstance(content, str) else ""


def input_tokens(request: Mapping[str, Any]) -> int:
    """The fake's ``input_tokens``: each message (the instructions included) counts ``len(text) // 4 + 4``."""
    return sum(len(text) // 4 + 4 for _role, text in _messages(request))


def _events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The stream of ``response``, event by event (without ``sequence_number``s)."""
    opening = {**{k: v for k, v in response.items() if k != "usage"}, "status": "in_progress", "output": [],
               "completed_at": None, "incomplete_details": None}  # fmt: skip
    yield {"type": "response.created", "response": opening}
    yield {"type": "response.in_progress", "response": opening}
    for index, item in enumerate(response["output"]):
        common = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "arguments": "", "status": "in_progress"}}  # fmt: skip
            arguments = item["arguments"]
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                yield {"type": "response.function_call_arguments.delta", **common, "delta": piece}
            yield {"type": "response.function_call_arguments.done", **common, "name": item["name"],
                   "arguments": arguments}  # fmt: skip
        else:
            part = item["content"][0]
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", "content": []}}  # fmt: skip
            empty = {**part, "text": ""}
            yield {"type": "response.content_part.added", **common, "content_index": 0, "part": empty}
            # Each word keeps its trailing whitespace so the pieces join back to the exact text.
            for piece in re.findall(r"\s*\S+\s*", part["text"]):
                yield {"type": "response.output_text.delta", **common, "content_index": 0, "delta": piece,
                       "logprobs": []}  # fmt: skip
            yield {"type": "response.output_text.done", **common, "content_index": 0, "text": part["text"],
                   "logprobs": []}  # fmt: skip
            yield {"type": "response.content_part.done", **common, "content_index": 0, "part": part}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
    yield {"type": kind, "response": response}


async def _stream(send: Send, headers: Mapping[str, str], events: Iterator[dict[str, Any]], behavior: Behavior) -> None:
    headers = {**headers, "content-type": "text/event-stream", "cache-control": "no-cache"}
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    reset = behavior.reset_after_chunks
    for i, event in enumerate(events):
        if reset is not None and i > reset:
            break
        await _pause(behavior.ttft if i == 0 else behavior.chunk_delay)
        data = orjson.dumps({**event, "sequence_number": i})
        frame = b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    if reset is not None:
        raise SimulatedReset(f"fake connection reset after {reset} events past response.created")
    await send({"type": "http.response.body", "body": b"", "more_body": False})
