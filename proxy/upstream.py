"""The one pooled HTTP client that talks to providers, behind a small interface.

httpx is the client API; the transport under it is picked by name from ``TRANSPORTS`` (a table row per
alternative, as uvicorn picks its loop and protocol). The default is the aiohttp transport: measured on
our 2-core machine, httpcore's pool costs about twice the CPU per proxied request and collapses at 64
concurrent streams (see bench/ and the README). Errors from either transport are translated here, at the
boundary, into the ``UpstreamError`` tree; nothing above this module sees httpx or aiohttp exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager

import aiohttp
import httpx

from proxy.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from proxy.sse import MAX_EVENT, iter_events

MAX_BODY = 32 * 2**20  # bytes of a non-streamed answer (tiergate serve sets --max-body-mb)
# aiohttp buffers up to twice this per connection before it stops reading the socket. Its default
# (256 KiB) lets a stream whose relay cannot send (a client that stopped reading, a busy proxy) queue
# 512 KiB in Python objects; beyond 32 KiB the rest waits in the kernel, and the upstream is slowed
# by TCP flow control. Reads are not smaller: one read still takes what the socket holds (bench/streams.py
# --stall-s: 200 stalled streams cost 270-307 KB each with the default, 190-221 KB with this).
READ_BUFSIZE = 16 * 2**10


def _httpcore_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def _aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    ssl_context = httpx.create_ssl_context()

    def session() -> aiohttp.ClientSession:
        # What AiohttpTransport builds itself, plus the read buffer; called on the first request,
        # inside the running loop, as a ClientSession must be.
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry, ssl=ssl_context
        )
        return aiohttp.ClientSession(connector=connector, read_bufsize=READ_BUFSIZE)

    return AiohttpTransport(verify=ssl_context, limits=limits, client=session)


TRANSPORTS: dict[str, Callable[[httpx.Limits], httpx.AsyncBaseTransport]] = {
    "aiohttp": _aiohttp_transport,
    "httpcore": _httpcore_transport,
}


def check_transport(name: str) -> None:
    """Raise ``ValueError`` (one line for the CLI) unless ``name`` is a row of ``TRANSPORTS``."""
    if name not in TRANSPORTS:
        raise ValueError(f"--transport: {name!r} is not one of {', '.join(TRANSPORTS)}")


# What bounds one wait for the body (``asyncio.timeout``): a seam, so tests can expire it on their
# own clock instead of racing the wall clock's.
Timeout = Callable[[float | None], AbstractAsyncContextManager[object]]


class UpstreamResponse:
    """An upstream response whose body has not been read yet; reads translate transport errors.

    ``idle`` bounds each silence while the body arrives, not the whole body: a long answer that keeps
    coming is fine. The wait for the first body bytes is not bounded here: the caller bounds it (first
    byte), and the socket's own read timeout is as long as that wait may be. Size is bounded too: a
    whole body by ``max_body`` bytes, one stream event by ``max_event``; beyond either the answer is
    ``UpstreamProtocolError``, with memory near the bound, never the whole of what was sent.
    """

    def __init__(
        self,
        response: httpx.Response,
        idle: float | None = None,
        *,
        timeout: Timeout = asyncio.timeout,
        max_body: int = MAX_BODY,
        max_event: int = MAX_EVENT,
    ) -> None:
        self._response = response
        self._idle = idle
        self._timeout = timeout
        self._max_body = max_body
        self._max_event = max_event
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The whole body, decoded (then the connection goes back to the pool)."""
        try:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_body:
                raise self._too_large()
            body = bytearray()
            async for chunk in self._bounded(self._response.aiter_bytes()):
                if len(body) + len(chunk) > self._max_body:
                    raise self._too_large()
                body += chunk
            return bytes(body)
        finally:
            await self.aclose()

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk, as sent (no content decoding)."""
        return self._bounded(self._response.aiter_raw())

    def events(self) -> AsyncIterator[tuple[str, bytes]]:
        """The body as server-sent events, ``(event, data)``, each at most ``max_event`` bytes."""
        return iter_events(self.iter_bytes(), self._max_event)

    async def _bounded(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        chunks = aiter(source)
        idle: float | None = None  # the first bytes are due within first_byte_s, which the caller bounds
        while True:
            # The bound spans one read, never a yield: the consumer's own pace is not idleness.
            with translated(broken=True, status=self.status):
                async with self._timeout(idle):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
            idle = self._idle
            yield chunk

    def _too_large(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"The upstream provider's answer exceeds {self._max_body // 2**20} MiB (TIERGATE_MAX_BODY_MB).",
            upstream_status=self.status,
        )

    async def aclose(self) -> None:
        """Release the connection; safe to call twice, never raises (it runs on cleanup paths)."""
        try:
            await self._response.aclose()
        except Exception:  # noqa: BLE001 - a failed close must not mask the real outcome
            pass


class UpstreamClient:
    """One pooled client per process, created in the lifespan and closed on shutdown.

    Requests are httpx ``Request`` objects handed straight to the transport: ``AsyncClient.send``
    adds cookie jars, auth flows, redirect handling and URL merging that a proxy with fixed
    upstream URLs never uses, and that was about a tenth of tiergate's CPU per request.
    ``timeout`` bounds each wait for a response body (``Timeout``).
    """

    def __init__(
        self,
        transport: str = "aiohttp",
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 1000,
        timeout: Timeout = asyncio.timeout,
        max_body: int = MAX_BODY,
        max_event: int = MAX_EVENT,
    ) -> None:
        check_transport(transport)
        self._timeout = timeout
        self._max_body = max_body
        self._max_event = max_event
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.transport = transport
        self._connect_timeout = connect_timeout
        self._transport = TRANSPORTS[transport](limits)
        self._urls: dict[str, httpx.URL] = {}  # parsed once: a few provider endpoints
        self.closed = False  # the pool has been closed (aclose() completed)

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        content: bytes,
        *,
        read_timeout: float | None = None,
        idle_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a POST and return once the response headers are in; the body is read by the caller."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        connect = self._connect_timeout if connect_timeout is None else connect_timeout
        request = httpx.Request(
            "POST",
            parsed,
            headers=headers,
            # The request holds its body until the response is closed, a stream's whole life. orjson
            # (>= 3.12) never trims its output buffer: a 300-byte body occupies 4 KiB unless copied.
            content=bytes(memoryview(content)),
            extensions={"timeout": {"connect": connect, "read": read_timeout, "write": 30.0, "pool": 30.0}},
        )
        with translated():
            response = await self._transport.handle_async_request(request)
        response.request = request
        return UpstreamResponse(
            response, idle_timeout, timeout=self._timeout, max_body=self._max_body, max_event=self._max_event
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
        self.closed = True


def _late(broken: bool) -> UpstreamError:
    return UpstreamTimeout("The upstream provider did not answer in time.")


def _lost(broken: bool) -> UpstreamError:
    if broken:
        return UpstreamUnreachable("The upstream provider closed the connection mid-response.")
    return UpstreamUnreachable("The upstream provider could not be reached.")


def _not_http(broken: bool) -> UpstreamError:
    return UpstreamProtocolError("The upstream provider sent a response that is not valid HTTP.")


def _undecodable(broken: bool) -> UpstreamError:
    return UpstreamProtocolError("The upstream provider sent a body that could not be decoded.")


# What each transport failure is for the client, most specific first: the first row that matches wins
# (httpx's map_httpcore_exceptions() is the model). ``broken``: the response had started. Anything not
# listed is a bug, ours or a library's, and is let through unchanged so that it becomes the 500 it is,
# not a retried, breaker-counted "could not be reached".
_ERRORS: tuple[tuple[type[BaseException], Callable[[bool], UpstreamError]], ...] = (
    # aiohttp's own classes, seen raw (httpx-aiohttp leaves some unmapped) or as the cause of its mapping
    (aiohttp.ClientResponseError, _not_http),  # a bad status line or headers
    (TimeoutError, _late),  # aiohttp's, asyncio's and our idle bound (an OSError: before that row)
    (aiohttp.ClientError, _lost),  # a refused connect, a hang-up, a cut body
    # httpx's tree: the httpcore transport, and httpx-aiohttp's mapping when it has no aiohttp cause
    (httpx.DecodingError, _undecodable),  # a content-encoding that does not decode
    (httpx.TimeoutException, _late),
    (httpx.TransportError, _lost),
    (OSError, _lost),
)


def translate(exc: BaseException, *, broken: bool = False) -> UpstreamError | None:
    """Our error for a transport failure (the message is safe for clients: no URL, no key), else ``None``."""
    if isinstance(exc, httpx.HTTPError) and isinstance(exc.__cause__, aiohttp.ClientError):
        # httpx-aiohttp's mapping loses what happened (every connection error, a server hang-up
        # included, becomes ConnectTimeout): the aiohttp error it was raised from still says.
        exc = exc.__cause__
    for kind, error in _ERRORS:
        if isinstance(exc, kind):
            return error(broken)
    return None


@contextmanager
def translated(*, broken: bool = False, status: int | None = None) -> Iterator[None]:
    """Re-raise a transport failure inside the block as our error (``raise ... from exc``); let bugs through.

    ``status``: the HTTP status the upstream had answered before the failure, kept on the error.
    """
    try:
        yield
    except Exception as exc:
        error = translate(exc, broken=broken)
        if error is None:
            raise
        error.upstream_status = status
        raise error from exc
