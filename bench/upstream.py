"""A fake OpenAI upstream fast enough not to be the bottleneck of a proxy benchmark.

It is a raw :class:`asyncio.Protocol` HTTP/1.1 server with keep-alive (requests on a
connection are served one after another; pipelined requests simply wait in the
buffer). It parses only what it needs: the request line, the headers and a
``Content-Length`` (or chunked) body.

Routes:

* ``POST /v1/chat/completions`` and ``POST /chat/completions`` answer in OpenAI's
  shape. A body containing ``"stream": true`` gets an SSE stream sent with chunked
  transfer-encoding: a role chunk, N content chunks, a finish chunk, a usage chunk
  (``choices: []``) when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``. Streams are paced by a time to first token and a delay between
  chunks, set by CLI flags and overridable per request with the headers
  ``x-bench-ttft-ms``, ``x-bench-chunk-delay-ms`` and ``x-bench-chunks``.
  Non-streaming answers are immediate, except for a model named ``slow-<ms>``
  (``slow-600000``), answered after that many milliseconds: a generation that is
  still running while a benchmark measures something else (tiergate's stale reads).
* ``GET /healthz`` answers ``ok``; anything else gets a 404 in OpenAI's error shape.

Run it with ``python bench/upstream.py --port P`` or import :func:`serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - the dev venv has orjson

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(data: bytes) -> Any:
        return json.loads(data)


CHAT_PATHS = frozenset({b"/v1/chat/completions", b"/chat/completions"})
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CONTENT = "The ticket reports intermittent 502s since the deploy; retries succeed."
SERVER_HEADER = b"server: bench-upstream\r\n"


@dataclass(frozen=True)
class Pacing:
    """How a streamed answer is paced."""

    ttft_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    chunks: int = 20

    def with_overrides(self, headers: dict[bytes, bytes]) -> Pacing:
        """Return this pacing with the per-request ``x-bench-*`` header overrides applied."""
        pacing = self
        if b"x-bench-ttft-ms" in headers:
            pacing = replace(pacing, ttft_ms=float(headers[b"x-bench-ttft-ms"]))
        if b"x-bench-chunk-delay-ms" in headers:
            pacing = replace(pacing, chunk_delay_ms=float(headers[b"x-bench-chunk-delay-ms"]))
        if b"x-bench-chunks" in headers:
            pacing = replace(pacing, chunks=max(1, int(headers[b"x-bench-chunks"])))
        return pacing


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request."""

    method: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after this request."""
        return self.headers.get(b"connection", b"").lower() != b"close"


class BadRequest(Exception):
    """The bytes received cannot be an HTTP/1.1 request we serve."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    """Split a request head into method, path (without query) and lower-cased headers."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split(b"?", 1)[0], headers


def _take_chunked_body(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; return (body, end) or None if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buffer[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buffer.find(b"\r\n\r\n", pos - 2)
            return (bytes(body), end + 4) if end >= 0 else None
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos : pos + size]
        pos += size + 2
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "body too large")


def take_request(buffer: bytearray) -> Request | None:
    """Remove and return one complete request from ``buffer``, or None if more bytes are needed."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest(431, "request head too large")
        return None
    method, path, headers = _parse_head(bytes(buffer[:head_end]))
    body_start = head_end + 4
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        taken = _take_chunked_body(buffer, body_start)
        if taken is None:
            return None
        body, end = taken
    else:
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError as exc:
            raise BadRequest(400, "bad content-length") from exc
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, "body too large")
        end = body_start + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[body_start:end])
    del buffer[:end]
    return Request(method, path, headers, body)


def _response_head(status: int, content_type: bytes, length: int | None, keep_alive: bool) -> bytes:
    """Build a response head; ``length=None`` means chunked transfer-encoding."""
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    connection = b"" if keep_alive else b"connection: close\r\n"
    reason = {200: b"OK", 404: b"Not Found"}.get(status, b"Error")
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s%s%s\r\n" % (
        status,
        reason,
        content_type,
        framing,
        SERVER_HEADER,
        connection,
    )


def _json_response(status: int, payload: Any, keep_alive: bool) -> bytes:
    body = _dumps(payload)
    return _response_head(status, b"application/json", len(body), keep_alive) + body


def _error_payload(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@dataclass(frozen=True)
class ChatRequest:
    """What the fake model needs from a chat completion request body."""

    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int

    @classmethod
    def parse(cls, body: bytes) -> ChatRequest:
        """Read model, stream and include_usage from a JSON body."""
        try:
            data = _loads(body)
        except ValueError as exc:
            raise BadRequest(400, "body is not JSON") from exc
        if not isinstance(data, dict):
            raise BadRequest(400, "body is not a JSON object")
        options = data.get("stream_options") or {}
        return cls(
            model=str(data.get("model", "gpt-4o-mini")),
            stream=data.get("stream") is True,
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
            prompt_tokens=max(1, len(body) // 4),
        )


def completion_payload(chat: ChatRequest, completion_id: str, completion_tokens: int) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object in OpenAI's exact shape."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(chat.prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChunkFactory:
    """Builds the SSE events of one streamed completion."""

    def __init__(self, chat: ChatRequest, completion_id: str) -> None:
        self._chat = chat
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": chat.model,
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {**self._base, "choices": choices}
        if self._chat.include_usage:
            chunk["usage"] = usage
        return b"data: " + _dumps(chunk) + b"\n\n"

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    def role(self) -> bytes:
        """The first event: the assistant role with empty content."""
        return self._event(self._choice({"role": "assistant", "content": "", "refusal": None}))

    def content(self, index: int) -> bytes:
        """The ``index``-th content token event."""
        return self._event(self._choice({"content": f"tok{index} "}))

    def finish(self) -> bytes:
        """The event carrying ``finish_reason``."""
        return self._event(self._choice({}, "stop"))

    def usage(self, completion_tokens: int) -> bytes:
        """The usage event (``choices: []``) sent when ``include_usage`` is asked."""
        return self._event([], _usage(self._chat.prompt_tokens, completion_tokens))

    def tail(self, completion_tokens: int) -> list[bytes]:
        """The finish event, the usage event when asked, and ``data: [DONE]``."""
        usage = [self.usage(completion_tokens)] if self._chat.include_usage else []
        return [self.finish(), *usage, b"data: [DONE]\n\n"]


def _chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class UpstreamServer:
    """Shared state of one fake upstream: pacing defaults and an id counter."""

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        """A fresh completion id."""
        return f"chatcmpl-bench{next(self._ids)}"

    def protocol_factory(self) -> Callable[[], UpstreamProtocol]:
        """A factory for :meth:`asyncio.AbstractEventLoop.create_server`."""
        return lambda: UpstreamProtocol(self)


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests one at a time and answer them."""

    def __init__(self, server: UpstreamServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._stream_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._stream_task is not None:
            self._stream_task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._stream_task is None:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        """Answer every complete request in the buffer, stopping at a stream."""
        while self._transport is not None and self._stream_task is None:
            try:
                request = take_request(self._buffer)
            except BadRequest as exc:
                self._write(_json_response(exc.status, _error_payload(str(exc)), keep_alive=False))
                self._close()
                return
            if request is None:
                return
            self._handle(request)

    def _handle(self, request: Request) -> None:
        if request.method == b"POST" and request.path in CHAT_PATHS:
            self._handle_chat(request)
        elif request.method == b"GET" and request.path == b"/healthz":
            self._write(_response_head(200, b"text/plain", 2, request.keep_alive) + b"ok")
        else:
            payload = _error_payload(f"no route {request.path.decode(errors='replace')}")
            self._write(_json_response(404, payload, request.keep_alive))
        if not request.keep_alive and self._stream_task is None:
            self._close()

    def _handle_chat(self, request: Request) -> None:
        try:
            chat = ChatRequest.parse(request.body)
        except BadRequest as exc:
            self._write(_json_response(exc.status, _error_payload(str(exc)), request.keep_alive))
            return
        pacing = self._server.pacing.with_overrides(request.headers)
        completion_id = self._server.next_id()
        if not chat.stream:
            payload = completion_payload(chat, completion_id, pacing.chunks)
            delay = _slow_ms(chat.model)
            if delay:
                self._stream_task = asyncio.ensure_future(self._later(payload, delay, request.keep_alive))
                return
            self._write(_json_response(200, payload, request.keep_alive))
            return
        events = ChunkFactory(chat, completion_id)
        self._stream_task = asyncio.ensure_future(self._stream(events, pacing, request.keep_alive))

    async def _stream(self, events: ChunkFactory, pacing: Pacing, keep_alive: bool) -> None:
        """Send one paced SSE stream, then resume serving the connection."""
        try:
            self._write(_response_head(200, b"text/event-stream; charset=utf-8", None, keep_alive))
            await _sleep_ms(pacing.ttft_ms)
            self._write(_chunk(events.role()))
            for index in range(pacing.chunks):
                if index:
                    await _sleep_ms(pacing.chunk_delay_ms)
                self._write(_chunk(events.content(index)))
            self._write(b"".join(map(_chunk, events.tail(pacing.chunks))) + b"0\r\n\r\n")
        finally:
            self._stream_task = None
        if keep_alive:
            self._serve_buffered()
        else:
            self._close()

    async def _later(self, payload: dict[str, Any], delay_ms: float, keep_alive: bool) -> None:
        """Answer after ``delay_ms`` (the connection waits, as it does for a stream), then serve on."""
        try:
            await _sleep_ms(delay_ms)
            self._write(_json_response(200, payload, keep_alive))
        finally:
            self._stream_task = None
        if keep_alive:
            self._serve_buffered()
        else:
            self._close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _slow_ms(model: str) -> float:
    """The answer delay a ``slow-<ms>`` model name asks for; 0 for any other model."""
    head, _, tail = model.partition("-")
    return float(tail) if head == "slow" and tail.isdigit() else 0.0


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


async def serve(host: str, port: int, pacing: Pacing, ready: Callable[[int], None] | None = None) -> None:
    """Serve the fake upstream until cancelled; ``ready`` gets the bound port."""
    loop = asyncio.get_running_loop()
    # A proxy opening thousands of streams at once connects in one burst (bench/streams.py -n 10000)
    server = await loop.create_server(UpstreamServer(pacing).protocol_factory(), host, port, backlog=4096)
    async with server:
        bound_port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready(bound_port)
        await server.serve_forever()


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is importable; return whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="stream: delay before the first chunk")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="stream: delay between content chunks")
    parser.add_argument("--chunks", type=int, default=20, help="stream: number of content chunks")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = _parse_args(argv)
    with_uvloop = not args.no_uvloop and install_uvloop()
    pacing = Pacing(args.ttft_ms, args.chunk_delay_ms, max(1, args.chunks))

    def ready(port: int) -> None:
        print(f"upstream listening on http://{args.host}:{port} uvloop={with_uvloop} {pacing}", flush=True)

    try:
        asyncio.run(serve(args.host, args.port, pacing, ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
