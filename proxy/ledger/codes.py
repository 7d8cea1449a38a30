"""The ids of the ledger's dictionary rows, as the writer's thread knows them.

A stored request row holds numbers where its repeated values would be: the id of its ``ledger_kinds``
row (task, tier, model, status, ...), of its end user's and eval run's ``ledger_names`` rows, of its
call site's ``ledger_templates`` row; an attempt, of its ``ledger_hops`` row. ``Codes`` finds or adds
those rows inside the writer's transaction and remembers their ids, so a batch of known values costs a
dict lookup per value and no SQL.

What it remembers must match the file: an id learnt in a transaction that rolls back is forgotten
(``rollback``); a new connection (a new file) starts empty; and when pruning deletes dictionary rows no
row uses any more, it bumps ``ledger_meta``'s ``codes`` generation in the same transaction, so every
writer (every worker) forgets what it knew at its next transaction (``begin``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable
from typing import Any

from proxy.ledger.records import KIND_FIELDS

_NULLABLE_KIND = frozenset(KIND_FIELDS) - {"task", "task_source", "status", "stream", "usage_source", "fallback"}
# Nullable columns compare through ifnull(column, x''): NULL matches NULL (and never ''), as in the unique index.
_KIND_WHERE = " AND ".join(
    f"ifnull({column}, x'') = ifnull(?, x'')" if column in _NULLABLE_KIND else f"{column} = ?" for column in KIND_FIELDS
)
_FIND_KIND = f"SELECT id FROM ledger_kinds WHERE {_KIND_WHERE}"
_ADD_KIND = f"INSERT INTO ledger_kinds ({', '.join(KIND_FIELDS)}) VALUES ({', '.join('?' * len(KIND_FIELDS))})"
_FIND_HOP = (
    "SELECT id FROM ledger_hops WHERE ifnull(tier, x'') = ifnull(?, x'') AND provider = ? AND model = ?"
    " AND ifnull(status, x'') = ifnull(?, x'') AND ifnull(error_type, x'') = ifnull(?, x'')"
)
_ADD_HOP = "INSERT INTO ledger_hops (tier, provider, model, status, error_type) VALUES (?, ?, ?, ?, ?)"
GENERATION = "SELECT value FROM ledger_meta WHERE key = 'codes'"


class Codes:
    """Dictionary ids for one connection; every method runs inside that connection's write transaction."""

    def __init__(self) -> None:
        self._kinds: dict[Hashable, int] = {}
        self._hops: dict[Hashable, int] = {}
        self._names: dict[str, int] = {}
        self._templates: dict[bytes, int] = {}
        self._learnt: list[tuple[dict[Any, int], Any]] = []  # added in the open transaction
        self._generation: int | None = None
        self._conn: sqlite3.Connection | None = None

    def begin(self, conn: sqlite3.Connection) -> None:
        """Start a transaction's lookups; forget everything if pruning has deleted dictionary rows since."""
        row = conn.execute(GENERATION).fetchone()
        generation = int(row[0]) if row else 0
        if generation != self._generation:
            self.forget()
            self._generation = generation
        self._conn = conn
        self._learnt.clear()

    def commit(self) -> None:
        self._learnt.clear()

    def rollback(self) -> None:
        """The transaction did not commit: the rows it added are not in the file."""
        for cache, key in self._learnt:
            cache.pop(key, None)
        self._learnt.clear()

    def forget(self) -> None:
        for cache in (self._kinds, self._hops, self._names, self._templates):
            cache.clear()
        self._learnt.clear()
        self._generation = None

    def known(self) -> tuple[dict[Hashable, int], dict[str, int], dict[bytes, int]]:
        """The kinds', names' and templates' (by digest) ids learnt so far, to read a hit without a method
        call per value (the writer's batch loop: a few µs a row add up); a miss goes through ``kind``,
        ``name`` or ``template``."""
        return self._kinds, self._names, self._templates

    def kind(self, key: tuple[Any, ...]) -> int:
        found = self._kinds.get(key)
        return found if found is not None else self._find(self._kinds, key, _FIND_KIND, _ADD_KIND, key)

    def hop(self, key: tuple[Any, ...]) -> int:
        found = self._hops.get(key)
        return found if found is not None else self._find(self._hops, key, _FIND_HOP, _ADD_HOP, key)

    def name(self, name: str | None) -> int | None:
        if name is None:
            return None
        found = self._names.get(name)
        if found is not None:
            return found
        return self._find(
            self._names, name, "SELECT id FROM ledger_names WHERE name = ?", "INSERT INTO ledger_names (name) VALUES (?)",
            (name,),
        )  # fmt: skip

    def template(self, template: tuple[bytes, bytes] | None) -> int | None:
        if template is None:
            return None
        digest, blob = template
        found = self._templates.get(digest)
        if found is not None:
            return found
        conn = self._connection()
        row = conn.execute("SELECT id FROM ledger_templates WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            added = conn.execute("INSERT INTO ledger_templates (digest, features) VALUES (?, ?)", (digest, blob))
            row = (added.lastrowid,)
        return self._learn(self._templates, digest, int(row[0]))

    def _find(self, cache: dict[Any, int], key: Any, find: str, add: str, values: tuple[Any, ...]) -> int:
        conn = self._connection()
        row = conn.execute(find, values).fetchone()
        if row is None:
            row = (conn.execute(add, values).lastrowid,)
        return self._learn(cache, key, int(row[0]))

    def _learn(self, cache: dict[Any, int], key: Any, value: int) -> int:
        cache[key] = value
        self._learnt.append((cache, key))
        return value

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("Codes used outside a transaction (call begin first)")
        return self._conn
