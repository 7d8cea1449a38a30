"""The ``daily`` rollup: what the ledger keeps of the ``requests`` rows its retention has deleted.

One row per UTC day, task, tier, provider, model and eval (1 for ``tiergate eval``'s traffic), with the
counts and sums the audit's cost and traffic columns are made of; NULL text keys are stored as ''. The
table is created by the retention that fills it, so a ledger without it has nothing rolled up. What the
rollup cannot give: latencies (percentiles cover the rows still in ``requests``) and the token parts and
usage sources a what-if prices from.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from proxy.ledger.records import utc_day
from proxy.ledger.runs import Scope
from proxy.ledger.sums import DAY_MS

_COLUMNS = (
    "day", "task", "tier", "provider", "model", "eval", "calls", "errors", "disconnects", "fallbacks", "estimated",
    "unpriced", "cached", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd", "savings_usd",
    "cache_saved_usd",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Day:
    """One ``daily`` row (its '' keys read back as None)."""

    day: str
    task: str | None
    tier: str | None
    provider: str | None
    model: str | None
    eval: bool
    calls: int
    errors: int
    disconnects: int
    fallbacks: int
    estimated: int
    unpriced: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: none of its calls with tokens was priced
    baseline_cost_usd: float | None
    savings_usd: float | None
    cache_saved_usd: float | None


def exists(conn: sqlite3.Connection) -> bool:
    """Whether the ledger has a ``daily`` table (retention creates it)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'daily'").fetchone()
    return found is not None


def read(conn: sqlite3.Connection, scope: Scope) -> list[Day]:
    """The rolled-up days in ``scope``, eval rows included. A day counts whole, so with ``since`` only the
    days that start at or after it are in (the day ``since`` falls in, unless it falls at its midnight)."""
    if not exists(conn):
        return []
    sql = f"SELECT {', '.join(_COLUMNS)} FROM daily"
    params: list[str] = []
    terms = []
    if scope.since is not None:
        at_midnight = scope.since % DAY_MS == 0
        terms.append("day >= ?" if at_midnight else "day > ?")
        params.append(utc_day(scope.since))
    if scope.until is not None:  # the day ``until`` falls in is not whole before it
        terms.append("day < ?")
        params.append(utc_day(scope.until))
    if terms:
        sql += " WHERE " + " AND ".join(terms)
    cursor = conn.cursor()
    cursor.row_factory = None
    return [_day(row) for row in cursor.execute(sql, params)]


def _day(row: tuple[Any, ...]) -> Day:
    day, task, tier, provider, model, ev = row[:6]
    counts = (int(v or 0) for v in row[6:15])
    money = (None if v is None else float(v) for v in row[15:])
    return Day(str(day), task or None, tier or None, provider or None, model or None, bool(ev), *counts, *money)
