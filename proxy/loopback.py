"""Run an ASGI app on a real uvicorn server on loopback, inside the running event loop.

Used by `tiergate demo` (the fake upstreams next to the proxy), by `tiergate eval` (tiergate itself,
serving the registry under test, in-process) and by end-to-end tests:
a real socket exercises what in-process transports hide (chunk flushing, resets, disconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LifespanType

_START_TIMEOUT = 10.0  # seconds for the socket to be bound and the lifespan started
_GRACE = 1  # seconds uvicorn lets in-flight responses finish before cancelling them
_STOP_TIMEOUT = 5.0  # seconds before we give up on a graceful stop and force it


class ServerStartError(RuntimeError):
    """The loopback server exited or timed out before accepting connections."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The embedding program (pytest, the CLI) owns SIGINT/SIGTERM; uvicorn's own
        # handlers would swallow Ctrl-C until this server stopped, then re-raise it.
        yield


async def _run(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn reports a failed bind or lifespan startup with sys.exit(); from a task a
        # SystemExit would escape the event loop and end the whole program.
        raise ServerStartError("uvicorn failed to start (see the uvicorn.error log for why)") from exc


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT
    # uvicorn exposes no "started" event, only a flag, so poll it while watching the task.
    while not server.started:
        if task.done():
            task.result()
            raise ServerStartError("uvicorn exited before it started serving")
        if loop.time() > deadline:
            raise ServerStartError(f"uvicorn did not start within {_START_TIMEOUT:g} s")
        await asyncio.sleep(0.005)


async def _stop(server: uvicorn.Server, task: asyncio.Task[None]) -> BaseException | None:
    """Stop the server within bounded time; return what it failed with, if anything."""
    server.should_exit = True
    done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
    if not done:
        server.force_exit = True
        done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()
        await asyncio.wait({task})
    return None if task.cancelled() else task.exception()


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, lifespan: LifespanType = "auto"
) -> AsyncIterator[str]:
    """Yield the base URL ("http://127.0.0.1:PORT") once the server accepts connections.

    `port=0` lets the OS choose a free port. On exit the server stops gracefully: in-flight
    responses get a few seconds, then are cancelled, so exit time is bounded. Raises
    `ServerStartError` if the server cannot start (port taken, lifespan startup failed)
    instead of hanging; a server that crashed while in use re-raises its error on exit.
    """
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=_GRACE
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(_run(server), name=f"loopback-uvicorn-{host}:{port}")
    try:
        await _wait_started(server, task)
        bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    except BaseException:
        await _stop(server, task)
        raise
    failure = await _stop(server, task)
    if failure is not None:
        raise failure
