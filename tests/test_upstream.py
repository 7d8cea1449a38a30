"""The upstream boundary: bodies read under an idle bound per silence, transport failures mapped to our tree.

``UpstreamClient`` (each transport of ``TRANSPORTS``) -> a small upstream on loopback: an ASGI app on uvicorn
where a well-formed HTTP answer is the point, a raw TCP server where the answer must be malformed in ways
no ASGI server would send.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from starlette.types import Receive, Scope, Send

from proxy.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from proxy.fakes.openai import encode, read_body
from proxy.loopback import serve
from proxy.upstream import TRANSPORTS, UpstreamClient

T = TypeVar("T")
_HANG_S = 10.0  # only bounds waits for events due at once; a test that needs it has already failed


async def soon(awaitable: Awaitable[T], what: str) -> T:
    try:
        async with asyncio.timeout(_HANG_S):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


@pytest.fixture(params=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def client(transport: str) -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(transport)
    yield http
    await http.aclose()


class ManualClock:
    """``asyncio.timeout`` on a clock the test moves: ``advance`` expires each open scope it takes past due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.opened = 0  # scopes entered so far
        self._deadlines: dict[asyncio.Timeout, float] = {}
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def timeout(self, delay: float | None) -> AsyncIterator[None]:
        async with asyncio.timeout(None) as scope:
            self._deadlines[scope] = math.inf if delay is None else self.now + delay
            self.opened += 1
            self._changed.set()
            try:
                yield
            finally:
                del self._deadlines[scope]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        loop = asyncio.get_running_loop()
        for scope, deadline in self._deadlines.items():
            if deadline <= self.now:
                scope.reschedule(loop.time())  # due now: asyncio cancels the wait and raises TimeoutError

    async def until_opened(self, n: int) -> None:
        while self.opened < n:
            self._changed.clear()
            await self._changed.wait()


class Paced:
    """An upstream that answers 200 with a known length, then sends each piece when the test releases it."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self._released: asyncio.Queue[None] = asyncio.Queue()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._released.put_nowait(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        length = sum(map(len, self.pieces))
        await send({"type": "http.response.start", "status": 200, "headers": encode({}, length)})
        for n, piece in enumerate(self.pieces):
            await self._released.get()
            await send({"type": "http.response.body", "body": piece, "more_body": n < len(self.pieces) - 1})


async def test_a_body_slower_in_all_than_idle_but_never_silent_that_long_is_read_whole(transport: str) -> None:
    clock = ManualClock()
    upstream = Paced(b'{"id": ', b'"chatcmpl-1", ', b'"choices": ', b"[]}")
    async with serve(upstream, lifespan="off") as url:
        http = UpstreamClient(transport, timeout=clock.timeout)
        try:
            response = await http.post(url, {}, b"{}", idle_timeout=1.0)
            reading = asyncio.create_task(response.read())
            for n in range(len(upstream.pieces)):
                # The reader waits for piece n under a bound of its own; 0.6 s of silence, then it comes.
                await soon(clock.until_opened(n + 1), f"a bound of its own for the wait for piece {n}")
                clock.advance(0.6)
                upstream.release()
            body = await reading
        finally:
            await http.aclose()
    assert body == b"".join(upstream.pieces)
    assert clock.now > 1.0  # the whole read took longer than one idle period


async def test_one_silence_longer_than_idle_fails_the_read_with_a_timeout(client: UpstreamClient) -> None:
    upstream = Paced(b'{"id": ', b'"chatcmpl-1"}')
    async with serve(upstream, lifespan="off") as url:
        response = await client.post(url, {}, b"{}", idle_timeout=0.2)
        upstream.release()  # the first piece; the second only once the read has given up
        try:
            with pytest.raises(UpstreamTimeout):
                await response.read()
        finally:
            upstream.release()


async def test_a_bug_while_reading_surfaces_as_itself_not_as_an_unreachable_upstream(client: UpstreamClient) -> None:
    upstream = Paced(b"{}")
    upstream.release()
    async with serve(upstream, lifespan="off") as url:
        # A caller's bug: an idle bound that is not a number. It must become the 500 it is, not a retried,
        # breaker-counted "could not be reached".
        response = await client.post(url, {}, b"{}", idle_timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await response.read()


# --- malformed answers ------------------------------------------------------------------------------------


@asynccontextmanager
async def raw_upstream(reply: bytes) -> AsyncIterator[str]:
    """A TCP server that reads one request, writes ``reply`` verbatim and hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CUT = OK_HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 10
CUT_CHUNKED = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\na\r\n" + b"x" * 10 + b"\r\n"
NOT_GZIP = OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
MID_RESPONSE = "The upstream provider closed the connection mid-response."


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (CUT, UpstreamUnreachable, MID_RESPONSE),
        (CUT_CHUNKED, UpstreamUnreachable, MID_RESPONSE),
        (NOT_GZIP, UpstreamProtocolError, "The upstream provider sent a body that could not be decoded."),
    ],
    ids=["cut", "cut-chunked", "not-gzip"],
)
async def test_a_broken_body_is_the_upstreams_fault_named_for_what_broke(
    client: UpstreamClient, reply: bytes, error: type[UpstreamError], message: str
) -> None:
    async with raw_upstream(reply) as url:
        response = await client.post(url, {}, b"{}", idle_timeout=5.0)
        with pytest.raises(UpstreamError) as raised:
            await response.read()
    assert (type(raised.value), raised.value.message) == (error, message)


async def test_a_hang_up_before_the_headers_is_an_unreachable_upstream(client: UpstreamClient) -> None:
    async with raw_upstream(b"") as url:
        with pytest.raises(UpstreamUnreachable) as raised:
            await client.post(url, {}, b"{}")
    assert raised.value.message == "The upstream provider could not be reached."


async def test_an_answer_that_is_not_http_is_an_upstream_error_not_a_crash(client: UpstreamClient) -> None:
    async with raw_upstream(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as url:
        with pytest.raises(UpstreamError) as raised:
            await client.post(url, {}, b"{}")
    # aiohttp says the answer is not HTTP; httpcore cannot tell it from a hang-up (both RemoteProtocolError).
    assert type(raised.value) in (UpstreamProtocolError, UpstreamUnreachable)
    assert raised.value.retryable
