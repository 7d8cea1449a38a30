"""The ledger writer: a bounded queue drained in batches by one background task.

The request path only calls ``submit`` (a ``put_nowait``): it never waits on SQLite, pricing or token
counting. The drain task takes what is queued (up to 100 rows), settles and prices it (in a worker
thread when tokens must be estimated), and inserts it in one transaction on aiosqlite's thread. When SQLite fails (locked, disk full, read-only, file gone) the batch is kept and
retried with backoff, requests keep being served, and the failure is logged once per burst. When the
queue overflows, rows are dropped and counted: the count is on ``/readyz`` and in the log, never silent.
``close`` drains the queue on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

import aiosqlite

from proxy.ledger.records import ATTEMPT_COLUMNS, REQUEST_COLUMNS, RequestRecord, finalize
from proxy.ledger.schema import open_ledger
from proxy.pricing import Pricer

log = logging.getLogger("tiergate.ledger")

_INSERT_REQUEST = (
    f"INSERT OR IGNORE INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_INSERT_ATTEMPT = (
    f"INSERT OR IGNORE INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))})"
)
_MAX_BACKOFF = 2.0
_DROP_LOG_INTERVAL = 10.0

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


class LedgerWriter:
    def __init__(
        self, path: str, pricer: Pricer, *, max_queue: int = 10_000, batch_size: int = 200, linger: float = 0.05
    ) -> None:
        self.path = path
        self._pricer = pricer
        self._queue: asyncio.Queue[RequestRecord] = asyncio.Queue(max_queue)
        self._batch_size = batch_size
        self._linger = linger
        self._task: asyncio.Task[None] | None = None
        self._conn: aiosqlite.Connection | None = None
        self._pending: Rows | None = None  # a finalized batch waiting for SQLite
        self._taken = 0  # records taken off the queue and not yet written (being settled or retried)
        self.written = 0
        self.dropped = 0
        self.failing: str | None = None  # the current SQLite error, while a burst lasts
        self._last_drop_log = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tiergate-ledger")

    def submit(self, record: RequestRecord) -> None:
        """Queue a finished request; never blocks, never raises."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= _DROP_LOG_INTERVAL:
                self._last_drop_log = now
                log.error("ledger queue full: rows are being dropped (%d dropped so far)", self.dropped)

    def health(self) -> dict[str, Any]:
        return {
            "queued": self._queue.qsize() + self._taken,
            "written": self.written,
            "dropped": self.dropped,
            "error": self.failing,
        }

    async def close(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until everything queued is written, then stop and close the file."""
        deadline = time.monotonic() + timeout
        while (self._queue.qsize() or self._taken) and time.monotonic() < deadline:
            if self._task is None or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        unwritten = self._queue.qsize() + self._taken
        if unwritten:
            log.error("ledger closed with %d rows unwritten (%s)", unwritten, self.failing or "shutdown timeout")
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if self._pending is None:
                batch = [await self._queue.get()]
                if self._linger and self._queue.qsize() < self._batch_size:
                    # Under load, wait a moment for more rows: one transaction per ~50 ms instead of
                    # one per handful of rows, so fewer thread handoffs to SQLite and GIL switches.
                    await asyncio.sleep(self._linger)
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._taken = len(batch)
                if any(r.usage is None and r.target is not None for r in batch):
                    # Estimating tokens can be heavy (a BPE table to load, long texts): off the loop.
                    self._pending = await asyncio.to_thread(self._finalize, batch)
                else:
                    # Settling rows with usage is arithmetic (~15 us a row): cheaper here than a thread
                    # handoff, and a batch is small enough not to hold the loop for long.
                    self._pending = self._finalize(batch)
            try:
                await self._write(self._pending)
            except (sqlite3.Error, OSError) as exc:
                if self.failing is None:
                    log.error("ledger write failed, rows are kept and retried: %s", exc)
                self.failing = str(exc)
                await self._reset_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.written += len(self._pending[0])
            self._pending = None
            self._taken = 0
            backoff = 0.05
            if self.failing is not None:
                log.warning("ledger writes recovered (%d rows written so far)", self.written)
                self.failing = None

    def _finalize(self, batch: list[RequestRecord]) -> Rows:
        requests: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        for record in batch:
            try:
                row, tries = finalize(record, self._pricer)
            except Exception:  # noqa: BLE001 - one bad record must not lose the batch
                log.exception("could not settle ledger row for request %s; writing it without usage", record.id)
                record.usage, record.target, record.attempts = None, None, []
                row, tries = finalize(record, self._pricer)
            requests.append(row)
            attempts.extend(tries)
        return requests, attempts

    async def _write(self, rows: Rows) -> None:
        if self._conn is None:
            self._conn = await open_ledger(self.path)
        conn = self._conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.executemany(_INSERT_REQUEST, rows[0])
            if rows[1]:
                await conn.executemany(_INSERT_ATTEMPT, rows[1])
            await conn.execute("COMMIT")
        except BaseException:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    async def _reset_connection(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except (sqlite3.Error, OSError):
                pass
            self._conn = None
