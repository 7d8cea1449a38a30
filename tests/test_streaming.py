"""The SSE relay end to end: what reaches the client, what reaches the ledger, and that the upstream is let go.

openai SDK (or raw httpx where the bytes are the point) -> tiergate (uvicorn, loopback) -> FakeOpenAI
(uvicorn, loopback). Where a precise misbehaviour of the server around tiergate is needed, a tiny ASGI
wrapper in this file provides it; nothing of tiergate's own is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.app import create_app
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.providers.base import Chunk, ChunkStream
from proxy.settings import Settings
from proxy.streaming import SSEResponse, StreamStats, relay
from tests.conftest import ProxyFactory, sdk, shipped_registry

USER = [{"role": "user", "content": "Tell me about queues"}]
T = TypeVar("T")

# Only a bound on waits for events that are due at once; a test that needs it has already failed.
_HANG_S = 10.0

OPENING = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}  # fmt: skip
USAGE = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
FINAL = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": USAGE}


def sse(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + p + b"\n\n" for p in payloads)


def events(text: str) -> list[str]:
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e]


async def soon(awaitable: Awaitable[T], what: str) -> T:
    """``await awaitable``, failing with ``what`` instead of hanging if it never completes."""
    try:
        async with asyncio.timeout(_HANG_S):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


def ledger_rows(db: str, columns: str = "status, error_type, stream") -> list[tuple[Any, ...]]:
    """``columns`` of each request row, in the order they were written (read once the proxy has stopped)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {columns} FROM requests ORDER BY rowid").fetchall()
    finally:
        conn.close()


# --- a client that leaves before the first byte ---------------------------------------------------------


class SlowStart:
    """Serves ``app`` through a ``send`` that yields on the response start until the client has gone.

    A real server or middleware yields there too (HTTP/2 flow control, Starlette's BaseHTTPMiddleware);
    then a disconnect lands before the relay has produced its first byte. With ``raises`` the server
    reports the gone client as ASGI 2.4 allows, by raising ``OSError`` from ``send`` (and ``receive``
    never tells the app); without it ``send`` just stays put and the app's own disconnect watcher acts.
    """

    def __init__(self, app: ASGIApp, *, raises: bool) -> None:
        self.app = app
        self.raises = raises
        self.holding = asyncio.Event()  # the response start is being held
        self.returned = asyncio.Event()  # the app's call for the held request has returned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gone = asyncio.Event()

        async def quiet_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                await asyncio.Future()  # only send() may tell the app
            return message

        async def held_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.holding.set()
                await gone.wait()  # without `raises` nothing sets it: only a cancellation gets out
                raise OSError("the client has gone away")
            await send(message)

        try:
            await self.app(scope, quiet_receive if self.raises else receive, held_send)
        finally:
            self.returned.set()


@pytest.mark.parametrize("raises", [False, True], ids=["cancelled", "send-raises"])
async def test_a_client_gone_before_the_first_byte_still_releases_the_upstream(
    fake: FakeOpenAI, upstream_url: str, settings: Settings, raises: bool
) -> None:
    fake.push(Behavior(chunk_delay=3600))  # the opening chunk at once, then nothing: only a close ends it
    proxy = SlowStart(create_app(settings, shipped_registry(upstream_url)), raises=raises)
    async with serve(proxy) as url:
        client = sdk(url)
        opening = client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
        request = asyncio.create_task(opening)
        await soon(proxy.holding.wait(), "tiergate started its response")
        request.cancel()  # the client gives up before any byte of the body: its connection closes
        await asyncio.wait({request})
        await client.close()
        await soon(proxy.returned.wait(), "tiergate finished the abandoned response")
        await soon(fake.disconnected.wait(), "the upstream saw tiergate close its connection")
    assert fake.disconnects == 1
    assert ledger_rows(settings.db) == [(499, "client_disconnected", 1)]


# --- a bug mid-stream ---------------------------------------------------------------------------------


class BuggyStream(ChunkStream):
    """A provider stream with a bug in it: one chunk, then an exception no adapter translated."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        yield Chunk(orjson.dumps(OPENING), OPENING)
        raise ZeroDivisionError("a bug in an adapter")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_bug_mid_stream_is_logged_once_and_the_client_gets_an_error_event_and_a_clean_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = BuggyStream()
    closed: list[StreamStats] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        stats = StreamStats(started=time.perf_counter())
        response = SSEResponse(relay(stream, stats, include_usage=False), stats, {}, on_close=closed.append)
        await response(scope, receive, send)

    caplog.set_level(logging.ERROR)
    async with serve(app, lifespan="off") as url:
        # uvicorn's loggers do not propagate to the root (where caplog listens), and serve() configures
        # them afresh: listen on "uvicorn.error", where a crash of the app would be logged, once it is up.
        uvicorn_errors = logging.getLogger("uvicorn.error")
        uvicorn_errors.addHandler(caplog.handler)
        try:
            async with httpx.AsyncClient() as http:
                response = await http.post(url)  # reads to the end: a cut body raises here
        finally:
            uvicorn_errors.removeHandler(caplog.handler)
    relayed = events(response.text)
    assert len(relayed) == 2 and orjson.loads(relayed[0]) == OPENING
    error = orjson.loads(relayed[1])["error"]
    assert (error["code"], error["type"]) == ("internal_error", "server_error")
    assert "ZeroDivisionError" not in response.text and "adapter" not in response.text  # details stay in the log
    [stats] = closed
    assert stats.error is not None and stats.error.code == "internal_error" and not stats.completed
    assert stream.closed
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.exc_info[0] if r.exc_info else None) for r in logged] == [
        ("tiergate.streaming", ZeroDivisionError)
    ]


# --- chunks relayed as they came, but for a usage: null the client did not ask for ---------------------------------------------------------


@pytest.mark.parametrize(
    "opening",
    [
        orjson.dumps({**OPENING, "usage": None}),  # OpenAI's compact spelling, usage last
        json.dumps({**OPENING, "usage": None}).encode(),  # Python's spaced spelling
        orjson.dumps({"usage": None, **OPENING}),  # usage first
        orjson.dumps({**OPENING, "x_provider": {"id": "r1", "usage": None}, "usage": None}),  # a nested one first
        orjson.dumps({**OPENING, "usage": None, "x_provider": {"id": "r1", "usage": None}}),  # a nested one after
        orjson.dumps({**OPENING, "x_provider": {"id": "r1", "usage": None}}),  # only a nested one: not ours
    ],
    ids=["compact", "spaced", "first", "nested-before", "nested-after", "nested-only"],
)
async def test_usage_null_is_dropped_for_a_client_that_did_not_ask_and_only_the_top_level_one(
    fake: FakeOpenAI, upstream_url: str, start_proxy: ProxyFactory, settings: Settings, opening: bytes
) -> None:
    fake.push(Behavior(body=sse(opening, orjson.dumps(FINAL), b"[DONE]")))
    async with start_proxy(shipped_registry(upstream_url)) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER, "stream": True})
    relayed = events(response.text)
    assert len(relayed) == 2 and relayed[1] == "[DONE]"  # the usage-only chunk was tiergate's wish, not the client's
    assert orjson.loads(relayed[0]) == {k: v for k, v in orjson.loads(opening).items() if k != "usage"}
    # ... but its usage is what the ledger keeps
    assert ledger_rows(settings.db, "error_type, usage_source, prompt_tokens, completion_tokens") == [
        (None, "upstream", 7, 1)
    ]


async def test_a_client_that_asked_for_usage_gets_every_chunk_byte_for_byte(
    client: AsyncOpenAI, fake: FakeOpenAI
) -> None:
    opening = orjson.dumps({**OPENING, "x_provider": {"id": "r1", "usage": None}, "usage": None})
    fake.push(Behavior(body=sse(opening, orjson.dumps(FINAL), b"[DONE]")))
    async with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    ) as response:
        text = b"".join([piece async for piece in response.iter_bytes()]).decode()
    assert events(text) == [opening.decode(), orjson.dumps(FINAL).decode(), "[DONE]"]


# --- an upstream stream that just stops ----------------------------------------------------------------


async def test_a_stream_the_upstream_ends_without_done_is_an_error_not_a_completed_answer(
    fake: FakeOpenAI, upstream_url: str, start_proxy: ProxyFactory, settings: Settings
) -> None:
    fake.push(Behavior(body=sse(orjson.dumps(OPENING))))  # a clean close, but no [DONE]: the answer was cut
    async with start_proxy(shipped_registry(upstream_url)) as url:
        client = sdk(url)
        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
        received = []
        with pytest.raises(openai.APIError) as err:
            async for chunk in stream:
                received.append(chunk)
        await client.close()
    assert [c.choices[0].delta.content for c in received] == ["Hi"]
    assert err.value.message == "The upstream provider closed the connection mid-response."
    assert ledger_rows(settings.db) == [(200, "upstream_unreachable", 1)]


@pytest.mark.parametrize(
    "odd",
    [{"choices": 5}, {"choices": [{"index": 0, "delta": {"tool_calls": 5}}]}, {"choices": [{"delta": {"content": 5}}]}],
    ids=["choices", "tool_calls", "content"],
)
async def test_a_chunk_of_an_odd_shape_is_relayed_as_it_came_not_taken_for_a_bug(
    fake: FakeOpenAI, proxy_url: str, odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    strange = orjson.dumps({**OPENING, **odd})
    fake.push(Behavior(body=sse(orjson.dumps(OPENING), strange, b"[DONE]")))
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER, "stream": True})
    assert events(response.text) == [orjson.dumps(OPENING).decode(), strange.decode(), "[DONE]"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
