"""Hot reload of rules.yaml: the running ``Gateway`` swapped for one built from the new registry.

``Live`` holds the current gateway. ``reload`` parses and validates the file first: a bad file keeps the
running registry, logs one line naming the dotted path, and is reported by ``/readyz`` until a good one
loads. ``watch`` polls the file (its mtime, size and, when they change, its content hash) and reloads on
a change; the lifespan also reloads on ``SIGHUP``. ``CurrentGateway`` (middleware) hands each request the
gateway current when it arrived, so in-flight requests and streams finish on the registry they started
with. What outlives a reload is built once in the lifespan and passed to ``build``: the upstream pool,
the breakers (targets that still exist keep their state), the ledger, the cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy import rules
from proxy.errors import ConfigError
from proxy.gateway import Gateway
from proxy.registry import Registry

log = logging.getLogger("tiergate.reload")
LIVE_KEY = "live"


@dataclass(frozen=True)
class Loaded:
    """What ``/readyz`` says about the registry: the one serving, and the last reload's error."""

    hash: str
    loaded_at: float  # epoch seconds
    error: str | None = None


class Live:
    def __init__(self, gateway: Gateway, build: Callable[[Registry], Gateway], path: str | None) -> None:
        self.current = gateway
        self._build = build
        self._path = path  # None: the registry did not come from a file, nothing to reload
        self._stamp = _stamp(path)
        self.loaded = Loaded(gateway.registry.content_hash, time.time())
        self.reloads = 0

    def reload(self) -> bool:
        """Load the file again; True when a new registry now serves."""
        if self._path is None:
            return False
        self._stamp = _stamp(self._path)
        try:
            registry = rules.load(self._path)
        except (ConfigError, OSError, ValueError) as exc:
            # One line, the dotted path first (ConfigError's str), and the running registry stays.
            log.error("rules reload failed, keeping the running registry: %s", exc)
            self.loaded = Loaded(self.loaded.hash, self.loaded.loaded_at, str(exc))
            return False
        if registry.content_hash == self.current.registry.content_hash:
            self.loaded = Loaded(self.loaded.hash, self.loaded.loaded_at)
            return False
        self.current = self._build(registry)
        self.loaded = Loaded(registry.content_hash, time.time())
        self.reloads += 1
        log.info("rules reloaded from %s: %d tasks, %d tiers", self._path, len(registry.tasks), len(registry.tiers))
        return True

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the file changes (polled every ``interval_s``); runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if self._path is not None and _stamp(self._path) != self._stamp:
                self.reload()


def _stamp(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


class CurrentGateway:
    """ASGI middleware: each request's ``state.gateway`` is the gateway current when it arrived."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        if scope["type"] == "http" and state is not None and LIVE_KEY in state:
            state["gateway"] = state[LIVE_KEY].current
        await self.app(scope, receive, send)
