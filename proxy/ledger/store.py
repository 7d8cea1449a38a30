"""The ledger file as the writer's thread sees it: one plain ``sqlite3`` connection and one method per batch.

Everything here runs on the writer's own thread, so a batch costs one handoff from the event loop, not
one per statement. ``insert`` writes a batch in one transaction, its repeated values as the ids of their
dictionary rows (``codes``). It notices the file being deleted or
replaced under it (a rotation script, an ``rm``): the rows would go to an inode nobody can read, so it
reopens the path (creating and migrating a new file), says so in the log, and writes there; a batch
committed just as the file went is written again, to the new file. A row SQLite
refuses (a constraint, a value it cannot bind) is rejected alone instead of blocking the rows behind it.
Other failures (locked, disk full, read-only, folder gone) raise, and the writer keeps the batch and
retries.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, TypeVar

from proxy.ledger.codes import Codes
from proxy.ledger.schema import open_ledger

log = logging.getLogger("tiergate.ledger")

T = TypeVar("T")
Row = tuple[Any, ...]
# A settled request: its row and its attempts' rows, as ``records.finalize`` makes them (``ROW_FIELDS``).
Settled = tuple[Row, list[Row]]

_REQUEST_COLUMNS = (
    "rid", "id", "ts", "kind", "request_id", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_usd", "baseline_cost_usd", "latency_us", "ttft_us", "upstream_us",
    "attempts", "end_user", "eval_run", "task_confidence", "template", "features", "cost_avoided_usd", "prompt_text",
    "attempt_ended", "attempt_us",
)  # fmt: skip
_ATTEMPT_COLUMNS = ("request", "n", "ended", "hop", "latency_us")

_MOST_ROWS = 512  # rows per INSERT statement (and SQLite's limit on bound values allows)
# Errors that can be about a row rather than the file (a constraint; a value SQLite cannot bind: an
# unsupported type, an int over 64 bits, a string that is not valid UTF-8): retrying the batch would
# fail the same way forever.
_ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    ValueError,
    TypeError,
    OverflowError,
)


class Store:
    """The ledger at ``path``, opened (created and migrated if needed) on first use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection writes
        self._codes = Codes()  # dictionary ids of the file the connection writes

    def insert(self, batch: Sequence[Settled]) -> list[Settled]:
        """Write ``batch``; return the requests SQLite refused (each logged). Raises on file-level failures."""
        try:
            return self._insert_batch(batch)
        except BaseException:
            self.close()  # the next try opens the file afresh (it may be back, or be a new one)
            raise

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the store's connection (opened if need be), between batches: retention's steps."""
        try:
            return work(self._connection())
        except BaseException:
            self.close()
            raise

    def open(self) -> None:
        """Open (create, migrate) the file now rather than at the first batch; raises as ``insert`` would."""
        try:
            self._connection()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn, self._identity = self._conn, None, None
        self._codes.forget()
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _insert_batch(self, batch: Sequence[Settled]) -> list[Settled]:
        conn = self._connection()
        try:
            self._insert(conn, batch)
        except _ROW_ERRORS:
            # The same errors also mean a connection that cannot be used at all (closed, wrong thread):
            # then this raises, and the batch is kept and retried like after any failure.
            conn.execute("SELECT 1")
            return self._insert_each(batch)
        # Checked after the commit (one stat a batch): if the file went before or during it, these rows
        # went with it, so they are written again, to a new file.
        if self._moved():
            log.error(
                "ledger file %s was deleted or replaced while in use: creating a new ledger there "
                "(the rows in the old file went with it; new rows go to the new file)",
                self.path,
            )
            self._retire()
            self._insert(self._connection(), batch)
        return []

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = open_ledger(self.path)
            try:
                st = os.stat(self.path)
            except OSError:
                conn.close()
                raise
            self._conn, self._identity = conn, (st.st_dev, st.st_ino)
        return self._conn

    def _retire(self) -> None:
        """Close the connection to a file that is no longer at ``path``, leaving what is there now alone."""
        conn = self._conn
        # On close, the last connection to a WAL database checkpoints and deletes "<path>-wal" by name:
        # with several workers, that could be the new file's WAL. Python 3.12 can turn that off.
        setconfig = getattr(conn, "setconfig", None)
        no_checkpoint = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)
        if setconfig is not None and no_checkpoint is not None:
            setconfig(no_checkpoint, True)
        self.close()

    def _moved(self) -> bool:
        """Whether the path no longer names the file the connection has open."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell (a permission gone): the rows are committed, not written twice
        return (st.st_dev, st.st_ino) != self._identity

    def _insert(self, conn: sqlite3.Connection, batch: Sequence[Settled]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        codes = self._codes
        try:
            codes.begin(conn)
            requests, attempts = _stored(conn, codes, batch)
            _insert_rows(conn, "ledger_requests", _REQUEST_COLUMNS, requests)
            _insert_rows(conn, "ledger_attempts", _ATTEMPT_COLUMNS, attempts)
            conn.execute("COMMIT")
        except BaseException:
            codes.rollback()
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        codes.commit()

    def _insert_each(self, batch: Sequence[Settled]) -> list[Settled]:
        """One transaction per request, so one bad row costs itself only."""
        refused: list[Settled] = []
        for settled in batch:
            try:
                self._insert(self._connection(), [settled])
            except _ROW_ERRORS as exc:
                log.error("ledger row %s refused by SQLite, not written: %s (%r)", settled[0][0], exc, settled)
                refused.append(settled)
        return refused


def _stored(conn: sqlite3.Connection, codes: Codes, batch: Sequence[Settled]) -> tuple[list[Row], list[Row]]:
    """The batch's ``ledger_requests`` and ``ledger_attempts`` rows: dictionary values as ids, rids assigned."""
    # The transaction holds the write lock: no other writer adds rows before these are in. A rid is never
    # used twice (AUTOINCREMENT keeps the highest ever given), even after retention deleted the newest
    # rows: what retention's dictionary clean-up relies on (proxy.ledger.prune).
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ledger_requests'").fetchone()
    last = int(found[0]) if found else 0
    requests: list[Row] = []
    attempts: list[Row] = []
    kinds, names, templates = codes.known()  # ids are >= 1: a miss (None) falls through to the method
    kind, name, template, hop = codes.kind, codes.name, codes.template, codes.hop
    for rid, (row, tries) in enumerate(batch, last + 1):
        user, run, site = row[15], row[16], row[18]
        requests.append(
            (rid, row[0], row[1], kinds.get(row[2]) or kind(row[2]), *row[3:15],
             None if user is None else names.get(user) or name(user),
             None if run is None else names.get(run) or name(run), row[17],
             None if site is None else templates.get(site[0]) or template(site), *row[19:])
        )  # fmt: skip
        if tries:
            attempts += [(rid, n, ended, hop(target), latency) for n, ended, target, latency in tries]
    return requests, attempts


def _insert_rows(conn: sqlite3.Connection, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    """Insert ``rows``, many per statement.

    Not ``executemany``: it releases the GIL around every row's step, and while the event loop keeps
    the GIL busy each release can cost this thread up to a switch interval (5 ms) to get it back; a
    batch of 200 rows took ~9 ms (up to 70) instead of ~1 ms. Statements of 512, 256, ... rows (a
    handful of texts, each prepared once and cached) cost a few releases a batch, and ~20% less CPU.
    """
    most = min(_MOST_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns))
    size = 1 << (most.bit_length() - 1)  # the largest power of two within it
    one = "(" + ", ".join("?" * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    done = 0
    while done < len(rows):
        while size > len(rows) - done:
            size //= 2
        chunk = rows[done : done + size]
        conn.execute(head + ", ".join([one] * size), list(chain.from_iterable(chunk)))
        done += size
