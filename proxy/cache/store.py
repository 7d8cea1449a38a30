"""Where answers are kept: a small interface, and its SQLite implementation with a memory front.

``CacheStore`` is all the rest of the cache needs (``get``, ``put``, ``status``/``set_status`` for keyed
generations, ``prune``), so a store shared by several replicas can replace the SQLite one later. The
SQLite store keeps entries in a table of its own in the ledger file (``cache``; ``generations`` for the
status of keyed generations), on a thread of its own so the event loop never waits on SQLite, behind an
LRU of recently used entries in memory: a hit on a hot entry costs a dict lookup. Entries expire
(``expires``), and the table is pruned by age and by a size bound, oldest first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from proxy.cache.answer import Answer
from proxy.ledger.schema import open_ledger

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    answer: Answer
    version: str | None = None  # the data version a keyed generation was made for
    expires: float | None = None  # epoch seconds; None: never (keyed generations)

    def fresh(self, now: float, max_age: float | None = None) -> bool:
        if self.expires is not None and now >= self.expires:
            return False
        return max_age is None or now - self.answer.created <= max_age


@dataclass(frozen=True)
class Status:
    """Where a keyed generation stands (``GET /v1/precompute/{key}``)."""

    key: str
    version: str | None
    status: str  # queued | running | ready | failed
    updated_at: float
    error: str | None = None


class CacheStore(Protocol):
    async def get(self, key: str, *, shared: bool = False) -> Entry | None: ...
    def peek(self, key: str) -> Entry | None: ...  # what this process holds, without I/O
    def remember(self, key: str, entry: Entry) -> None: ...  # this process's readers see it at once
    async def put(self, key: str, entry: Entry) -> None: ...  # remember, and persist
    async def status(self, key: str) -> Status | None: ...
    async def set_status(self, status: Status) -> None: ...
    async def prune(self, now: float) -> int: ...
    async def aclose(self) -> None: ...


class SQLiteCacheStore:
    """``CacheStore`` in a SQLite file, with the ``memory`` most recently used entries held in memory."""

    def __init__(self, path: str, *, memory: int = 2048, max_bytes: int = 256 * 2**20) -> None:
        self._path = path
        self._hot: OrderedDict[str, Entry] = OrderedDict()
        self._memory = memory
        self._max_bytes = max_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tiergate-cache")
        self._conn: sqlite3.Connection | None = None

    async def get(self, key: str, *, shared: bool = False) -> Entry | None:
        """The entry for ``key``; ``shared``: as the file has it, past the memory front (another process
        sharing the file may have stored a newer one)."""
        entry = None if shared else self._hot.get(key)
        if entry is not None:
            self._hot.move_to_end(key)
            return entry
        entry = await self._call(self._read, key)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def peek(self, key: str) -> Entry | None:
        return self._hot.get(key)

    def remember(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)

    async def put(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)  # readers see it at once; the file follows
        await self._call(self._write, key, entry)

    async def status(self, key: str) -> Status | None:
        return await self._call(self._read_status, key)

    async def set_status(self, status: Status) -> None:
        await self._call(self._write_status, status)

    async def prune(self, now: float) -> int:
        """Drop entries expired by ``now``, then the oldest until the table is within ``max_bytes``; the
        count dropped."""
        for key in [k for k, e in self._hot.items() if e.expires is not None and e.expires <= now]:
            del self._hot[key]
        dropped, victims = await self._call(self._prune, now)
        for key in victims:
            self._hot.pop(key, None)
        return dropped

    async def aclose(self) -> None:
        await self._call(self._close)
        self._thread.shutdown(wait=True)

    # --- on the store's thread -------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_ledger(self._path, check_same_thread=False)
        return self._conn

    def _read(self, key: str) -> Entry | None:
        row = self._db().execute("SELECT version, expires, answer FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Entry(Answer.from_bytes(row[2]), version=row[0], expires=row[1])

    def _write(self, key: str, entry: Entry) -> None:
        data = entry.answer.to_bytes()
        self._db().execute(
            "INSERT INTO cache (key, version, created, expires, size, answer) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET version = excluded.version, created = excluded.created, "
            "expires = excluded.expires, size = excluded.size, answer = excluded.answer",
            (key, entry.version, entry.answer.created, entry.expires, len(data), data),
        )

    def _read_status(self, key: str) -> Status | None:
        row = (
            self._db()
            .execute("SELECT version, status, updated_at, error FROM generations WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else Status(key, row[0], row[1], row[2], row[3])

    def _write_status(self, status: Status) -> None:
        self._db().execute(
            "INSERT INTO generations (key, version, status, updated_at, error) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET version = excluded.version, status = excluded.status, "
            "updated_at = excluded.updated_at, error = excluded.error",
            (status.key, status.version, status.status, status.updated_at, status.error),
        )

    def _prune(self, now: float) -> tuple[int, list[str]]:
        db = self._db()
        dropped = db.execute("DELETE FROM cache WHERE expires IS NOT NULL AND expires <= ?", (now,)).rowcount
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM cache").fetchone()[0]
        if total > self._max_bytes:
            # oldest first, until the table fits again (keyed generations count like any entry)
            excess, victims = total - self._max_bytes, []
            for key, size in db.execute("SELECT key, size FROM cache ORDER BY created"):
                victims.append(key)
                excess -= size
                if excess <= 0:
                    break
            db.executemany("DELETE FROM cache WHERE key = ?", [(k,) for k in victims])
            dropped += len(victims)
            return int(dropped), victims
        return int(dropped), []

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _remember(self, key: str, entry: Entry) -> None:
        self._hot[key] = entry
        self._hot.move_to_end(key)
        while len(self._hot) > self._memory:
            self._hot.popitem(last=False)
