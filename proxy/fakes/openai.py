"""A fake OpenAI Chat Completions (and Embeddings) upstream: an ASGI app for `tiergate demo` and tests.

It speaks the real wire format (bodies, SSE chunks, error bodies, headers) with no network
and no keys, and its replies are deterministic so tests can compute expected values:

- reply text: `Behavior.text`, else what the request asks for: with ``response_format`` json_schema a
  JSON value valid against its schema (`proxy.fakes.schema.instance`), with json_object a JSON object
  ``{"reply": <the text below>}``, else ``f"Fake reply from {model}: "`` + the first 12 words of the
  last user message (text parts of a list content are joined with a space);
- with `tools`, `tool_choice` not "none" and a last message not from role "tool": one call
  ``call_fake_1`` to the named (else the first) tool, its arguments an object valid against the
  tool's ``parameters`` schema, content null;
- ``n`` choices (indexes 0..n-1; choice k > 0 says ``(choice k+1)`` in its text, and its JSON is the
  schema's k-th variant); a stream interleaves them, each chunk carrying its choice's ``index``;
- prompt_tokens = sum over messages of ``len(text) // 4 + 4`` (see `count_prompt_tokens`);
  completion_tokens = whitespace-separated words of each reply (1 for a tool call), summed over choices;
- `max_completion_tokens`/`max_tokens` below that truncates the words, finish_reason "length";
- cached_tokens: `Behavior.cached_tokens`, at most prompt_tokens (0 by default);
- ``POST /v1/embeddings``: deterministic vectors from the input text (`proxy.fakes.embeddings`).

A `Behavior` (scripted FIFO with `push`, else the default) sets status, headers, delays and
stream faults for one chat or embeddings request. A delay is seconds, or an `asyncio.Event` to wait for: an
upstream that stalls until the test sets it, so a timeout test needs no sleep longer than the
timeout. `reset_after_chunks=N` sends the opening chunk and at most N more, then raises
`SimulatedReset` inside the app (always, at the latest before [DONE]), so a real server drops the
socket mid-body and the client sees a broken stream, not a clean end (uvicorn logs the traceback;
in-process, httpx's ASGITransport re-raises it to the caller).

A fake shared by several tests is `reset` between them; `pending` is what was pushed and not
consumed yet.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.fakes import embeddings
from proxy.fakes import responses as responses_api
from proxy.fakes.schema import instance, tool_arguments

Delay = float | asyncio.Event  # seconds to sleep, or an event to wait for

MODELS = ("fake-model",)  # what GET /models lists; any model name is accepted
_PREVIEW_WORDS = 12
_ARGUMENT_PIECE = 8  # characters of tool arguments per streamed delta
_MAX_N = 128  # OpenAI's own bound on choices


class SimulatedReset(Exception):
    """Raised inside the app to make the server abort the connection mid-body."""


@dataclass(frozen=True)
class Behavior:
    """How the fake answers one chat request."""

    status: int = 200  # non-200: an OpenAI-shaped error body, unless `body` is given
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    body: bytes | None = None  # sent verbatim instead of the normal body
    delay_headers: Delay = 0.0  # before the response starts
    ttft: Delay = 0.0  # streaming: before the first chunk
    chunk_delay: Delay = 0.0  # streaming: between chunks
    reset_after_chunks: int | None = None  # streaming: break the connection (see module doc)
    omit_usage: bool = False  # no usage in the body, no usage chunk
    text: str | None = None  # the reply text, instead of the computed one
    body_stall: Delay = 0.0  # non-streaming: silence between the two halves of the body
    cached_tokens: int = 0  # prompt tokens reported as read from the prompt cache (at most the prompt's)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Choice:
    text: str | None  # None means a tool call
    tool_name: str
    arguments: str  # the tool call's arguments, a JSON object
    finish_reason: str
    tokens: int


@dataclass(frozen=True)
class _Reply:
    choices: tuple[_Choice, ...]
    usage: dict[str, Any] | None  # None when the behaviour omits usage


async def pause(delay: Delay) -> None:
    """Sleep ``delay`` seconds, or wait until the event ``delay`` is set."""
    if isinstance(delay, asyncio.Event):
        await delay.wait()
    else:
        await asyncio.sleep(delay)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string, a list of parts, or null."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """The fake's prompt_tokens: each message counts ``len(text) // 4 + 4``."""
    return sum(len(message_text(m)) // 4 + 4 for m in messages)


def error_body(status: int, message: str) -> bytes:
    """An OpenAI-shaped error body for `status`."""
    kind = "requests" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    code = "rate_limit_exceeded" if status == 429 else None
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _tool_to_call(request: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The tool a model would call now, and its parameter schema; None to answer with text."""
    tools, choice, messages = request.get("tools"), request.get("tool_choice"), request["messages"]
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if messages and messages[-1].get("role") == "tool":
        return None  # the tool already answered: reply with text, as a model would
    functions = [(t.get("function") or t) for t in tools if isinstance(t, dict)]
    functions = [f for f in functions if isinstance(f, dict)]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = str(choice["function"].get("name", "tool"))
        return name, next((f.get("parameters") for f in functions if f.get("name") == name), None)
    first = functions[0] if functions else {}
    return str(first.get("name", "tool")), first.get("parameters")


def _answer_text(request: Mapping[str, Any], k: int) -> str:
    """What a model asked for this would write, as choice ``k``."""
    users = [m for m in request["messages"] if m.get("role") == "user"]
    preview = message_text(users[-1]).split()[:_PREVIEW_WORDS] if users else []
    label = f" (choice {k + 1})" if k else ""
    text = f"Fake reply from {request['model']}{label}: " + " ".join(preview)
    response_format = request.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema", True) if isinstance(spec, dict) else True
        return json.dumps(instance(schema, variant=k))  # spaced: its words are its completion tokens
    if kind == "json_object":
        return json.dumps({"reply": text})
    return text


def _choice(request: Mapping[str, Any], behavior: Behavior, k: int) -> _Choice:
    tool = _tool_to_call(request)
    if tool is not None:
        name, schema = tool
        arguments = orjson.dumps(tool_arguments(schema, variant=k)).decode()
        return _Choice(None, name, arguments, "tool_calls", 1)
    text = behavior.text if behavior.text is not None else _answer_text(request, k)
    words, finish = text.split(), "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and limit < len(words):
        words, finish = words[:limit], "length"
        text = " ".join(words)
    return _Choice(text, "", "", finish, len(words))


def _plan(request: Mapping[str, Any], behavior: Behavior) -> _Reply:
    n = request.get("n") or 1
    choices = tuple(_choice(request, behavior, k) for k in range(n))
    prompt = count_prompt_tokens(request["messages"])
    completion = sum(c.tokens for c in choices)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(behavior.cached_tokens, prompt)},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return _Reply(choices, None if behavior.omit_usage else usage)


def _tool_call(choice: _Choice) -> dict[str, Any]:
    function = {"name": choice.tool_name, "arguments": choice.arguments}
    return {"id": "call_fake_1", "type": "function", "function": function}


def _completion(base: dict[str, Any], reply: _Reply) -> dict[str, Any]:
    choices = []
    for index, choice in enumerate(reply.choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.text is None:
            message["tool_calls"] = [_tool_call(choice)]
        choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason, "logprobs": None})
    body = {**base, "object": "chat.completion", "choices": choices}
    return body if reply.usage is None else {**body, "usage": reply.usage}


def _deltas(choice: _Choice) -> Iterator[dict[str, Any]]:
    """The opening delta, then one delta per content piece (words, or argument fragments)."""
    if choice.text is None:
        opening = {**_tool_call(choice), "index": 0}
        opening["function"] = {"name": choice.tool_name, "arguments": ""}
        yield {"role": "assistant", "content": None, "tool_calls": [opening]}
        raw = choice.arguments
        for i in range(0, len(raw), _ARGUMENT_PIECE):
            yield {"tool_calls": [{"index": 0, "function": {"arguments": raw[i : i + _ARGUMENT_PIECE]}}]}
        return
    yield {"role": "assistant", "content": ""}
    # Each word keeps its trailing whitespace so the pieces join back to the exact text.
    for piece in re.findall(r"\s*\S+\s*", choice.text):
        yield {"content": piece}


def _chunks(base: dict[str, Any], reply: _Reply, usage: bool) -> Iterator[dict[str, Any]]:
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        # OpenAI sends "usage": null on every chunk only when usage was asked for.
        return {**base, "choices": [choice], **({"usage": None} if usage else {})}

    # Several choices arrive interleaved, as OpenAI sends them: a client must assemble them by index.
    streams = [list(_deltas(c)) for c in reply.choices]
    for step in range(max(len(deltas) for deltas in streams)):
        yield from (chunk(index, deltas[step]) for index, deltas in enumerate(streams) if step < len(deltas))
    yield from (chunk(index, {}, c.finish_reason) for index, c in enumerate(reply.choices))
    if usage and reply.usage is not None:
        yield {**base, "choices": [], "usage": reply.usage}


def _chat_problem(body: Any) -> str | None:
    """What OpenAI would reject this chat request for, if anything (a few checks, not the whole spec)."""
    if not _is_chat_request(body):
        return "Request body must be a JSON object with 'model' and 'messages'"
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_N):
        return f"Invalid 'n': expected an integer from 1 to {_MAX_N}"
    return None


def _is_chat_request(body: Any) -> bool:
    fields_ok = isinstance(body, dict) and isinstance(body.get("model"), str) and isinstance(body.get("messages"), list)
    return fields_ok and all(isinstance(m, dict) for m in body["messages"])


async def respond(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Send a whole response: status, ``headers`` with a content-length, then ``body``."""
    await send({"type": "http.response.start", "status": status, "headers": encode(headers, len(body))})
    await send({"type": "http.response.body", "body": body})


def encode(headers: Mapping[str, str], length: int | None = None) -> list[tuple[bytes, bytes]]:
    """``headers`` as ASGI header pairs (lower-cased names), plus a content-length when ``length`` is given."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return raw if length is None else [*raw, (b"content-length", str(length).encode())]


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client left before sending it."""
    chunks: list[bytes] = []
    while (message := await receive())["type"] == "http.request":
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
    return None


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


class FakeOpenAI:
    """ASGI app. The instance itself is the ASGI callable."""

    # What an error status looks like on this fake's wire (FakeAnthropic overrides both).
    error_label = "Fake upstream error"
    error_body = staticmethod(error_body)

    def __init__(
        self,
        default: Behavior = Behavior(),
        script: Iterable[Behavior] = (),
        choose: Callable[[dict[str, Any]], Behavior | None] | None = None,
    ) -> None:
        self.default = default
        self._initial_default = default
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0  # chat responses abandoned because the client went away
        # Set at each such disconnect, so a test can wait for one instead of polling the count.
        self.disconnected = asyncio.Event()
        self._script: deque[Behavior] = deque(script)
        # Picks a behaviour from the request body (e.g. by its `user`), for concurrent tests where
        # arrival order is not under control; None falls through to the script, then the default.
        self._choose = choose
        self.stored: dict[str, dict[str, Any]] = {}  # the Responses API's stored responses, by id

    def push(self, *behaviors: Behavior) -> None:
        """Queue behaviours, consumed one per well-formed chat request, first in first out."""
        self._script.extend(behaviors)

    @property
    def pending(self) -> tuple[Behavior, ...]:
        """The pushed behaviours no request has consumed yet."""
        return tuple(self._script)

    def reset(self) -> None:
        """Forget the script, the recorded requests and disconnects; restore the default behaviour.

        For a fake shared by several tests: each then starts as if with a new fake.
        """
        self._script.clear()
        self.requests.clear()
        self.disconnects = 0
        self.default = self._initial_default
        self.stored.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        if raw is None:
            return
        try:
            body: Any = orjson.loads(raw or b"null")
        except orjson.JSONDecodeError:
            body = None  # recorded as None, answered with a 400 below
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        self.requests.append(RecordedRequest(method, path, headers, body))
        n = len(self.requests)
        reply_headers = {"content-type": "application/json", "x-request-id": f"req_fake_{n}"}
        route = path.removeprefix("/v1")  # base URLs may or may not end in /v1
        if route == "/responses":  # the Responses API: proxy.fakes.responses
            await responses_api.handle(self, n, method, body, reply_headers, receive, send)
            return
        chat = route == "/chat/completions"
        if route not in ("/models", "/chat/completions", "/embeddings"):
            await respond(send, 404, reply_headers, error_body(404, f"Unknown path {path}"))
        elif (method, route) == ("GET", "/models"):
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "tiergate"} for m in MODELS]
            await respond(send, 200, reply_headers, orjson.dumps({"object": "list", "data": models}))
        elif method != "POST" or route == "/models":
            await respond(send, 405, reply_headers, error_body(405, f"Method {method} not allowed"))
        elif (problem := _chat_problem(body) if chat else embeddings.problem(body)) is not None:
            await respond(send, 400, reply_headers, error_body(400, problem))
        else:
            answer = self._answer if chat else self._embed
            await self._watched(answer(n, body, self._behavior(body), reply_headers, send), receive)

    def _behavior(self, body: dict[str, Any]) -> Behavior:
        """The behaviour for one well-formed request: ``choose``'s, else the script's next, else the default."""
        chosen = self._choose(body) if self._choose is not None else None
        return chosen or (self._script.popleft() if self._script else self.default)

    async def _watched(self, answer: Coroutine[Any, Any, None], receive: Receive) -> None:
        """Run `answer` until it ends or the client disconnects; count the disconnects."""
        # uvicorn silently drops sends to a closed socket, so only receive() reveals that the
        # client left. The producer's last send completes the response and the task in one
        # step, so a finished answer is always seen before the watcher's wake-up.
        producer = asyncio.create_task(answer)
        watcher = asyncio.create_task(_until_disconnect(receive))
        try:
            done, _ = await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            producer.cancel()
        if producer in done:
            producer.result()  # re-raises SimulatedReset
            return
        await asyncio.wait({producer})
        self.disconnects += 1
        self.disconnected.set()

    async def _start(
        self, request: dict[str, Any], behavior: Behavior, headers: dict[str, str], send: Send
    ) -> dict[str, str] | None:
        """The behaviour's delay and headers; ``None`` when it answered with an error status or body."""
        await pause(behavior.delay_headers)
        if request.get("stream") is True and behavior.status == 200:
            headers = {**headers, "content-type": "text/event-stream", "cache-control": "no-cache"}
        headers = {**headers, **{k.lower(): v for k, v in behavior.headers.items()}}
        if behavior.body is not None or behavior.status != 200:
            fallback = self.error_body(behavior.status, f"{self.error_label} {behavior.status}")
            await respond(send, behavior.status, headers, fallback if behavior.body is None else behavior.body)
            return None
        return headers

    async def _answer(
        self, n: int, request: dict[str, Any], behavior: Behavior, headers: dict[str, str], send: Send
    ) -> None:
        started = await self._start(request, behavior, headers, send)
        if started is None:
            return
        headers = started
        stream = request.get("stream") is True
        reply = _plan(request, behavior)
        base = {"id": f"chatcmpl-fake-{n}", "created": int(time.time()), "model": request["model"]}
        base["system_fingerprint"] = "fp_fake"
        if not stream:
            await _whole(send, headers, orjson.dumps(_completion(base, reply)), behavior)
            return
        options = request.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        await _stream(send, headers, _chunks({**base, "object": "chat.completion.chunk"}, reply, usage), behavior)

    async def _embed(
        self, n: int, request: dict[str, Any], behavior: Behavior, headers: dict[str, str], send: Send
    ) -> None:
        started = await self._start(request, behavior, headers, send)
        if started is not None:
            body = embeddings.answer(request, usage=not behavior.omit_usage)
            await _whole(send, started, orjson.dumps(body), behavior)


async def _whole(send: Send, headers: Mapping[str, str], body: bytes, behavior: Behavior) -> None:
    """A whole 200 body; with ``body_stall``, its two halves apart."""
    if not behavior.body_stall:
        await respond(send, 200, headers, body)
        return
    half = len(body) // 2
    await send({"type": "http.response.start", "status": 200, "headers": encode(headers, len(body))})
    await send({"type": "http.response.body", "body": body[:half], "more_body": True})
    await pause(behavior.body_stall)
    await send({"type": "http.response.body", "body": body[half:]})


async def _stream(send: Send, headers: Mapping[str, str], chunks: Iterable[Any], behavior: Behavior) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": encode(headers)})
    reset = behavior.reset_after_chunks
    for i, chunk in enumerate(chunks):
        if reset is not None and i > reset:
            break
        await pause(behavior.ttft if i == 0 else behavior.chunk_delay)
        # One ASGI message per chunk, so the server flushes each as it is produced.
        event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    if reset is not None:
        # A fault always breaks the stream, at the latest just before [DONE].
        raise SimulatedReset(f"fake connection reset after {reset} chunks past the opening one")
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
