"""Relay an upstream stream to the client as SSE, chunk by chunk, never buffered.

A ``Relay`` turns a ``ChunkStream`` into SSE bytes while noting what the ledger needs (usage, time to
first chunk, how it ended), and owns the upstream stream. ``SSEResponse`` is a minimal ASGI response that
sends each piece as its own body message and watches for the client going away: a disconnect cancels
the relay, and however the response ends it closes the relay, which closes the upstream response, so an
abandoned stream stops costing tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.errors import TiergateError
from proxy.providers.base import ChunkStream
from proxy.sse import DONE_EVENT, error_event, sse_event
from proxy.usage import Usage

log = logging.getLogger("tiergate.streaming")


@dataclass(slots=True)
class StreamStats:
    """What happened to one stream; filled in while relaying, read when it closes."""

    started: float  # perf_counter() when the request arrived
    usage: Usage | None = None
    first_chunk_at: float | None = None
    chunks: int = 0
    completed: bool = False
    client_disconnected: bool = False
    error: TiergateError | None = None
    # Streamed text (UTF-8), kept so a stream cut before its usage chunk can still be estimated: one
    # growing buffer, not a string per chunk (about 60 bytes each, for 5 characters of text).
    streamed: bytearray = field(default_factory=bytearray)

    def text(self) -> str:
        return self.streamed.decode("utf-8", "replace")

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_chunk_at is None else (self.first_chunk_at - self.started) * 1000.0


def relay(
    stream: ChunkStream,
    stats: StreamStats,
    *,
    include_usage: bool,
    observe: Callable[[dict[str, Any]], None] | None = None,
) -> Relay:
    """The ``Relay`` of ``stream`` to one client; ``observe`` sees every chunk's data (the cache's assembler)."""
    return Relay(stream, stats, include_usage=include_usage, observe=observe)


class Relay:
    """SSE bytes for the client from one upstream stream; iterate once, then ``aclose``.

    This one relays chat chunks (``data:`` events, ``[DONE]``); ``proxy.responses.relay`` relays
    Responses events by overriding ``_relay``.

    The relay owns the upstream stream: ``aclose`` releases it whether or not iteration ever began.
    That cannot be left to an async generator's ``finally``: ``aclose()`` on a generator that never
    started does not run it, and a client can leave before the first byte (a disconnect or an
    ``OSError`` while the response start is sent), which would keep the upstream generating.
    """

    def __init__(
        self,
        stream: ChunkStream,
        stats: StreamStats,
        *,
        include_usage: bool = False,
        observe: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._stream = stream
        self._stats = stats
        self._include_usage = include_usage
        self._observe = observe
        self._events = self._relay()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def aclose(self) -> None:
        """Stop relaying and release the upstream; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._events.aclose()
        finally:
            await self._stream.aclose()

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        stream, stats, include_usage, observe = self._stream, self._stats, self._include_usage, self._observe
        try:
            async for chunk in stream:
                data = chunk.data
                payload = chunk.payload
                if observe is not None:
                    observe(data)
                usage = data.get("usage")
                if usage:
                    stats.usage = Usage.from_openai(usage)
                    # The usage-only chunk (choices == []) was requested by tiergate, not the client:
                    # clients that index choices[0] break on it.
                    if not include_usage and not data.get("choices"):
                        continue
                elif not include_usage and "usage" in data:
                    # OpenAI sends `usage: null` on every chunk only to clients that asked for usage.
                    payload = _without_null_usage(payload, data)
                if stats.first_chunk_at is None:
                    stats.first_chunk_at = time.perf_counter()
                stats.chunks += 1
                _collect_text(data, stats.streamed)
                yield sse_event(payload)
            stats.completed = True
            yield DONE_EVENT
        except TiergateError as exc:
            # Headers are gone already: the error can only travel as an event (the SDK raises on it).
            stats.error = exc
            yield error_event(exc.body())
        except Exception:  # noqa: BLE001 - a bug mid-stream still ends the stream cleanly for the client
            # A bug (ours, an adapter's, a library's), not the upstream's doing: logged here, once, with its
            # traceback. Re-raising would only cut the body short and have the server log it a second time;
            # instead the client gets the generic error app.py renders for a crash, then a clean end.
            log.exception("relaying a stream failed after %d chunks", stats.chunks)
            stats.error = TiergateError("tiergate hit an internal error; it has been logged.", code="internal_error")
            yield error_event(stats.error.body())
        finally:
            # Released as soon as the upstream is done, not only when the client's response ends.
            await stream.aclose()


class SSEResponse:
    """ASGI response for an event stream; ``on_close`` runs once, after the last byte or the disconnect.

    However the response ends (done, client gone, send failed, cancelled) it closes ``body``, which
    releases the upstream.
    """

    def __init__(
        self,
        body: Relay,
        stats: StreamStats,
        headers: Mapping[str, str],
        on_close: Callable[[StreamStats], None] | None = None,
    ) -> None:
        self._body = body
        self._stats = stats
        self._on_close = on_close
        raw = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self._raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, task))
        try:
            # Not kept for the stream's life once sent (two bytes objects per header, some 1.2 KB).
            headers, self._raw_headers = self._raw_headers, []
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            del headers
            async for piece in self._body:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._stats.client_disconnected:
                raise
            task.uncancel()  # our own cancellation, on disconnect: a normal end, not an error
        except OSError:
            self._stats.client_disconnected = True
        finally:
            watcher.cancel()
            try:
                await self._body.aclose()
            finally:
                if self._on_close is not None:
                    self._on_close(self._stats)

    async def _watch_disconnect(self, receive: Receive, task: asyncio.Task[object]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self._stats.completed:
                    self._stats.client_disconnected = True
                    task.cancel()
                return


def _collect_text(data: dict[str, Any], text: bytearray) -> None:
    # Only for estimating usage the upstream never sent: a chunk of an odd shape is the upstream's
    # business (relayed as it came), never a reason to fail the stream.
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        content = delta.get("content")
        if isinstance(content, str):
            text += content.encode("utf-8", "replace")
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                named = str(function.get("name") or "") + str(function.get("arguments") or "")
                text += named.encode("utf-8", "replace")


def _without_null_usage(payload: bytes, data: dict[str, Any]) -> bytes:
    # Cutting the bytes (no re-encoding) is safe only when the payload's one "usage" is the top-level key:
    # with a nested object's "usage" (a provider extension) or the word in the text, the first match
    # could be the wrong one.
    if payload.count(b'"usage"') == 1:
        stripped = payload.replace(b',"usage":null', b"", 1)
        if len(stripped) < len(payload):
            return stripped
    # not OpenAI's compact spelling, or ambiguous: re-encode (rare)
    return orjson.dumps({k: v for k, v in data.items() if k != "usage"})
