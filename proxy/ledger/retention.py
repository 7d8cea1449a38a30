"""The serving process's retention: rules.yaml's ``ledger: {retain_days: N}`` applied in the background.

A minute after start and then every hour, ``Retention`` prunes (``proxy.ledger.prune``) every whole day
older than ``retain_days``: steps of up to a thousand rows, each run on the ledger writer's own thread
between two of its batches (so a step never waits on the writer's lock nor the writer on a step's), with
a pause between steps so writes are never held up for long; then the dictionary rows nothing uses any
more are found by a scan on a connection of its own (it blocks nobody) and deleted; then the freed
pages are given back. A failure is logged and tried again at the next pass: serving never depends on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from proxy.ledger import prune
from proxy.ledger.schema import open_readonly
from proxy.ledger.writer import LedgerWriter

log = logging.getLogger("tiergate.ledger")

FIRST_PASS_S = 60.0
INTERVAL_S = 3600.0
PAUSE_S = 0.05  # between two steps: the writer gets its turns


@dataclass(frozen=True)
class Pass:
    """What one retention pass did."""

    requests: int
    attempts: int
    steps: int
    dictionary_rows: int
    free_pages: int  # still free when the pass ended (0 once everything went back)


class Retention:
    """Prunes ``writer``'s ledger to its last ``days`` whole days; ``start`` it after the writer, ``close`` it before."""

    def __init__(
        self,
        writer: LedgerWriter,
        days: int,
        *,
        first: float = FIRST_PASS_S,
        interval: float = INTERVAL_S,
        pause: float = PAUSE_S,
        batch: int = prune.BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self._days = days
        self._first = first
        self._interval = interval
        self._pause = pause
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tiergate-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        await asyncio.sleep(self._first)
        while True:
            try:
                done = await self.run_once()
                if done.requests:
                    log.info(
                        "retention: %d requests and %d attempts older than %d days rolled up into daily and "
                        "deleted (%d steps), %d unused dictionary rows dropped",
                        done.requests, done.attempts, self._days, done.steps, done.dictionary_rows,
                    )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retention must never stop the server; the next pass retries
                log.exception("ledger retention failed; it is tried again in %.0f s", self._interval)
            await asyncio.sleep(self._interval)

    async def run_once(self) -> Pass:
        """One pass: prune, drop unused dictionary rows, give the space back."""
        before = prune.cutoff(self._clock(), self._days)
        requests = attempts = steps = 0
        while True:
            done, gone = await self._writer.run(partial(prune.step, before_ms=before, limit=self._batch))
            if not done:
                break
            requests, attempts, steps = requests + done, attempts + gone, steps + 1
            await asyncio.sleep(self._pause)
        dropped = 0
        if requests:
            candidates = await asyncio.to_thread(self._unused)
            dropped = await self._writer.run(partial(prune.drop, candidates=candidates))
        free = await self._writer.run(prune.vacuum)
        while free:
            await asyncio.sleep(self._pause)
            before_free, free = free, await self._writer.run(prune.vacuum)
            if free >= before_free:
                break  # nothing more comes back (another connection holds the pages)
        return Pass(requests, attempts, steps, dropped, free)

    def _unused(self) -> prune.Unused:
        conn = open_readonly(self._writer.path)
        try:
            return prune.unused(conn)
        finally:
            conn.close()
