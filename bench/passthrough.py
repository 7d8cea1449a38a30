"""Minimal Starlette passthrough proxies: the floor of the tiergate stack per HTTP client.

``POST /v1/chat/completions`` (and ``/chat/completions``) forwards the body to the
upstream and returns its answer; an SSE answer is relayed chunk by chunk through a
:class:`~starlette.responses.StreamingResponse`. ``GET /healthz`` answers ``ok``.

One app per client stack, chosen with ``--client``:

* ``httpcore``: httpx with its default httpcore connection pool;
* ``httpx-aiohttp``: httpx with ``httpx_aiohttp.AiohttpTransport``;
* ``aiohttp``: a bare ``aiohttp.ClientSession``.

Each runs under uvicorn with uvloop, httptools, one worker and no access log:

    python bench/passthrough.py --client aiohttp --port 8901 --upstream http://127.0.0.1:8900/v1
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import sniffio  # noqa: F401  httpcore retries a failing sniffio import on every pool operation when absent
import uvicorn
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

# Enough connections for the highest concurrency the harness uses, all kept alive.
MAX_CONNECTIONS = 256
TIMEOUT_S = 60.0
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class UpstreamAnswer:
    """An upstream response: status, content type, and either a body or a byte stream."""

    status: int
    content_type: str
    body: bytes | None
    chunks: AsyncIterator[bytes] | None
    close: Callable[[], Awaitable[None]]


class Forwarder(Protocol):
    """Sends one request upstream; each client stack implements it."""

    async def forward(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamAnswer:
        """POST ``body`` to ``url`` and return the answer, streaming when it is SSE."""

    async def aclose(self) -> None:
        """Release the connection pool."""


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)


class HttpxForwarder:
    """httpx on a given transport (httpcore's pool or aiohttp's)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def forward(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamAnswer:
        request = self._client.build_request("POST", url, content=body, headers=headers)
        response = await self._client.send(request, stream=True)
        content_type = response.headers.get("content-type", "application/json")
        if content_type.startswith(EVENT_STREAM):
            return UpstreamAnswer(response.status_code, content_type, None, response.aiter_raw(), response.aclose)
        try:
            payload = await response.aread()
        finally:
            await response.aclose()
        return UpstreamAnswer(response.status_code, content_type, payload, None, _noop)

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpForwarder:
    """A bare aiohttp ClientSession."""

    def __init__(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=30.0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_S, sock_read=TIMEOUT_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

    async def forward(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamAnswer:
        response = await self._session.post(url, data=body, headers=headers)
        content_type = response.headers.get("content-type", "application/json")
        if content_type.startswith(EVENT_STREAM):

            async def release() -> None:
                response.release()

            return UpstreamAnswer(response.status, content_type, None, response.content.iter_any(), release)
        try:
            payload = await response.read()
        finally:
            response.release()
        return UpstreamAnswer(response.status, content_type, payload, None, _noop)

    async def aclose(self) -> None:
        await self._session.close()


async def _noop() -> None:
    return None


def make_forwarder(client: str) -> Forwarder:
    """Build the forwarder for a client stack name."""
    timeout = httpx.Timeout(TIMEOUT_S)
    if client == "httpcore":
        return HttpxForwarder(httpx.AsyncClient(limits=_limits(), timeout=timeout))
    if client == "httpx-aiohttp":
        transport = AiohttpTransport(limits=_limits())
        return HttpxForwarder(httpx.AsyncClient(transport=transport, limits=_limits(), timeout=timeout))
    if client == "aiohttp":
        return AiohttpForwarder()
    raise ValueError(f"unknown client {client!r}")


CLIENTS = ("httpcore", "httpx-aiohttp", "aiohttp")


async def relay(answer: UpstreamAnswer) -> AsyncIterator[bytes]:
    """Yield the upstream chunks as they come, releasing the upstream response at the end."""
    assert answer.chunks is not None
    try:
        async for chunk in answer.chunks:
            yield chunk
    finally:
        await answer.close()


def create_app(client: str, upstream_base: str, api_key: str) -> Starlette:
    """The passthrough app for one client stack, forwarding to ``upstream_base``."""
    url = upstream_base.rstrip("/") + "/chat/completions"
    upstream_headers = {"content-type": "application/json", "authorization": f"Bearer {api_key}"}
    state: dict[str, Forwarder] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["forwarder"] = make_forwarder(client)
        try:
            yield
        finally:
            await state["forwarder"].aclose()

    async def chat_completions(request: Request) -> Response:
        answer = await state["forwarder"].forward(url, await request.body(), upstream_headers)
        if answer.chunks is None:
            return Response(answer.body, status_code=answer.status, media_type=answer.content_type)
        return StreamingResponse(relay(answer), status_code=answer.status, media_type=answer.content_type)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--upstream", default="http://127.0.0.1:8900/v1", help="upstream base URL")
    parser.add_argument("--api-key", default="sk-upstream-bench", help="bearer sent upstream")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: serve one passthrough under uvicorn."""
    args = _parse_args(argv)
    app = create_app(args.client, args.upstream, args.api_key)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
