"""Background generations: a bounded queue worked by a fixed number of tasks, one generation per key.

``submit`` never blocks the request path: a full queue is refused (the endpoint answers 429 with
``retry-after``), and a key already queued or running for the same version is not queued twice (a
thousand readers of a stale dashboard start one regeneration). A job is a coroutine function of the
caller's: it does the generation, stores the answer and keeps the key's status; a job that raises is
logged, never lost silently, and never stops a worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("tiergate.cache")

Job = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class _Work:
    key: str
    version: str | None
    job: Job


class Generator:
    def __init__(self, *, concurrency: int = 4, max_queue: int = 1000) -> None:
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(max_queue)
        self._concurrency = concurrency
        self._pending: set[tuple[str, str | None]] = set()  # queued or running
        self._workers: list[asyncio.Task[None]] = []
        self.done = 0
        self.failed = 0

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"tiergate-gen-{i}") for i in range(self._concurrency)]

    def submit(self, key: str, version: str | None, job: Job) -> bool:
        """Queue ``job`` for ``key``; True if queued or already pending for that version, False when full."""
        if (key, version) in self._pending:
            return True
        try:
            self._queue.put_nowait(_Work(key, version, job))
        except asyncio.QueueFull:
            return False
        self._pending.add((key, version))
        return True

    def pending(self, key: str, version: str | None) -> bool:
        return (key, version) in self._pending

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def drain(self) -> None:
        """Wait until every queued generation has run (tests, shutdown)."""
        await self._queue.join()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let queued generations finish (bounded by ``timeout``), then stop the workers."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.error("shutting down with %d background generations not run", self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            work = await self._queue.get()
            try:
                await work.job()
                self.done += 1
            except Exception:  # noqa: BLE001 - a job's failure is logged; the worker goes on
                self.failed += 1
                log.exception("background generation for %s failed", work.key)
            finally:
                self._pending.discard((work.key, work.version))
                self._queue.task_done()
