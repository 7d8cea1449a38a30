"""The one pooled HTTP client that talks to providers, behind a small interface.

httpx is the client API; the transport under it is picked by name from ``TRANSPORTS`` (a table row per
alternative, as uvicorn picks its loop and protocol). The default is the aiohttp transport: measured on
our 2-core machine, httpcore's pool costs about twice the CPU per proxied request and collapses at 64
concurrent streams (see bench/ and the README). Errors from either transport are translated here, at the
boundary, into the ``UpstreamError`` tree; nothing above this module sees httpx or aiohttp exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager

import httpx

from proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable


def _httpcore_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def _aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=limits)


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

    ``idle`` bounds each silence while the body arrives (the socket's own read timeout is as long
    as the wait for the first byte may be).
    """

    def __init__(
        self, response: httpx.Response, idle: float | None = None, *, timeout: Timeout = asyncio.timeout
    ) -> None:
        self._response = response
        self._idle = idle
        self._timeout = timeout
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The whole body (then the connection goes back to the pool)."""
        try:
            async with self._timeout(self._idle):
                return await self._response.aread()
        except Exception as exc:
            raise translate(exc) from exc
        finally:
            await self._response.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk."""
        chunks = self._response.aiter_raw().__aiter__()
        idle: float | None = None  # the first bytes are due within first_byte_s, which the caller bounds
        while True:
            try:
                # The timeout spans one read, never a yield: the consumer's own pace is not idleness.
                async with self._timeout(idle):
                    chunk = await chunks.__anext__()
                idle = self._idle
            except StopAsyncIteration:
                return
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                raise translate(exc, broken=True) from exc
            yield chunk

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
    ) -> None:
        check_transport(transport)
        self._timeout = timeout
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.transport = transport
        self._connect_timeout = connect_timeout
        self._transport = TRANSPORTS[transport](limits)
        self._urls: dict[str, httpx.URL] = {}  # parsed once: a few provider endpoints

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
            content=content,
            extensions={"timeout": {"connect": connect, "read": read_timeout, "write": 30.0, "pool": 30.0}},
        )
        try:
            response = await self._transport.handle_async_request(request)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            raise translate(exc) from exc
        response.request = request
        return UpstreamResponse(response, idle_timeout, timeout=self._timeout)

    async def aclose(self) -> None:
        await self._transport.aclose()


def translate(exc: BaseException, *, broken: bool = False) -> UpstreamError:
    """Map a transport exception to our tree; the message is safe for clients (no URL, no key)."""
    if isinstance(exc, UpstreamError):
        return exc
    if _is_timeout(exc):
        return UpstreamTimeout("The upstream provider did not answer in time.")
    if broken:
        return UpstreamUnreachable("The upstream provider closed the connection mid-response.")
    return UpstreamUnreachable("The upstream provider could not be reached.")


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TimeoutException):
        cause = exc.__cause__
        # httpx-aiohttp maps every aiohttp ClientConnectionError (a server disconnect too) to
        # ConnectTimeout; only a cause that is itself a timeout is one.
        if cause is not None and type(cause).__module__.startswith("aiohttp"):
            return isinstance(cause, asyncio.TimeoutError)
        return True
    return isinstance(exc, asyncio.TimeoutError)
