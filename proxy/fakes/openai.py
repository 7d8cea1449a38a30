"""A fake OpenAI Chat Completions upstream: an ASGI app for `tiergate demo` and for tests.

It speaks the real wire format (bodies, SSE chunks, error bodies, headers) with no network
and no keys, and its replies are deterministic so tests can compute expected values:

- reply text: `Behavior.text`, else ``f"Fake reply from {model}: "`` + the first 12 words
  of the last user message (text parts of a list content are joined with a space);
- with `tools`, `tool_choice` not "none" and a last message not from role "tool": one call
  ``call_fake_1`` to the named (else the first) tool, arguments ``"{}"``, content null;
- prompt_tokens = sum over messages of ``len(text) // 4 + 4`` (see `count_prompt_tokens`);
  completion_tokens = whitespace-separated words of the reply (1 for a tool call);
- `max_completion_tokens`/`max_tokens` below that truncates the words, finish_reason "length";
- cached_tokens: `Behavior.cached_tokens`, at most prompt_tokens (0 by default).

A `Behavior` (scripted FIFO with `push`, else the default) sets status, headers, delays and
stream faults for one chat request. A delay is seconds, or an `asyncio.Event` to wait for: an
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
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

Delay = float | asyncio.Event  # seconds to sleep, or an event to wait for

MODELS = ("fake-model",)  # what GET /models lists; any model name is accepted
_PREVIEW_WORDS = 12
_TOOL_ARGUMENT_FRAGMENTS = ("{", "}")


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
class _Reply:
    text: str | None  # None means a tool call
    tool_name: str
    finish_reason: str
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


def _tool_to_call(request: Mapping[str, Any]) -> str | None:
    tools, choice, messages = request.get("tools"), request.get("tool_choice"), request["messages"]
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if messages and messages[-1].get("role") == "tool":
        return None  # the tool already answered: reply with text, as a model would
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", "tool"))
    first = tools[0] if isinstance(tools[0], dict) else {}
    return str((first.get("function") or first).get("name", "tool"))


def _plan(request: Mapping[str, Any], behavior: Behavior) -> _Reply:
    messages, tool, text, finish = request["messages"], _tool_to_call(request), behavior.text, "stop"
    if tool is not None:
        text, completion, finish = None, 1, "tool_calls"
    else:
        if text is None:
            users = [m for m in messages if m.get("role") == "user"]
            preview = message_text(users[-1]).split()[:_PREVIEW_WORDS] if users else []
            text = f"Fake reply from {request['model']}: " + " ".join(preview)
        words = text.split()
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(limit, int) and limit < len(words):
            words, finish = words[:limit], "length"
            text = " ".join(words)
        completion = len(words)
    prompt = count_prompt_tokens(messages)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(behavior.cached_tokens, prompt)},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return _Reply(text, tool or "", finish, None if behavior.omit_usage else usage)


def _tool_call(name: str) -> dict[str, Any]:
    return {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _completion(base: dict[str, Any], reply: _Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.text is None:
        message["tool_calls"] = [_tool_call(reply.tool_name)]
    choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}
    body = {**base, "object": "chat.completion", "choices": [choice]}
    return body if reply.usage is None else {**body, "usage": reply.usage}


def _deltas(reply: _Reply) -> Iterator[dict[str, Any]]:
    """The opening delta, then one delta per content piece (words, or argument fragments)."""
    if reply.text is None:
        opening = {**_tool_call(reply.tool_name), "index": 0}
        opening["function"] = {"name": reply.tool_name, "arguments": ""}
        yield {"role": "assistant", "content": None, "tool_calls": [opening]}
        for fragment in _TOOL_ARGUMENT_FRAGMENTS:
            yield {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
        return
    yield {"role": "assistant", "content": ""}
    # Each word keeps its trailing whitespace so the pieces join back to the exact text.
    for piece in re.findall(r"\s*\S+\s*", reply.text):
        yield {"content": piece}


def _chunks(base: dict[str, Any], reply: _Reply, usage: bool) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        # OpenAI sends "usage": null on every chunk only when usage was asked for.
        return {**base, "choices": [choice], **({"usage": None} if usage else {})}

    yield from (chunk(d) for d in _deltas(reply))
    yield chunk({}, reply.finish_reason)
    if usage and reply.usage is not None:
        yield {**base, "choices": [], "usage": reply.usage}


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
        if route not in ("/models", "/chat/completions"):
            await respond(send, 404, reply_headers, error_body(404, f"Unknown path {path}"))
        elif (method, route) == ("GET", "/models"):
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "tiergate"} for m in MODELS]
            await respond(send, 200, reply_headers, orjson.dumps({"object": "list", "data": models}))
        elif (method, route) != ("POST", "/chat/completions"):
            await respond(send, 405, reply_headers, error_body(405, f"Method {method} not allowed"))
        elif not _is_chat_request(body):
            problem = "Request body must be a JSON object with 'model' and 'messages'"
            await respond(send, 400, reply_headers, error_body(400, problem))
        else:
            chosen = self._choose(body) if self._choose is not None else None
            behavior = chosen or (self._script.popleft() if self._script else self.default)
            await self._watched(self._answer(n, body, behavior, reply_headers, send), receive)

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
            body = orjson.dumps(_completion(base, reply))
            if behavior.body_stall:
                half = len(body) // 2
                await send({"type": "http.response.start", "status": 200, "headers": encode(headers, len(body))})
                await send({"type": "http.response.body", "body": body[:half], "more_body": True})
                await pause(behavior.body_stall)
                await send({"type": "http.response.body", "body": body[half:]})
                return
            await respond(send, 200, headers, body)
            return
        options = request.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        await _stream(send, headers, _chunks({**base, "object": "chat.completion.chunk"}, reply, usage), behavior)


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
