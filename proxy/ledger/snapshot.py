"""The ledger as the audit reads it: read-only connections that all see one snapshot of the file.

The audit reads the ledger in several statements (a scan, then the index ranges percentiles and the
what-if need) while ``tiergate serve`` keeps writing. In WAL mode one read transaction sees one snapshot
of the file throughout, so those statements agree with each other: counts taken from the scan still
hold when the ranges are read.

The scan is CPU-bound in SQLite, and SQLite runs one statement on one core, so a ``Snapshot`` has a
connection per core (up to four) and ``map`` spreads independent reads (a day range each) over them in
threads: sqlite3 lets go of the GIL while SQLite works. The connections must see the same snapshot.
SQLite takes a connection's snapshot at its transaction's first read, and ``PRAGMA data_version`` (which
stays put inside a transaction) changes only when another connection has committed since that
connection last looked. So each helper reads it, then the main connection and the helpers take their
snapshots, then each helper reads it again: unchanged everywhere means nobody committed in between, and
all the snapshots are one. If somebody did, the helpers try again, and after a few tries the snapshot
makes do with the main connection alone.

A ledger an older tiergate wrote (a file nothing has migrated yet) is migrated first, as ``tiergate
serve`` would at start, and rows not yet summed into ``ledger_runs`` are summed
(``proxy.ledger.materialize``), when the file can be written: the audit then reads sums.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from proxy.ledger import materialize
from proxy.ledger.schema import VERSION, open_ledger, open_readonly

T = TypeVar("T")
R = TypeVar("R")
_MOST_CONNECTIONS = 4
_TRIES = 3


class AuditError(ValueError):
    """A user mistake or an unreadable ledger: one line for the CLI, exit code 2."""


class Snapshot:
    """``conn``: the connection to read with; ``map``: many reads at once, on one snapshot."""

    def __init__(self, conn: sqlite3.Connection, helpers: list[sqlite3.Connection]) -> None:
        self.conn = conn
        self._helpers = helpers

    def map(self, work: Callable[[sqlite3.Connection, T], R], items: Sequence[T]) -> list[R]:
        """``work(connection, item)`` for every item, on all the snapshot's connections at once; in order."""
        connections = [self.conn, *self._helpers][: max(1, len(items))]
        if len(connections) == 1:
            return [work(self.conn, item) for item in items]
        results: list[R | None] = [None] * len(items)
        failures: list[BaseException] = []
        pending = iter(range(len(items)))
        lock = threading.Lock()

        def drain(conn: sqlite3.Connection) -> None:
            while not failures:
                with lock:
                    i = next(pending, None)
                if i is None:
                    return
                try:
                    results[i] = work(conn, items[i])
                except BaseException as exc:  # noqa: BLE001 - raised again by the caller's thread
                    failures.append(exc)

        threads = [threading.Thread(target=drain, args=(conn,), name="tiergate-audit") for conn in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return results  # type: ignore[return-value]  # every slot was filled


@contextmanager
def snapshot(path: str, connections: int | None = None, *, refresh: bool = True) -> Iterator[Snapshot]:
    """The ledger at ``path``, read-only, on one snapshot, with ``connections`` connections (default: one
    per core, up to four). SQLite errors become ``AuditError`` (one line)."""
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    wanted = connections or min(len(os.sched_getaffinity(0)), _MOST_CONNECTIONS)
    opened: list[sqlite3.Connection] = []
    try:
        _migrated(path, refresh)
        conn = _open(path, opened)
        helpers = _on_one_snapshot(conn, [_open(path, opened) for _ in range(wanted - 1)])
        yield Snapshot(conn, helpers)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    finally:
        for each in opened:
            each.close()


def _migrated(path: str, refresh: bool) -> None:
    """Bring a ledger an older tiergate wrote to today's schema first (as ``tiergate serve`` would at
    start): the audit reads the compact tables, which only a migrated file has. A file that is no ledger
    is left alone (and said so by the first read)."""
    conn = open_readonly(path)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        has_requests = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'requests'").fetchone() is not None
        # Rows past ``runs_through`` wait to be summed into ``ledger_runs``: a serving tiergate sums them
        # every 30 s, so a few; a file nothing has served lately, maybe many.
        behind = has_requests and version >= VERSION and refresh and _behind(conn)
    finally:
        conn.close()
    if not has_requests:
        raise sqlite3.OperationalError("no such table: requests")
    if version < VERSION or behind:
        if not os.access(path, os.W_OK):
            return  # read as it is: migrated by whoever can write it (a file older than v8 will not read)
        conn = open_ledger(path)
        try:
            materialize.refresh_all(conn)
        finally:
            conn.close()


def _behind(conn: sqlite3.Connection) -> bool:
    (last,) = conn.execute("SELECT max(rid) FROM ledger_requests").fetchone()
    return int(last or 0) > materialize.through(conn)


def _open(path: str, opened: list[sqlite3.Connection]) -> sqlite3.Connection:
    conn = open_readonly(path, check_same_thread=False)  # each is used by one thread at a time
    opened.append(conn)
    return conn


def _on_one_snapshot(conn: sqlite3.Connection, helpers: list[sqlite3.Connection]) -> list[sqlite3.Connection]:
    """Start ``conn``'s read transaction, and the helpers' on the same snapshot (see the module docstring);
    the helpers that could join it: all of them, or none."""
    for _ in range(_TRIES if helpers else 1):
        before = [_data_version(h) for h in helpers]
        for each in (conn, *helpers):
            each.execute("BEGIN")  # deferred: the snapshot is taken by the first read
            _first_read(each)
        if all(_data_version(h) == v for h, v in zip(helpers, before, strict=True)):
            return helpers
        for each in (conn, *helpers):
            each.execute("ROLLBACK")  # somebody committed in between: all again
    conn.execute("BEGIN")
    _first_read(conn)
    return []


def _first_read(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
