"""Runs: the ledger's request rows summed in SQL by everything the audit counts by.

A *run* is the rows of one UTC day, one eval run (or production) and one ``ledger_kinds`` row: a kind
is a distinct combination of the values many rows repeat (task, tier, provider, model, usage source,
cache state, status, fallback, error type, registry, ...), so every fact an audit line counts (an
error, a disconnect, an unpriced call...) is the same for every row of a run, and every audit line (by
task, tier, model, provider, day or registry) is a sum of whole runs.

The scan reads ``ledger_requests`` in stretches of about ``CHUNK`` rows, each a range of rids or of the ts
index (``ledger_requests_ts``, on ``ts`` in epoch ms: bounds are ms too, never the ISO text the views show),
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

from proxy.ledger import materialize
from proxy.ledger.records import SERVED_FROM_STORE
from proxy.ledger.snapshot import Snapshot
from proxy.ledger.sums import (
    CONFIDENCE_SUMS,
    DAY_MS,
    ISO_TS,
    LATENCY,
    ODD,
    SAMPLE,
    SUMMED,
    SUMS,
    TOKEN_SUMS,
)

CHUNK = 250_000  # rows a stretch of a pass holds, about
_KEY = ("kind", f"ts / {DAY_MS}", "eval_run")
# What a run takes from its kind, in ``Run``'s order.
_KIND_COLUMNS = ("task", "tier", "provider", "model", "usage_source", "cache", "status", "fallback", "error_type")
_KIND_EXTRA = ("task_source", "task_predicted", "registry", "client")


@dataclass(frozen=True)
class Scope:
    """Which rows: at or after ``since`` and before ``until`` (ledger ts, epoch ms: ``audit.parse_since``),
    eval traffic included or not."""

    since: int | None = None
    include_eval: bool = False
    until: int | None = None  # exclusive

    def terms(self) -> tuple[list[str], list[int]]:
        """The ts bounds as SQL terms on ``ledger_requests`` (ranges of the ts index) and their parameters."""
        terms, params = [], []
        if self.since is not None:
            terms.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            terms.append("ts < ?")
            params.append(self.until)
        return terms, params


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
    cached_tokens: int = 0  # the what-if's sums (``scan(..., tokens=True)``)
    cache_write_tokens: int = 0
    largest_prompt: int = 0
    odd: int = 0  # rows whose token parts break Usage's rule
    sample: str | None = None  # some of its latencies in µs, comma-separated (``scan(..., sample=True)``)
    task_source: str = "header"
    task_predicted: str | None = None
    registry: str | None = None  # the content hash of the registry its rows were routed on
    client: str | None = None  # the caller's ``client`` (its API key's name or header), when it said
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


Stretch = tuple[int | None, int | None]  # ts (ms) from (None: the first), up to and without (None: on)


def scan(
    snap: Snapshot, scope: Scope, *, tokens: bool = False, sample: bool = False, confidence: bool = False
) -> list[Run]:
    """Every run in ``scope`` (eval runs included: callers count what they leave out), oldest day first;
    with the token parts the what-if prices (``tokens``), a sample of its latencies (``sample``), the
    classifier's confidence (``confidence``).

    The runs summed already (``ledger_runs``, whole days after the scope's first) are read as they are;
    the rows past ``runs_through``, and those of the scope's first day when ``since`` cuts it, are summed
    here, in stretches on every connection of the snapshot, and added to them.
    """
    conn = snap.conn
    done = materialize.through(conn)
    aggregates = [*SUMS, *(CONFIDENCE_SUMS if confidence else ["0"] * 2),
                  *(TOKEN_SUMS if tokens else ["0"] * len(TOKEN_SUMS)), SAMPLE if sample else "NULL"]  # fmt: skip
    select = f"SELECT {', '.join(_KEY)}, {', '.join(aggregates)} FROM ledger_requests WHERE {{where}} GROUP BY 1, 2, 3"
    first_day = None if scope.since is None else scope.since // DAY_MS
    cut = scope.since is not None and scope.since % DAY_MS != 0
    last_day = None if scope.until is None else scope.until // DAY_MS  # ledger_runs: days before it
    cut_until = scope.until is not None and scope.until % DAY_MS != 0
    # The raw parts: (condition, parameters) each.
    parts: list[tuple[str, list[Any]]] = []
    (last,) = conn.execute("SELECT max(rid) FROM ledger_requests").fetchone()
    terms, params = scope.terms()
    after = "".join(f" AND {t}" for t in terms)
    for lo in range(done, int(last or 0), CHUNK):
        parts.append((f"rid > ? AND rid <= ?{after}", [lo, lo + CHUNK, *params]))
    # The days a bound cuts: their summed runs count rows outside the scope too, so they are read as rows.
    partial = {d for d, c in ((first_day, cut), (last_day, cut_until)) if c and d is not None}
    for day in sorted(partial) if done else ():
        low_ts = day * DAY_MS if scope.since is None else max(day * DAY_MS, scope.since)
        high_ts = (day + 1) * DAY_MS if scope.until is None else min((day + 1) * DAY_MS, scope.until)
        if low_ts < high_ts:
            parts.append(("ts >= ? AND ts < ? AND rid <= ?", [low_ts, high_ts, done]))

    def stretch(conn: sqlite3.Connection, part: tuple[str, list[Any]]) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: thousands of partial runs, no need for names
        return list(cursor.execute(select.format(where=part[0]), part[1]))

    found = snap.map(stretch, parts)
    if done:
        low = None if first_day is None else first_day + (1 if cut else 0)
        columns = [c if c != "sample" or sample else "NULL" for c in SUMMED]
        if not confidence:
            columns = ["0" if c in ("confidence", "confident") else c for c in columns]
        bounds = ([] if low is None else [f"day >= {int(low)}"]) + ([] if last_day is None else [f"day < {last_day}"])
        where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
        cursor = conn.cursor()
        cursor.row_factory = None
        found.append(
            list(cursor.execute(f"SELECT kind, day, nullif(eval_run, 0), {', '.join(columns)} FROM ledger_runs{where}"))
        )
    summed: dict[tuple[Any, ...], list[Any]] = {}
    n = len(SUMS) + 2  # then cached, written, largest, odd, sample
    for part in found:
        for kind, day, eval_id, *sums in part:
            key = (day, eval_id, kind)
            have = summed.get(key)
            if have is None:
                summed[key] = sums
                continue
            for i in range(n + 2):
                have[i] += sums[i]
            have[n + 2] = max(have[n + 2], sums[n + 2])
            have[n + 3] += sums[n + 3]
            if sums[n + 4]:
                have[n + 4] = f"{have[n + 4]},{sums[n + 4]}" if have[n + 4] else sums[n + 4]
    kinds, names = _kinds(conn), _names(conn)
    found_runs = []
    for (day, eval_id, kind), values in summed.items():
        described, extra = kinds[kind]
        found_runs.append(
            Run(
                day=_day(day),
                eval_run=None if eval_id is None else names[eval_id],
                **dict(zip(_KIND_COLUMNS, described, strict=True)),
                **dict(zip(SUMMED, values, strict=True)),
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
    cuts: set[int] = set()
    for rid in range(first_rid + size, last_rid + 1, size):
        row = conn.execute("SELECT ts FROM ledger_requests WHERE rid >= ? ORDER BY rid LIMIT 1", (rid,)).fetchone()
        if row is not None:
            cuts.add(int(row[0]))
    ordered = sorted(
        c for c in cuts if (scope.since is None or c > scope.since) and (scope.until is None or c < scope.until)
    )
    return list(zip([None, *ordered], [*ordered, None], strict=True))


def in_stretch(bounds: Stretch, scope: Scope) -> tuple[str, list[Any]]:
    """The SQL condition (and parameters) on ``ledger_requests`` for the rows of ``scope`` in ``bounds``: a
    range of the ts index."""
    terms, params = ["1"], []
    low = _later(bounds[0], scope.since)
    if low is not None:
        terms.append("ts >= ?")
        params.append(low)
    high = _earlier(bounds[1], scope.until)
    if high is not None:
        terms.append("ts < ?")
        params.append(high)
    return " AND ".join(terms), params


def _later(a: int | None, b: int | None) -> int | None:
    """The later of two lower bounds, None being none (0 is 1970's first ms, a bound like any other)."""
    return b if a is None else a if b is None else max(a, b)


def _earlier(a: int | None, b: int | None) -> int | None:
    """The earlier of two upper bounds, None being none."""
    return b if a is None else a if b is None else min(a, b)


Key = tuple[str, "int | None", int]  # a run's: (day, eval run id, kind)


def latencies(snap: Snapshot, scope: Scope, wanted: set[Key] | None = None) -> dict[Key, list[int]]:
    """The latencies (µs) of the runs ``wanted`` (None: every run) in ``scope``, one pass over the stretches."""
    condition = f"{LATENCY} IS NOT NULL" + ("" if wanted is None else _only(wanted))
    found: dict[Key, list[int]] = {}
    days: dict[int, str] = {}
    for part in _rows(snap, scope, [LATENCY], condition):
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
    only = _only(wanted)
    tier = " + ".join(f"(coalesce(prompt_tokens, 0) > {int(start)})" for start in starts) or "0"
    sums = ("count(*)", "coalesce(sum(prompt_tokens), 0)", "coalesce(sum(completion_tokens), 0)",
            "coalesce(sum(cached_tokens), 0)", "coalesce(sum(cache_write_tokens), 0)", "total(cost_usd)",
            "coalesce(sum(reasoning_tokens), 0)", "max(cost_usd)")  # fmt: skip
    # One pass: a row that breaks the rule is a group of its own (its rid), the others are summed.
    columns = [tier, "cost_usd IS NULL", f"CASE WHEN {ODD} THEN rid END", *sums]
    blocks: dict[Key, list[tuple[Any, ...]]] = {}
    odd: dict[Key, list[tuple[Any, ...]]] = {}
    for part in _rows(snap, scope, columns, "1" + only, group=True, by=6):
        for kind, day, eval_id, bucket, no_cost, odd_rid, calls, prompt, completion, cached, written, logged, \
                reasoning, cost in part:  # fmt: skip
            key = (_day(day), eval_id, kind)
            if key not in wanted:
                continue
            if odd_rid is None:
                blocks.setdefault(key, []).append((bucket, no_cost, calls, prompt, completion, cached, written, logged))
            else:
                odd.setdefault(key, []).append((prompt, completion, cached, reasoning, written, cost))
    return blocks, odd


def pairs(snap: Snapshot, scope: Scope, wanted: set[Key]) -> dict[Key, tuple[int, float, float, int, float, float]]:
    """For the runs ``wanted``: how many rows have both a baseline cost and a cost, and the sums of each
    over them; then the same with the avoided cost. One pass; only for the rare runs that need it."""
    columns = [
        f"{agg} FILTER (WHERE baseline_cost_usd IS NOT NULL AND {made} IS NOT NULL)"
        for made in ("cost_usd", "cost_avoided_usd")
        for agg in ("count(*)", "total(baseline_cost_usd)", f"total({made})")
    ]
    found: dict[Key, list[Any]] = {}
    for part in _rows(snap, scope, columns, "1" + _only(wanted), group=True, by=3):
        for kind, day, eval_id, *values in part:
            key = (_day(day), eval_id, kind)
            if key in wanted:
                have = found.setdefault(key, [0, 0.0, 0.0, 0, 0.0, 0.0])
                for i, value in enumerate(values):
                    have[i] += value
    return {key: (int(v[0]), float(v[1]), float(v[2]), int(v[3]), float(v[4]), float(v[5])) for key, v in found.items()}


def _only(wanted: set[Key]) -> str:
    """The SQL condition (`` AND ...``) narrowing a pass to the kinds and days of the runs ``wanted`` (the
    caller keeps the exact runs)."""
    kinds = ", ".join(str(int(k)) for k in sorted({key[2] for key in wanted}))
    days = ", ".join(str(_day_number(day)) for day in sorted({key[0] for key in wanted}))
    return f" AND kind IN ({kinds}) AND ts / {DAY_MS} IN ({days})"


def _day_number(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) // 86_400


def _rows(
    snap: Snapshot,
    scope: Scope,
    columns: Sequence[str],
    condition: str,
    *,
    group: bool = False,
    by: int = 5,
) -> list[list[tuple[Any, ...]]]:
    """(kind, day, eval run, *columns) of the rows in ``scope`` meeting ``condition``, per stretch;
    grouped by the first ``by`` columns when ``group``."""
    head = ["kind", f"ts / {DAY_MS}", "eval_run", *columns]
    grouping = f" GROUP BY {', '.join(str(i) for i in range(1, by + 1))}" if group else ""

    def stretch(conn: sqlite3.Connection, bounds: Stretch) -> list[tuple[Any, ...]]:
        where, params = in_stretch(bounds, scope)
        cursor = conn.cursor()
        cursor.row_factory = None
        sql = f"SELECT {', '.join(head)} FROM ledger_requests WHERE {where} AND ({condition}){grouping}"
        return list(cursor.execute(sql, params))

    return snap.map(stretch, stretches(snap.conn, scope))


def bounds(conn: sqlite3.Connection, scope: Scope) -> tuple[str | None, str | None]:
    """The first and last ``ts`` in ``scope``, as the views show it (seeks on the ts index)."""
    terms, params = scope.terms()
    terms += [] if scope.include_eval else ["eval_run IS NULL"]
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    found = []
    for order in ("", " DESC"):
        sql = f"SELECT {ISO_TS} FROM ledger_requests{where} ORDER BY ts{order} LIMIT 1"
        row = conn.execute(sql, params).fetchone()
        found.append(None if row is None else str(row[0]))
    return found[0], found[1]
