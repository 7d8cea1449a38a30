"""Runs: the ledger's request rows summed in SQL by everything the audit counts by.

A *run* is the rows of one UTC day, one eval run (or production) and one ``ledger_kinds`` row: a kind
is a distinct combination of the values many rows repeat (task, tier, provider, model, usage source,
cache state, status, fallback, error type, registry, ...), so every fact an audit line counts (an
error, a disconnect, an unpriced call...) is the same for every row of a run, and every audit line (by
task, tier, model, provider, day or registry) is a sum of whole runs.

The scan reads ``ledger_requests`` in stretches of about ``CHUNK`` rows, each a range of the ts index,
grouped by (kind, day, eval run) and summed there; the stretches run on every connection of the snapshot
and their partial runs are added up here. One ``GROUP BY`` over ten million rows makes SQLite sort them
all (19 s on this machine, spilling to temporary files); thirty of a third of a million sort in memory
(~0.16 s each). The view ``requests`` is for people; the audit reads the tables it is made of.

No index but time's: an index led by anything else (kind, latency) puts each new row at a random
place in it, and every such row then costs a page written to the WAL (~10 µs a row, as much as all the
rest of its insert; ``bench/ledger_cost.py``). What needs a run's own rows (the latencies percentiles
are read from, the what-if's closer looks) is read for many runs at once in one more pass over the
stretches (``latencies``, ``closer``), never run by run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proxy.ledger.records import SERVED_FROM_STORE, iso
from proxy.ledger.snapshot import Snapshot

CHUNK = 250_000  # rows a stretch of the scan holds, about: what SQLite sorts in memory in a blink
DAY_MS = 86_400_000
TS = "strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch')"  # ledger_requests_ts's expression: its index
LATENCY = "latency_us"  # a run's latencies in whole µs; the view's latency_ms is this / 1000.0
_KEY = ("kind", f"ts / {DAY_MS}", "eval_run")
_SUMS = (
    "count(*)", f"count({LATENCY})", "coalesce(sum(prompt_tokens), 0)",
    "coalesce(sum(completion_tokens), 0)", "total(cost_usd)", "count(cost_usd)", "total(baseline_cost_usd)",
    "count(baseline_cost_usd)", "total(cost_avoided_usd)", "count(cost_avoided_usd)", "total(task_confidence)",
    "count(task_confidence)", *(
        f"{agg} FILTER (WHERE baseline_cost_usd IS NOT NULL AND {made} IS NOT NULL)"
        for made in ("cost_usd", "cost_avoided_usd")
        for agg in ("count(*)", "total(baseline_cost_usd)", f"total({made})")
    ),
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
# About 1 in 16 latencies, picked by the arrival's millisecond (unrelated to how long the call took),
# read in the same pass: what ``ranks`` estimates a large group's percentiles from.
SAMPLE_EVERY = 16
_SAMPLE = f"group_concat({LATENCY}) FILTER (WHERE ts % {SAMPLE_EVERY} = 5 AND {LATENCY} IS NOT NULL)"
# What a run takes from its kind, in ``Run``'s order.
_KIND_COLUMNS = ("task", "tier", "provider", "model", "usage_source", "cache", "status", "fallback", "error_type")
_KIND_EXTRA = ("task_source", "task_predicted", "registry")


@dataclass(frozen=True)
class Scope:
    """Which rows: at or after ``since`` (a ledger ts), eval traffic included or not."""

    since: str | None = None
    include_eval: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """One run's key, what its kind says, and its sums (see the module docstring)."""

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
    latencies: int  # rows with a latency
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # the sum of the non-NULL values; ``priced`` of the rows had one
    priced: int
    baseline_cost_usd: float
    baselined: int
    cost_avoided_usd: float
    avoided: int
    confidence: float = 0.0  # the sum of the non-NULL task_confidence ...
    confident: int = 0  # ... over this many rows
    # Rows with both a baseline cost and a cost (then an avoided cost), and the sums of each over them:
    both_cost: int = 0
    both_cost_baseline: float = 0.0
    both_cost_made: float = 0.0
    both_avoided: int = 0
    both_avoided_baseline: float = 0.0
    both_avoided_made: float = 0.0
    cached_tokens: int = 0  # the what-if's sums (``scan(..., tokens=True)``)
    cache_write_tokens: int = 0
    largest_prompt: int = 0
    odd: int = 0  # rows whose token parts break Usage's rule
    sample: str | None = None  # some of its latencies in µs, comma-separated (``scan(..., sample=True)``)
    task_source: str = "header"
    task_predicted: str | None = None
    registry: str | None = None  # the content hash of the registry its rows were routed on
    kind: int = 0  # its ledger_kinds row
    eval_id: int | None = None  # its eval run's ledger_names row
    key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.day, self.eval_id, self.kind))

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


# The scan's sums, in its SELECT's order after the key: ``Run``'s fields of those names.
_SUMMED = (
    "calls", "latencies", "prompt_tokens", "completion_tokens", "cost_usd", "priced", "baseline_cost_usd",
    "baselined", "cost_avoided_usd", "avoided", "confidence", "confident", "both_cost", "both_cost_baseline",
    "both_cost_made", "both_avoided", "both_avoided_baseline", "both_avoided_made", "cached_tokens",
    "cache_write_tokens", "largest_prompt", "odd", "sample",
)  # fmt: skip

Stretch = tuple[str | None, str | None]  # ts from (None: the first), up to and without (None: on)


def scan(snap: Snapshot, scope: Scope, *, tokens: bool = False, sample: bool = False) -> list[Run]:
    """Every run in ``scope`` (eval runs included: callers count what they leave out), oldest day first;
    with the token parts the what-if prices (``tokens``), or a sample of its latencies (``sample``)."""
    columns = [*_KEY, *_SUMS, *(_TOKEN_SUMS if tokens else ["0"] * len(_TOKEN_SUMS)), _SAMPLE if sample else "NULL"]
    sql = f"SELECT {', '.join(columns)} FROM ledger_requests WHERE {{where}} GROUP BY {', '.join(_KEY)}"

    def stretch(conn: sqlite3.Connection, bounds: Stretch) -> list[tuple[Any, ...]]:
        where, params = in_stretch(bounds, scope)
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: thousands of partial runs, no need for names
        return list(cursor.execute(sql.format(where=where), params))

    partial: dict[tuple[Any, ...], list[Any]] = {}
    for found in snap.map(stretch, stretches(snap.conn, scope)):
        for kind, day, eval_id, *sums, cached, written, largest, odd, sampled in found:
            key = (day, eval_id, kind)
            have = partial.get(key)
            if have is None:
                partial[key] = [*sums, cached, written, largest, odd, sampled]
                continue
            for i, value in enumerate(sums):
                have[i] += value
            n = len(sums)
            have[n] += cached
            have[n + 1] += written
            have[n + 2] = max(have[n + 2], largest)
            have[n + 3] += odd
            if sampled:
                have[n + 4] = f"{have[n + 4]},{sampled}" if have[n + 4] else sampled
    kinds, names = _kinds(snap.conn), _names(snap.conn)
    found_runs = []
    for (day, eval_id, kind), values in partial.items():
        described, extra = kinds[kind]
        found_runs.append(
            Run(
                day=_day(day),
                eval_run=None if eval_id is None else names[eval_id],
                **dict(zip(_KIND_COLUMNS, described, strict=True)),
                **dict(zip(_SUMMED, values, strict=True)),
                **dict(zip(_KIND_EXTRA, extra, strict=True)),
                kind=kind,
                eval_id=eval_id,
            )
        )
    found_runs.sort(key=lambda run: (run.day, run.kind, run.eval_id is not None, run.eval_id or 0))
    return found_runs


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()


def _kinds(conn: sqlite3.Connection) -> dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Each ``ledger_kinds`` row's values, as a run takes them: (``_KIND_COLUMNS``, ``_KIND_EXTRA``)."""
    n = len(_KIND_COLUMNS)
    cursor = conn.cursor()
    cursor.row_factory = None
    sql = f"SELECT id, {', '.join((*_KIND_COLUMNS, *_KIND_EXTRA))} FROM ledger_kinds"
    return {row[0]: (tuple(row[1 : n + 1]), tuple(row[n + 1 :])) for row in cursor.execute(sql)}


def _names(conn: sqlite3.Connection) -> dict[int, str]:
    cursor = conn.cursor()
    cursor.row_factory = None
    return {int(i): str(name) for i, name in cursor.execute("SELECT id, name FROM ledger_names")}


def stretches(conn: sqlite3.Connection, scope: Scope, size: int = CHUNK) -> list[Stretch]:
    """``scope``'s rows cut into consecutive ts ranges of about ``size`` rows each, oldest first; together
    they cover every row of the scope. The cuts are the ts of every ``size``-th row id (rows are written
    about in ts order, so the ranges are about even; their order does not matter for coverage)."""
    first_rid, last_rid = conn.execute("SELECT min(rid), max(rid) FROM ledger_requests").fetchone()
    if first_rid is None:
        return []
    cuts: set[str] = set()
    for rid in range(first_rid + size, last_rid + 1, size):
        row = conn.execute("SELECT ts FROM ledger_requests WHERE rid >= ? ORDER BY rid LIMIT 1", (rid,)).fetchone()
        if row is not None:
            cuts.add(iso(int(row[0]) / 1000.0))
    ordered = sorted(c for c in cuts if scope.since is None or c > scope.since)
    return list(zip([None, *ordered], [*ordered, None], strict=True))


def in_stretch(bounds: Stretch, scope: Scope) -> tuple[str, list[Any]]:
    """The SQL condition (and parameters) on ``ledger_requests`` for the rows of ``scope`` in ``bounds``: a
    range of the ts index."""
    terms, params = ["1"], []
    low = max(filter(None, (bounds[0], scope.since)), default=None)
    if low is not None:
        terms.append(f"{TS} >= ?")
        params.append(low)
    if bounds[1] is not None:
        terms.append(f"{TS} < ?")
        params.append(bounds[1])
    return " AND ".join(terms), params


Key = tuple[str, "int | None", int]  # a run's: (day, eval run id, kind)


def latencies(snap: Snapshot, scope: Scope, wanted: set[Key] | None = None) -> dict[Key, list[int]]:
    """The latencies (µs) of the runs ``wanted`` (None: every run) in ``scope``, one pass over the stretches."""
    kinds = None if wanted is None else sorted({key[2] for key in wanted})
    found: dict[Key, list[int]] = {}
    days: dict[int, str] = {}
    for part in _rows(snap, scope, [LATENCY], f"{LATENCY} IS NOT NULL", kinds):
        for kind, day, eval_id, value in part:
            key = (days.get(day) or days.setdefault(day, _day(day)), eval_id, kind)
            if wanted is None or key in wanted:
                found.setdefault(key, []).append(value)
    return found


def closer(
    snap: Snapshot, scope: Scope, wanted: set[Key], starts: Sequence[int]
) -> tuple[dict[Key, list[tuple[Any, ...]]], dict[Key, list[tuple[Any, ...]]]]:
    """What the what-if needs of the runs ``wanted`` that their sums cannot tell, in one pass: their
    rows that keep Usage's rule summed per price tier (how many of ``starts`` the prompt is past) and
    per logged cost or none: (tier, no cost, calls, prompt, completion, cached, written, logged); and
    the rows that break it, one by one: (prompt, completion, cached, reasoning, written, logged)."""
    kinds = sorted({key[2] for key in wanted})
    tier = " + ".join(f"(coalesce(prompt_tokens, 0) > {int(start)})" for start in starts) or "0"
    sums = ("count(*)", "coalesce(sum(prompt_tokens), 0)", "coalesce(sum(completion_tokens), 0)",
            "coalesce(sum(cached_tokens), 0)", "coalesce(sum(cache_write_tokens), 0)", "total(cost_usd)")  # fmt: skip
    blocks: dict[Key, list[tuple[Any, ...]]] = {}
    grouped = _rows(snap, scope, [tier, "cost_usd IS NULL", *sums], f"NOT ({ODD})", kinds, group=True)
    for part in grouped:
        for kind, day, eval_id, *values in part:
            key = (_day(day), eval_id, kind)
            if key in wanted:
                blocks.setdefault(key, []).append(tuple(values))
    columns = ["prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cache_write_tokens",
               "cost_usd"]  # fmt: skip
    odd: dict[Key, list[tuple[Any, ...]]] = {}
    for part in _rows(snap, scope, columns, ODD, kinds):
        for kind, day, eval_id, *values in part:
            key = (_day(day), eval_id, kind)
            if key in wanted:
                odd.setdefault(key, []).append(tuple(values))
    return blocks, odd


def _rows(
    snap: Snapshot,
    scope: Scope,
    columns: Sequence[str],
    condition: str,
    kinds: Sequence[int] | None,
    *,
    group: bool = False,
) -> list[list[tuple[Any, ...]]]:
    """(kind, day, eval run, *columns) of the rows in ``scope`` meeting ``condition`` (and of ``kinds``),
    per stretch; grouped by the key and the first two columns when ``group``."""
    head = ["kind", f"ts / {DAY_MS}", "eval_run", *columns]
    only = "" if kinds is None else f" AND kind IN ({', '.join(str(int(k)) for k in kinds)})"
    grouping = " GROUP BY 1, 2, 3, 4, 5" if group else ""

    def stretch(conn: sqlite3.Connection, bounds: Stretch) -> list[tuple[Any, ...]]:
        where, params = in_stretch(bounds, scope)
        cursor = conn.cursor()
        cursor.row_factory = None
        sql = f"SELECT {', '.join(head)} FROM ledger_requests WHERE {where} AND ({condition}){only}{grouping}"
        return list(cursor.execute(sql, params))

    return snap.map(stretch, stretches(snap.conn, scope))


def bounds(conn: sqlite3.Connection, scope: Scope) -> tuple[str | None, str | None]:
    """The first and last ``ts`` in ``scope`` (seeks on the ts index)."""
    terms = ([] if scope.since is None else [f"{TS} >= ?"]) + ([] if scope.include_eval else ["eval_run IS NULL"])
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    params = [] if scope.since is None else [scope.since]
    found = []
    for order in ("", " DESC"):
        sql = f"SELECT {TS} FROM ledger_requests{where} ORDER BY {TS}{order} LIMIT 1"
        row = conn.execute(sql, params).fetchone()
        found.append(None if row is None else str(row[0]))
    return found[0], found[1]
