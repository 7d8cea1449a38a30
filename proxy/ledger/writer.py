"""The ledger writer: rows queued by the request path, written in batches by one background task.

The request path only calls ``submit`` (an append): it never waits on SQLite, pricing or token counting.
A row counts as unwritten (``queued`` on ``/readyz``) from ``submit`` until its transaction commits,
whatever the drain task is doing with it. The drain task takes what is waiting, settles and prices it
(on the loop: arithmetic) and inserts it in one transaction in one call on the writer's own thread
(one handoff per batch). Rows whose tokens must be counted are settled on a second thread, so a slow
estimate (the first one loads a ~75 MB tokenizer table, ~0.5 s) never holds up the rows behind it.

Durability: a batch goes to SQLite as soon as the previous one has committed or, when the writer is
idle, once its oldest row is ``linger`` old (20 ms by default), so a row commits within tens of ms of
its response at any load, and a committed row survives ``kill -9`` (WAL). When SQLite fails (locked,
disk full, read-only, folder gone) the batch is kept and retried with backoff, requests keep being
served, and the failure is logged once per burst. A deleted or replaced ledger file is noticed and
recreated (see ``store``). When ``max_queue`` rows are unwritten, new ones are dropped and counted:
the count is on ``/readyz`` and in the log, never silent. An unexpected error in the drain task is
logged with its traceback and the task carries on with the rows it held; ``health()["ok"]`` is false
only once it has stopped. ``close`` drains (bounded by its timeout) and logs what it could not write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.ledger.records import (
    KIND_FIELDS,
    ROW_FIELDS,
    RequestRecord,
    epoch_ms,
    finalize,
    needs_estimate,
    stored_request_id,
)
from proxy.ledger.store import Row, Settled, Store
from proxy.pricing import Pricer
from proxy.registry import Target

log = logging.getLogger("tiergate.ledger")
T = TypeVar("T")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
_DROP_LOG_INTERVAL = 10.0
_IDS_LOGGED = 50


@dataclass
class _Batch:
    """The settled rows of one transaction."""

    rows: list[Settled] = field(default_factory=list)
    committed: bool = False  # set on the writer's thread once its transaction is in
    refused: int = 0  # rows SQLite would not store (each logged): dropped


class LedgerWriter:
    """Writes ``RequestRecord``s to the ledger at ``path``; ``start`` it on the serving loop, ``close`` it last.

    ``linger``: how old the oldest waiting row may get while the writer waits for more before a
    transaction (fewer, larger transactions at moderate load); it bounds how long a row waits when
    the writer is idle. ``store`` is the file's side (a test can pass its own).
    """

    def __init__(
        self,
        path: str,
        pricer: Pricer,
        *,
        max_queue: int = 10_000,
        batch_size: int = 1000,
        linger: float = 0.02,
        store: Store | None = None,
    ) -> None:
        self.path = path
        self._pricer = pricer
        self._max_unwritten = max_queue
        self._batch_size = batch_size
        self._linger = linger
        self._store = store if store is not None else Store(path)
        # One thread owns the SQLite connection; estimates get their own so they never delay a commit.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="tiergate-ledger")
        self._estimate_thread = ThreadPoolExecutor(1, thread_name_prefix="tiergate-ledger-estimate")
        self._waiting: deque[RequestRecord] = deque()
        self._since = 0.0  # time.monotonic() when the oldest waiting record was submitted
        self._estimating: dict[asyncio.Future[list[Settled]], list[RequestRecord]] = {}  # on the estimate thread
        self._settled: list[Settled] = []  # estimated rows, back from their thread
        self._batch: _Batch | None = None  # the rows of the transaction being written (or retried)
        self._unwritten = 0  # submitted and not yet committed, wherever they are
        self._wake = asyncio.Event()  # rows are waiting, or the writer is closing
        self._idle = asyncio.Event()  # nothing is unwritten
        self._idle.set()
        self._closing = False
        self._lingering: asyncio.Future[None] | None = None  # resolved when the linger ends
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.failing: str | None = None  # the current error, while a burst lasts
        self._last_drop_log = -_DROP_LOG_INTERVAL

    async def start(self) -> None:
        """Open the file (creating or migrating it: a large ledger's migration takes a while, better before
        serving than while rows pile up), then start the drain task. A file that cannot be opened yet is
        retried by the drain, as any failure is."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._db_thread, self._store.open)
        except (sqlite3.Error, OSError) as exc:
            log.error("ledger %s cannot be opened yet, rows will be kept and retried: %s", self.path, exc)
            self.failing = str(exc)
        self._task = asyncio.create_task(self._run(), name="tiergate-ledger")
        self._task.add_done_callback(self._stopped)

    def submit(self, record: RequestRecord) -> None:
        """Queue a finished request; never blocks, never raises."""
        if self._unwritten >= self._max_unwritten:
            self._drop(1, "ledger queue full: rows are being dropped")
            return
        self._unwritten += 1
        self._idle.clear()
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(record)
        self._wake.set()
        if self._lingering is not None and len(self._waiting) >= self._batch_size:
            _resolve(self._lingering)  # a full batch is waiting: no reason to wait for more

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the ledger's connection, on the writer's thread between two batches (retention's
        steps: serialised with the writes, so neither waits on the other's lock)."""
        if self._closing:
            raise RuntimeError("the ledger writer is closing")
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, self._store.run, work)

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` shows: ``ok`` is false when the drain task is not running (rows are not being written)."""
        return {
            "ok": self._task is not None and not self._task.done(),
            "queued": self._unwritten,
            "written": self.written,
            "dropped": self.dropped,
            "error": self.failing,
        }

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is unwritten (waiting at most ``timeout`` seconds), then stop and close the file."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._lingering is not None:
            _resolve(self._lingering)  # cut a linger short
        task = self._task
        if task is not None and not task.done() and self._unwritten:
            idle = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait({idle, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Queued after any write still running on the thread, so the file is closed after it.
        await asyncio.get_running_loop().run_in_executor(self._db_thread, self._store.close)
        self._db_thread.shutdown(wait=False)
        self._estimate_thread.shutdown(wait=False, cancel_futures=True)
        batch = self._batch
        if batch is not None and batch.committed:  # committed after the task was cancelled
            self._committed(batch)
        if self._unwritten:
            self._log_unwritten()

    # --- the drain task -------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the ledger: log it, carry on
                log.exception("ledger writer failed unexpectedly; restarting it, its rows are kept")
                self.failing = f"writer error: {exc!r}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = _FIRST_BACKOFF
        while True:
            if self._batch is None:
                await self._gather()
                self._batch = self._take()
                if self._batch is None:
                    continue  # everything taken went to be estimated
            batch = self._batch
            try:
                await loop.run_in_executor(self._db_thread, self._write, batch)
            except (sqlite3.Error, OSError) as exc:
                if self.failing is None:
                    log.error("ledger write failed, rows are kept and retried: %s", exc)
                self.failing = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self._committed(batch)
            backoff = _FIRST_BACKOFF
            if self.failing is not None:
                log.warning("ledger writes recovered (%d rows written so far)", self.written)
                self.failing = None

    async def _gather(self) -> None:
        """Wait until rows are waiting; then, unless there are plenty or the writer is closing, linger."""
        while not (self._waiting or self._settled):
            self._wake.clear()
            await self._wake.wait()
        # Wait for more rows until the oldest waiting one is ``linger`` old: at moderate load that is one
        # transaction per ``linger`` instead of one per row (each costs ~0.2 ms of CPU on top of its rows);
        # under load the rows have already waited that long (for the transaction before), so no wait.
        delay = self._since + self._linger - time.monotonic()
        if delay > 0 and self._waiting and not self._closing and len(self._waiting) < self._batch_size:
            # A timer, not a wait on ``_wake``: submits must not wake the task row by row.
            loop = asyncio.get_running_loop()
            self._lingering = loop.create_future()
            timer = loop.call_later(delay, _resolve, self._lingering)
            try:
                await self._lingering
            finally:
                timer.cancel()
                self._lingering = None

    def _take(self) -> _Batch | None:
        batch = _Batch(rows=self._settled[: self._batch_size])
        del self._settled[: self._batch_size]
        slow: list[RequestRecord] = []
        while self._waiting and len(batch.rows) < self._batch_size:
            record = self._waiting.popleft()
            if needs_estimate(record):
                slow.append(record)
            else:
                # Settling a row with usage is arithmetic (~10 us): here, on the loop, it costs less than
                # on the writer's thread, where each row would be a fight with the loop for the GIL.
                batch.rows.append(self._settle(record))
        if slow:
            # Counting their tokens can take a while: on the estimate thread, then back for a transaction.
            future = asyncio.get_running_loop().run_in_executor(self._estimate_thread, self._settle_all, slow)
            self._estimating[future] = slow
            future.add_done_callback(self._estimated)
        return batch if batch.rows else None

    def _estimated(self, future: asyncio.Future[list[Settled]]) -> None:
        del self._estimating[future]
        if future.cancelled():
            return  # closing: the rows are counted (and logged) as unwritten
        self._settled.extend(future.result())  # _settle never raises
        self._wake.set()

    def _committed(self, batch: _Batch) -> None:
        n = len(batch.rows)
        self._unwritten -= n
        self.written += n - batch.refused
        if batch.refused:
            self._drop(batch.refused, "ledger rows refused by SQLite were dropped")
        if self._batch is batch:
            self._batch = None
        if not self._unwritten:
            self._idle.set()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failing = f"writer stopped: {task.exception()!r}"
            log.error("ledger writer stopped: no more rows will be written", exc_info=task.exception())

    # --- on the writer's threads ------------------------------------------------------------------

    def _write(self, batch: _Batch) -> None:
        batch.refused = len(self._store.insert(batch.rows))
        batch.committed = True

    def _settle_all(self, records: list[RequestRecord]) -> list[Settled]:
        # The loop prices rows too: Pricer's caches only ever gain entries, so a race computes one twice.
        return [self._settle(record) for record in records]

    def _settle(self, record: RequestRecord) -> Settled:
        """The rows for ``record``; one that cannot be settled is written with what can be read of it."""
        try:
            return finalize(record, self._pricer)
        except Exception:  # noqa: BLE001 - one bad record must not lose the batch, nor its own row
            log.exception("could not settle ledger row %s; writing the fields that can be read", record.id)
            return _bare_row(record), []

    # --- reporting ------------------------------------------------------------------------------

    def _drop(self, n: int, what: str) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL:
            self._last_drop_log = now
            log.error("%s (%d dropped so far)", what, self.dropped)

    def _log_unwritten(self) -> None:
        held = [*(row[0] for row, _ in self._settled), *(r.id for r in self._waiting)]
        held += [r.id for records in self._estimating.values() for r in records]
        if self._batch is not None:
            held += [row[0] for row, _ in self._batch.rows]
        shown = ", ".join(held[:_IDS_LOGGED]) + (", ..." if len(held) > _IDS_LOGGED else "")
        log.error(
            "ledger closed with %d rows unwritten, lost (%s); row ids: %s",
            self._unwritten,
            self.failing or "shutdown timeout",
            shown or "-",
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# The fields a row that ``finalize`` could not settle still gets, each read on its own; a field that
# cannot be read is NULL, or the default below when the schema requires a value.
_BARE: dict[str, Callable[[RequestRecord], Any]] = {
    "id": lambda r: str(r.id),
    "ts": lambda r: epoch_ms(float(r.ts)),
    "request_id": lambda r: r.request_id if isinstance(r.request_id, str) else None,
    "task": lambda r: str(r.task),
    "task_source": lambda r: str(r.task_source),
    "tier": lambda r: r.tier if isinstance(r.tier, str) else None,
    "model": lambda r: r.target.model if isinstance(r.target, Target) else None,
    "provider": lambda r: r.target.provider if isinstance(r.target, Target) else None,
    "status": lambda r: int(r.status),
    "error_type": lambda r: r.error_type if isinstance(r.error_type, str) else None,
    "stream": lambda r: int(bool(r.stream)),
    "attempts": lambda r: len(r.attempts),
    "fallback": lambda r: int(bool(r.fallback)),
    "client": lambda r: r.client if isinstance(r.client, str) else None,
    "eval_run": lambda r: r.eval_run if isinstance(r.eval_run, str) else None,
}
_BARE_DEFAULTS: dict[str, Any] = {
    "ts": None,  # filled with the time of writing
    "task": "-",
    "task_source": "default",
    "status": 0,
    "stream": 0,
    "usage_source": "none",
    "attempts": 0,
    "fallback": 0,
}


def _bare_row(record: RequestRecord) -> Row:
    values = dict(_BARE_DEFAULTS, ts=epoch_ms(time.time()))
    for column, read in _BARE.items():
        try:
            values[column] = read(record)
        except Exception:  # noqa: BLE001 - unreadable: keep the default
            continue
    values["request_id"] = stored_request_id(values.get("request_id"), values["id"])
    values["kind"] = tuple(values.get(column) for column in KIND_FIELDS)
    return tuple(values.get(column) for column in ROW_FIELDS)
