"""Retention: whole UTC days older than a cut-off are rolled up into ``daily`` and deleted, then the space
they took is given back to the file system.

Everything is done in small steps, each its own short transaction, so a server writing the same file
waits at most one step (``step``: up to ``BATCH`` rows rolled up and deleted, a few milliseconds). A
row is added to ``daily`` in the transaction that deletes it, so nothing is counted twice however often
pruning runs, is interrupted or races another worker's. Only whole days before the cut-off go: a day
is pruned once all of it is older than the retention.

Dictionary rows no remaining row uses (end users long gone, kinds of calls no longer made) are found by
a read-only scan (``unused``, which blocks nobody) and deleted in one short write (``drop``), which
also bumps the ``codes`` generation so every writer forgets the ids it remembered (``proxy.ledger.codes``).
Rows a writer added between the scan and the delete are checked in the delete's transaction: rids only
grow (AUTOINCREMENT), so they are the rows past the scan's last rid.

Freed pages go back with ``PRAGMA incremental_vacuum`` (``vacuum``), a few hundred at a time; a ledger
created before schema v7 had ``auto_vacuum`` turned on by its migration's one VACUUM.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxy.ledger import materialize
from proxy.ledger.daily import ROLL_UP
from proxy.ledger.records import iso, utc_day
from proxy.ledger.schema import open_ledger

DAY_MS = 86_400_000
BATCH = 1000  # rows per step: a few ms of write lock
VACUUM_PAGES = 256  # pages per incremental vacuum step (1 MiB at 4 KiB pages)


def cutoff(now: float, days: int) -> int:
    """The first epoch ms retention keeps: midnight UTC of the day ``days`` days before ``now``."""
    return (int(now * 1000) - days * DAY_MS) // DAY_MS * DAY_MS


def step(conn: sqlite3.Connection, before_ms: int, limit: int = BATCH) -> tuple[int, int]:
    """Roll up and delete up to ``limit`` of the oldest requests before ``before_ms``, their attempts with
    them, in one transaction; return (requests, attempts) deleted. (0, 0): nothing is left to prune."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_rids (rid INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp.prune_rids")
        sql = "INSERT INTO temp.prune_rids SELECT rid FROM ledger_requests WHERE ts < ? ORDER BY ts LIMIT ?"
        requests = conn.execute(sql, (before_ms, limit)).rowcount
        attempts = 0
        if requests:
            conn.execute(ROLL_UP)
            materialize.subtract(conn, "temp.prune_rids")
            gone = "IN (SELECT rid FROM temp.prune_rids)"
            attempts = conn.execute(f"DELETE FROM ledger_attempts WHERE request {gone}").rowcount
            conn.execute(f"DELETE FROM ledger_requests WHERE rid {gone}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return requests, attempts


@dataclass(frozen=True)
class Due:
    """What pruning before a cut-off would delete (``tiergate ledger prune --dry-run``)."""

    requests: int
    attempts: int
    first_day: str | None
    last_day: str | None


def due(conn: sqlite3.Connection, before_ms: int) -> Due:
    requests, first, last = conn.execute(
        "SELECT count(*), min(ts), max(ts) FROM ledger_requests WHERE ts < ?", (before_ms,)
    ).fetchone()
    # explicit attempt rows, plus the one kept in its request's row
    (attempts,) = conn.execute(
        "SELECT (SELECT count(*) FROM ledger_attempts WHERE request IN (SELECT rid FROM ledger_requests WHERE ts < ?))"
        " + (SELECT count(*) FROM ledger_requests WHERE ts < ? AND attempt_ended IS NOT NULL)",
        (before_ms, before_ms),
    ).fetchone()
    return Due(
        int(requests), int(attempts), None if first is None else utc_day(first), None if last is None else utc_day(last)
    )


# --- dictionary rows no row uses ------------------------------------------------------------------

_USES = {
    "ledger_kinds": ("SELECT kind FROM ledger_requests", "ledger_requests", "rid"),
    "ledger_names": (
        "SELECT end_user FROM ledger_requests UNION SELECT eval_run FROM ledger_requests",
        "ledger_requests",
        "rid",
    ),
    "ledger_templates": ("SELECT template FROM ledger_requests", "ledger_requests", "rid"),
    "ledger_hops": ("SELECT hop FROM ledger_attempts", "ledger_attempts", "request"),
}


@dataclass(frozen=True)
class Unused:
    """Dictionary ids no row used when ``unused`` scanned, up to rid ``through``."""

    through: int
    ids: dict[str, frozenset[int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.ids.values())


def unused(conn: sqlite3.Connection) -> Unused:
    """Scan the rows (a read transaction: writers go on) for dictionary ids nothing uses any more."""
    conn.execute("BEGIN")
    try:
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ledger_requests'").fetchone()
        ids = {}
        for table, (uses, _, _) in _USES.items():
            used = {row[0] for row in conn.execute(f"SELECT DISTINCT * FROM ({uses})")}
            every = {row[0] for row in conn.execute(f"SELECT id FROM {table}")}
            ids[table] = frozenset(every - used)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return Unused(int(found[0]) if found else 0, ids)


def drop(conn: sqlite3.Connection, candidates: Unused) -> int:
    """Delete ``candidates`` that rows written since the scan do not use; return how many went."""
    if not candidates.count:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        dropped = 0
        for table, ids in candidates.ids.items():
            uses, rows, key = _USES[table]
            since = uses.replace(f"FROM {rows}", f"FROM {rows} WHERE {key} > ?")
            fresh = {row[0] for row in conn.execute(since, (candidates.through,) * since.count("?"))}
            for chunk in _chunks(sorted(ids - fresh), 500):
                marks = ", ".join("?" * len(chunk))
                dropped += conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", chunk).rowcount
        if dropped:
            conn.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('codes', 1)"
                " ON CONFLICT (key) DO UPDATE SET value = value + 1"
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return dropped


def _chunks(values: list[int], size: int) -> list[list[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# --- giving the space back --------------------------------------------------------------------------


def vacuum(conn: sqlite3.Connection, pages: int = VACUUM_PAGES) -> int:
    """Give back up to ``pages`` free pages; return how many are still free (0: done, or auto_vacuum off)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
        return 0  # a file without auto_vacuum keeps its free pages for new rows (a VACUUM would shrink it)
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# --- tiergate ledger prune ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What ``prune`` did (or, dry, would do)."""

    before: str  # the cut-off, ISO: rows before it are (or would be) rolled up and deleted
    due: Due
    requests: int = 0
    attempts: int = 0
    steps: int = 0
    dictionary_rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    dry_run: bool = False


def prune(
    db: str,
    days: int,
    *,
    now: float | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """``tiergate ledger prune --older-than Nd``: every whole day older than ``days`` days rolled up and
    deleted, in steps of ``batch`` rows (safe while tiergate serves the same file), then the space given
    back. ``progress`` is told how many requests each step deleted."""
    before = cutoff(datetime.now(UTC).timestamp() if now is None else now, days)
    conn = open_ledger(db)
    try:
        found = due(conn, before)
        size = _size(conn)
        if dry_run:
            return Report(iso(before / 1000), found, bytes_before=size, bytes_after=size, dry_run=True)
        requests = attempts = steps = 0
        while True:
            done, gone = step(conn, before, batch)
            if not done:
                break
            requests, attempts, steps = requests + done, attempts + gone, steps + 1
            if progress is not None:
                progress(done)
        dictionary = drop(conn, unused(conn)) if requests else 0
        while vacuum(conn):
            pass
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return Report(iso(before / 1000), found, requests, attempts, steps, dictionary, size, _size(conn))
    finally:
        conn.close()


_AGE = re.compile(r"^(\d+)\s*([dw])$")


def parse_age(value: str) -> int:
    """``--older-than``: ``90d`` or ``12w`` -> whole days (at least one)."""
    found = _AGE.match(value.strip())
    days = int(found[1]) * (7 if found[2] == "w" else 1) if found else 0
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"--older-than: expected days (90d) or weeks (12w), at least 1d, got {value!r}")
    return days


MAX_DAYS = 36_500


def describe(report: Report) -> str:
    """``tiergate ledger prune``'s output."""
    due = report.due
    span = f" ({due.first_day} to {due.last_day})" if due.requests else ""
    if report.dry_run:
        if not due.requests:
            return f"Nothing to prune: no request before {report.before[:10]}.\n"
        return (
            f"Would roll up and delete {due.requests:,} requests{span} and {due.attempts:,} attempts: every "
            f"day before {report.before[:10]}. Nothing was changed (--dry-run).\n"
        )
    freed = report.bytes_before - report.bytes_after
    lines = [
        f"Rolled up {report.requests:,} requests{span} into daily and deleted them with their {report.attempts:,} "
        f"attempts, in {report.steps:,} batches: every day before {report.before[:10]}."
        if report.requests
        else f"Nothing to prune: no request before {report.before[:10]}.",
    ]
    if report.dictionary_rows:
        lines.append(f"Dropped {report.dictionary_rows:,} dictionary rows no remaining row uses.")
    lines.append(f"File: {_mb(report.bytes_before)} -> {_mb(report.bytes_after)} ({_mb(freed)} given back).")
    return "\n".join(lines) + "\n"


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _size(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])
