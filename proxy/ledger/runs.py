"""Runs: the ``requests`` rows summed in SQL by everything the audit counts by, in one pass over one index.

A *run* is the rows of one UTC day that share eval run, task, tier, provider, model, usage source, cache
state, status, fallback and error type: the ``requests_audit`` index's key up to ``latency_ms`` (schema
v7). ``GROUP BY`` that key streams in index order with no sort, so summing a 10M-row ledger is one scan
of the index, never the table, and every audit line (by task, tier, model, provider or day) is a sum of
whole runs: every fact a line counts (an error, a disconnect, an unpriced call...) is the same for every
row of a run. Within a run the index holds the latencies sorted, which ``ranks`` reads for exact
percentiles, and a run's rows are one index range (``where``), which the what-if reads when a run needs a
closer look.

Only the ``requests`` relation and its documented columns are named here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from proxy.ledger.records import SERVED_FROM_STORE
from proxy.ledger.snapshot import Snapshot

DAY = "substr(ts, 1, 10)"  # the UTC day of a ledger ts; the index's first column is this very expression
KEY = (DAY, "eval_run", "task", "tier", "provider", "model", "usage_source", "cache", "status", "fallback",
       "error_type")  # fmt: skip
# (No min or max: on this index they cost as much as all the sums together. ``ranks`` seeks a run's
# fastest and slowest latency, the two ends of its range, when it needs them.)
_SUMS = (
    "count(*)", "count(latency_ms)", "coalesce(sum(prompt_tokens), 0)",
    "coalesce(sum(completion_tokens), 0)", "total(cost_usd)", "count(cost_usd)", "total(baseline_cost_usd)",
    "count(baseline_cost_usd)", "total(cost_avoided_usd)", "count(cost_avoided_usd)",
)  # fmt: skip
# What the what-if adds: the token parts it prices, the largest prompt (a price tier starts past some
# size), and how many rows break Usage's rule (cached + cache-written > prompt, or a negative count):
# those are priced one by one, as Usage would clamp them.
ODD = (
    "coalesce(cached_tokens, 0) + coalesce(cache_write_tokens, 0) > coalesce(prompt_tokens, 0) OR min("
    "coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), coalesce(cached_tokens, 0), "
    "coalesce(cache_write_tokens, 0)) < 0"
)
_TOKEN_SUMS = (
    "coalesce(sum(cached_tokens), 0)", "coalesce(sum(cache_write_tokens), 0)", "coalesce(max(prompt_tokens), 0)",
    f"count(*) FILTER (WHERE {ODD})",
)  # fmt: skip
# About 1 in 100 latencies, picked by the last two digits of the arrival's milliseconds (unrelated to how
# long the call took): the sample ``ranks`` places its windows with, read in the same pass. Text, 15
# significant digits: a sample only guides where to look, the values returned are read exactly.
_SAMPLE = "group_concat(latency_ms) FILTER (WHERE substr(ts, 22, 2) = '37' AND latency_ms IS NOT NULL)"


@dataclass(frozen=True)
class Scope:
    """Which rows: at or after ``since`` (a ledger ts), eval traffic included or not."""

    since: str | None = None
    include_eval: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """One run's key and sums (see the module docstring)."""

    day: str
    eval_run: str | None
    task: str
    tier: str | None
    provider: str | None
    model: str | None
    usage_source: str
    cache: str | None
    status: int
    fallback: int
    error_type: str | None
    calls: int
    latencies: int  # rows with a latency_ms
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # the sum of the non-NULL values; ``priced`` of the rows had one
    priced: int
    baseline_cost_usd: float
    baselined: int
    cost_avoided_usd: float
    avoided: int
    cached_tokens: int = 0  # the what-if's sums (``scan(..., tokens=True)``)
    cache_write_tokens: int = 0
    largest_prompt: int = 0
    odd: int = 0  # rows whose token parts break Usage's rule
    sample: str | None = None  # some of its latencies, comma-separated (``scan(..., sample=True)``)
    key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.day, self.eval_run, self.task, self.tier, self.provider, self.model, self.usage_source,
               self.cache, self.status, self.fallback, self.error_type)  # fmt: skip
        object.__setattr__(self, "key", key)

    @property
    def is_eval(self) -> bool:
        return self.eval_run is not None

    @property
    def from_store(self) -> bool:
        """Answered from a stored answer (hit, stale, coalesced): nobody was billed."""
        return self.cache in SERVED_FROM_STORE

    @property
    def has_usage(self) -> bool:
        return self.usage_source != "none"

    @property
    def is_error(self) -> bool:
        """Failed: status >= 400 other than 499 (a disconnect), or a 200 stream that broke (error_type set)."""
        return self.status != 499 and (self.status >= 400 or self.error_type is not None)


def scan(snap: Snapshot, scope: Scope, *, tokens: bool = False, sample: bool = False) -> list[Run]:
    """Every run in ``scope`` (eval runs included: callers count what they leave out), in index order;
    with the token parts the what-if prices (``tokens``), or a sample of its latencies (``sample``).

    The scope's days are cut into consecutive stretches scanned at once on the snapshot's connections:
    a run is one day's, so no run is split.
    """
    columns = [*KEY, *_SUMS, *(_TOKEN_SUMS if tokens else ["0"] * len(_TOKEN_SUMS)), _SAMPLE if sample else "NULL"]

    def stretch(conn: sqlite3.Connection, days: Days) -> list[Run]:
        where, params = in_days(days, scope)
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: thousands of runs, no need for names
        sql = f"SELECT {', '.join(columns)} FROM requests WHERE {where} GROUP BY {', '.join(KEY)}"
        return [Run(*row) for row in cursor.execute(sql, params)]

    return [run for found in snap.map(stretch, stretches(snap.conn, scope)) for run in found]


Days = tuple[str | None, str | None]  # from this day (None: the first), up to and without that one (None: on)


def stretches(conn: sqlite3.Connection, scope: Scope, most: int = 16) -> list[Days]:
    """The scope's days cut into up to ``most`` stretches of consecutive days, oldest first. Together
    they cover every row of the scope, whatever its ``ts`` says (the cuts are compared as text)."""
    first, last = bounds(conn, Scope(scope.since, include_eval=True))
    if first is None or last is None:
        return []
    try:
        start, end = date.fromisoformat(first[:10]), date.fromisoformat(last[:10])
    except ValueError:
        return [(None, None)]  # a ts that is no date: one stretch, no cut
    days = max((end - start).days + 1, 1)
    size = -(-days // min(most, days))
    cuts: list[str | None] = [(start + timedelta(days=i)).isoformat() for i in range(size, days, size)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def in_days(days: Days, scope: Scope) -> tuple[str, list[Any]]:
    """The SQL condition (and parameters) for the rows of ``scope`` in the stretch ``days``."""
    terms, params = ["1"], []
    if days[0] is not None:
        terms.append(f"{DAY} >= ?")
        params.append(days[0])
    if days[1] is not None:
        terms.append(f"{DAY} < ?")
        params.append(days[1])
    if scope.since is not None:
        # The day bound is implied by the ts bound; said too, it makes the scope a range of the index.
        terms += [f"{DAY} >= ?", "ts >= ?"]
        params += [scope.since[:10], scope.since]
    return " AND ".join(terms), params


def where(run: Run, scope: Scope) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) selecting exactly ``run``'s rows in ``scope``: one index range."""
    sql = " AND ".join(f"{column} IS ?" if column != DAY else f"{DAY} = ?" for column in KEY)
    params: list[Any] = list(run.key)
    if scope.since is not None and run.day == scope.since[:10]:
        sql += " AND ts >= ?"  # the first day of the scope is the only one it cuts
        params.append(scope.since)
    return sql, params


def rows(conn: sqlite3.Connection, run: Run, scope: Scope, columns: Sequence[str], extra: str = "") -> Iterator[Any]:
    """``columns`` of ``run``'s rows in ``scope`` (optionally narrowed by ``extra``, a condition), as tuples."""
    sql, params = where(run, scope)
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor.execute(f"SELECT {', '.join(columns)} FROM requests WHERE {sql}{extra}", params)


def bounds(conn: sqlite3.Connection, scope: Scope) -> tuple[str | None, str | None]:
    """The first and last ``ts`` in ``scope`` (two seeks on the ts index)."""
    terms = ([] if scope.since is None else ["ts >= ?"]) + ([] if scope.include_eval else ["eval_run IS NULL"])
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    params = [] if scope.since is None else [scope.since]
    found = []
    for order in ("", " DESC"):
        row = conn.execute(f"SELECT ts FROM requests{where} ORDER BY ts{order} LIMIT 1", params).fetchone()
        found.append(None if row is None else str(row[0]))
    return found[0], found[1]
