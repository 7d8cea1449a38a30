"""Client connections within bounds: a request head must arrive in time, and only so many stay open.

uvicorn closes an idle keep-alive connection, but a connection that never sends a request, or trickles
its header one byte every few seconds (slowloris), stays open for ever; and it accepts connections
until the process runs out of file descriptors. ``GuardedHttpToolsProtocol`` is uvicorn's own
httptools protocol (``uvicorn.run(http=...)``) with both bounds added:

- ``head_timeout_s``: from the moment a connection opens, or a response on it ends, its next request
  head must be complete within this time, or the connection is closed;
- ``max_connections``: a connection beyond this many open ones is closed as soon as it is accepted.

The bounds come from the app's lifespan state (``ConnectionLimits`` under ``LIMITS_KEY``), so workers
started by import string need no module-level configuration; an app without them is not bounded.

Each client connection with a request in flight holds a second socket, to the upstream (HTTP/1.1: one
request per connection), so the default bound is half the descriptors the process may open, and the
upstream pool is sized to match (``upstream_connections``): a smaller pool would make the calls beyond
it wait, unseen, for a connection to free up.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LIMITS_KEY = "connection_limits"
PROTOCOL = "proxy.connections:GuardedHttpToolsProtocol"  # for uvicorn.run(http=...)
_FD_RESERVE = 256  # descriptors kept for upstream connections, the ledger, logs


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout_s: float
    max_connections: int


def default_max_connections(cap: int = 10_000) -> int:
    """``cap``, or fewer when the process may not open two descriptors per connection (minus a reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(min(cap, (soft - _FD_RESERVE) // 2), 16)


def upstream_connections(max_connections: int, background: int) -> int:
    """The upstream pool's size: one connection per client connection, plus the background generations'."""
    return max_connections + background


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as far as allowed; return ``(soft, hard)`` in force.

    The soft limit is often 1,024 while the hard one is far higher: a server holding thousands of
    connections should not need its operator to know that (Go's runtime does the same at start-up).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # not allowed here (e.g. an infinite hard limit the kernel caps): keep the soft one
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits: ConnectionLimits | None = self.app_state.get(LIMITS_KEY)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._limits is None:
            return
        if len(self.connections) > self._limits.max_connections:
            self.logger.warning("closing a connection: %d open (max_connections)", len(self.connections) - 1)
            transport.close()
            return
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head is due in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self._limits is not None:
            self._head_timer = self.loop.call_later(self._limits.head_timeout_s, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
