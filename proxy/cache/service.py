"""``CacheService``: the per-process pieces of the cache together, built in the lifespan, closed last.

The store, the flights of identical misses, the background generator, and the writes that persist a new
answer after its response is on its way (kept in a set and awaited on shutdown, so none is lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.cache.flight import Flights
from proxy.cache.generator import Generator
from proxy.cache.store import CacheStore, Entry, Status

log = logging.getLogger("tiergate.cache")
# After a regeneration failed, readers of the stale answer do not start another for this long: a failing
# upstream is not hammered once per reader. An explicit POST /v1/precompute retries at once.
RETRY_FAILED_AFTER_S = 30.0
_FAILURES_KEPT = 10_000
_STATUSES_KEPT = 10_000


class CacheService:
    def __init__(
        self,
        store: CacheStore,
        *,
        concurrency: int = 4,
        max_queue: int = 1000,
        prune_every_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flights: Flights[Entry] = Flights()
        self.generator = Generator(concurrency=concurrency, max_queue=max_queue)
        self.clock = clock
        self._writes: set[asyncio.Task[None]] = set()
        self._failed: dict[tuple[str, str | None], float] = {}  # (key, version) -> when it last failed
        # The statuses this process set lately: read before the file, so a status is known the moment it
        # is set (its write to the file follows off the request path).
        self._statuses: dict[str, Status] = {}
        self._prune_every = prune_every_s
        self._pruner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.generator.start()
        self._pruner = asyncio.create_task(self._prune_now_and_then(), name="tiergate-cache-prune")

    def keep(self, key: str, entry: Entry) -> None:
        """Store ``entry``: readers in this process see it now (before the flight it ends lands, so no
        request falls between the two and generates it again), the file off the request path (the
        write is awaited on shutdown)."""
        self.store.remember(key, entry)
        self._track(self.store.put(key, entry), f"storing {key}")

    def note_status(self, status: Status) -> None:
        _bounded_put(self._statuses, status.key, status, _STATUSES_KEPT)
        self._track(self.store.set_status(status), f"the status of {status.key}")

    async def status(self, key: str) -> Status | None:
        """Where the keyed generation ``key`` stands (this process's latest word, else the file's)."""
        return self._statuses.get(key) or await self.store.status(key)

    def failed(self, key: str, version: str | None) -> None:
        _bounded_put(self._failed, (key, version), self.clock(), _FAILURES_KEPT)

    def succeeded(self, key: str, version: str | None) -> None:
        self._failed.pop((key, version), None)

    def retry_due(self, key: str, version: str | None) -> bool:
        """Whether a stale read may start a regeneration of ``key`` for ``version`` (not one that just failed)."""
        at = self._failed.get((key, version))
        return at is None or self.clock() - at >= RETRY_FAILED_AFTER_S

    async def aclose(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        await self.generator.aclose()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.store.aclose()

    def _track(self, write: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await write
            except Exception:  # noqa: BLE001 - a cache write that fails costs a future hit, never a request
                log.exception("cache: %s failed", what)

        task = asyncio.create_task(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _prune_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self._prune_every)
            try:
                dropped = await self.store.prune(self.clock())
            except Exception:  # noqa: BLE001 - pruning is housekeeping: log and try again later
                log.exception("cache: pruning failed")
                continue
            if dropped:
                log.info("cache: pruned %d entries", dropped)


K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(table: dict[K, V], key: K, value: V, bound: int) -> None:
    """``table[key] = value`` as its newest entry, dropping the oldest beyond ``bound``."""
    table.pop(key, None)
    table[key] = value
    while len(table) > bound:
        del table[next(iter(table))]
