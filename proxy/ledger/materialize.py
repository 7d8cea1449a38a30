"""``ledger_runs``: the audit's runs summed as the rows arrive, so an audit reads sums, not rows.

A run is a kind's rows of one UTC day and eval run (``proxy.ledger.runs``). Summing ten million rows into
runs makes SQLite sort them (~0.9 s a million on this machine); keeping the sums as the ledger grows
costs a sort of each new stretch once. ``refresh`` adds the rows past ``ledger_meta.runs_through`` (a row
id: every row up to it is summed, once) in steps of ``STEP`` rows, each one short write transaction;
the serving process runs it every ``INTERVAL_S`` on the ledger writer's thread, between two batches
(``Materializer``), and ``tiergate audit`` adds what is left before it reads, when it can write the file.
An audit reads ``ledger_runs`` and only the rows past ``runs_through`` (``runs.scan``).

Why not sums kept by the writer itself, row by row: an upsert into a table keyed by kind puts each row's
update on a page of its own, and every such page is a page of WAL per batch (~10 µs a row, as much as
the rest of the row's insert): the cost the ledger's write path must not carry. A refresh of 45,000
rows (30 s at 1,500 requests/s) writes a few dozen pages once.

Retention subtracts the rows it deletes from their runs in the same transaction (``subtract``), so a
run never counts a row twice or one that is gone; a day's latency sample keeps the deleted rows' values
until its last row goes (it only places estimates, see ``proxy.ledger.ranks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import TYPE_CHECKING

from proxy.ledger import sums

if TYPE_CHECKING:
    from proxy.ledger.writer import LedgerWriter

log = logging.getLogger("tiergate.ledger")

THROUGH = "runs_through"
STEP = 100_000  # rows summed in one transaction (~0.1 s)
INTERVAL_S = 30.0
_AGGREGATES = (*sums.SUMS, *sums.CONFIDENCE_SUMS, *sums.TOKEN_SUMS, sums.SAMPLE)
_ADDED = ", ".join(
    f"{column} = max({column}, excluded.{column})" if column == "largest_prompt"
    else f"{column} = CASE WHEN {column} IS NULL THEN excluded.{column} WHEN excluded.{column} IS NULL THEN {column}"
    f" ELSE {column} || ',' || excluded.{column} END" if column == "sample"
    else f"{column} = {column} + excluded.{column}"
    for column in sums.SUMMED
)  # fmt: skip
_KEY = f"ts / {sums.DAY_MS}, kind, ifnull(eval_run, 0)"
_REFRESH = (
    f"INSERT INTO ledger_runs (day, kind, eval_run, {', '.join(sums.SUMMED)}) "
    f"SELECT {_KEY}, {', '.join(_AGGREGATES)} FROM ledger_requests WHERE rid > ? AND rid <= ? GROUP BY 1, 2, 3 "
    f"ON CONFLICT (day, kind, eval_run) DO UPDATE SET {_ADDED}"
)
_SUBTRACTED = ", ".join(
    f"{column} = ledger_runs.{column} - g.{column}"
    for column in sums.SUMMED
    if column not in ("largest_prompt", "sample")
)
_SUBTRACT = (
    f"UPDATE ledger_runs SET {_SUBTRACTED} FROM (SELECT ts / {sums.DAY_MS} AS day, kind, ifnull(eval_run, 0) AS eval_run, "
    + ", ".join(f"{agg} AS {column}" for agg, column in zip(_AGGREGATES, sums.SUMMED, strict=True))
    + " FROM ledger_requests WHERE rid IN (SELECT rid FROM {rids}) AND rid <= ? GROUP BY 1, 2, 3) AS g "
    "WHERE ledger_runs.day = g.day AND ledger_runs.kind = g.kind AND ledger_runs.eval_run = g.eval_run"
)


def through(conn: sqlite3.Connection) -> int:
    """The row id up to which every row is summed in ``ledger_runs`` (0: none)."""
    row = conn.execute("SELECT value FROM ledger_meta WHERE key = ?", (THROUGH,)).fetchone()
    return int(row[0]) if row else 0


def refresh(conn: sqlite3.Connection, limit: int = STEP) -> int:
    """Sum up to ``limit`` rows past ``runs_through`` into their runs, in one transaction; return how
    many row ids it covered (0: caught up)."""
    conn.execute("BEGIN IMMEDIATE")  # the write lock: every row id up to max(rid) is committed
    try:
        done = through(conn)
        (last,) = conn.execute("SELECT max(rid) FROM ledger_requests").fetchone()
        upto = min(int(last or 0), done + limit)
        if upto > done:
            conn.execute(_REFRESH, (done, upto))
            conn.execute(
                "INSERT INTO ledger_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (THROUGH, upto),
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return max(upto - done, 0)


def refresh_all(conn: sqlite3.Connection, limit: int = STEP) -> int:
    """``refresh`` until caught up; the row ids covered."""
    total = 0
    while covered := refresh(conn, limit):
        total += covered
    return total


def subtract(conn: sqlite3.Connection, rids: str) -> None:
    """Inside retention's transaction, before it deletes the rows whose ids are in the table ``rids``:
    take them out of their runs (those summed already), and drop the runs left empty."""
    conn.execute(_SUBTRACT.replace("{rids}", rids), (through(conn),))
    conn.execute("DELETE FROM ledger_runs WHERE calls <= 0")


class Materializer:
    """The serving process's refresh: every ``interval`` seconds, steps until caught up, each on the
    ledger writer's thread between two batches. A failure is logged and tried again next time."""

    def __init__(self, writer: LedgerWriter, interval: float = INTERVAL_S, pause: float = 0.05) -> None:
        self._writer, self._interval, self._pause = writer, interval, pause
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tiergate-ledger-runs")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                while await self._writer.run(refresh):
                    await asyncio.sleep(self._pause)  # the writer gets its turns
            except (sqlite3.Error, OSError) as exc:
                log.warning("could not sum the ledger's new rows into its runs (tried again later): %s", exc)
