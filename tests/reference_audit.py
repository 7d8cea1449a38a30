"""Today's audit as it was before it moved into SQL: every row loaded into Python and summed there.

Kept for the tests only, as the reference the SQL audit (``proxy.ledger.audit``, ``proxy.ledger.whatif``,
``proxy.classify.agreement``) must agree with on every ledger the tests make. It reads the same
``requests`` relation and returns the same dataclasses, so results compare field by field.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.classify.agreement import Agreement, Period, Source, TaskAgreement
from proxy.ledger.audit import GROUPINGS, AuditError, Summary
from proxy.ledger.records import SERVED_FROM_STORE
from proxy.ledger.schema import open_readonly
from proxy.ledger.tally import Group
from proxy.ledger.whatif import TaskChange, WhatIf
from proxy.pricing import Pricer
from proxy.registry import Registry, Target, Task
from proxy.usage import Usage

Row = Mapping[str, Any]


def load(
    path: str, since: str | None = None, *, include_eval: bool = False, until: str | None = None
) -> list[dict[str, Any]]:
    """The ``requests`` rows at or after ``since`` and before ``until`` (ledger ts), oldest first.

    Eval traffic (``tiergate eval``'s calls, ``eval_run`` set) is left out unless ``include_eval``: the
    audit is about production. (A ledger older than schema v4 has no eval traffic.)
    """
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    terms = (["ts >= ?"] if since else []) + (["ts < ?"] if until else [])
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    sql = "SELECT * FROM requests" + where + " ORDER BY ts"
    try:
        conn = open_readonly(path)
        try:
            rows = [dict(row) for row in conn.execute(sql, [b for b in (since, until) if b])]
            return rows if include_eval else [row for row in rows if not is_eval(row)]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None


def summarize(rows: Sequence[Row], by: str) -> Summary:
    """Group ``rows`` by ``by`` (one of ``GROUPINGS``) into audit lines plus a TOTAL line."""
    if by not in GROUPINGS:
        raise AuditError(f"--by: expected one of {', '.join(GROUPINGS)}, got {by!r}")
    buckets: dict[str, list[Row]] = {}
    for row in rows:
        buckets.setdefault(group_key(row, by), []).append(row)
    total = _group("TOTAL", rows, len(rows), None)
    groups = [_group(key, members, len(rows), total.cost_usd) for key, members in buckets.items()]
    groups.sort(key=lambda g: (g.cost_usd is None, -(g.cost_usd or 0.0), -g.calls, g.key))
    stamps = [str(row["ts"]) for row in rows]
    return Summary(by, tuple(groups), total, min(stamps, default=None), max(stamps, default=None))


def group_key(row: Row, by: str) -> str:
    """The value ``row`` is grouped under; ``-`` when it has none (a request that failed before routing)."""
    if by == "day":
        return str(row["ts"])[:10]  # ts is UTC, so this is the UTC day
    if by == "model":
        return f"{row['provider']}::{row['model']}" if row["model"] else "-"
    return str(row[by] or "-")


def _group(key: str, rows: Sequence[Row], all_calls: int, all_cost: float | None) -> Group:
    n = len(rows)
    cost = _money([_cost(r, "cost_usd") for r in rows])
    pairs = [(_cost(r, "baseline_cost_usd"), _generation_cost(r)) for r in rows]
    baseline = _money([b for b, _ in pairs])
    savings = _money([None if b is None or c is None else b - c for b, c in pairs])
    stored = [r for r in rows if r.get("cache") in SERVED_FROM_STORE]
    latencies = [float(r["latency_ms"]) for r in rows if r["latency_ms"] is not None]
    return Group(
        key=key,
        calls=n,
        call_share=_ratio(n, all_calls),
        input_tokens=sum(r["prompt_tokens"] or 0 for r in rows),
        output_tokens=sum(r["completion_tokens"] or 0 for r in rows),
        cost_usd=cost,
        unpriced=sum(1 for r in rows if _cost(r, "cost_usd") is None),
        cost_share=_ratio(cost, cost if all_cost is None else all_cost),
        baseline_cost_usd=baseline,
        savings_usd=savings,
        cached=len(stored),
        cache_saved_usd=_money([r.get("cost_avoided_usd") for r in stored]) if stored else 0.0,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        error_rate=_ratio(sum(1 for r in rows if is_error(r)), n),
        disconnect_rate=_ratio(sum(1 for r in rows if r["status"] == 499), n),
        fallback_rate=_ratio(sum(1 for r in rows if r["fallback"]), n),
        estimated_share=_ratio(sum(1 for r in rows if r["usage_source"] == "estimated"), n),
        cached_tokens=sum(r["cached_tokens"] or 0 for r in rows),
        savings_share=_ratio(savings, baseline),
    )


def is_eval(row: Row) -> bool:
    """A call ``tiergate eval`` made (marked with its run id), not production traffic."""
    return row.get("eval_run") is not None


def is_error(row: Row) -> bool:
    """A failed call: status >= 400 other than 499 (a disconnect), or a 200 stream that broke (error_type set)."""
    status = int(row["status"])
    return status != 499 and (status >= 400 or row["error_type"] is not None)


def percentile(values: Sequence[float], p: int) -> float | None:
    """Nearest-rank percentile: the value at rank ceil(p/100 * n) of the sorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(-(-p * len(ordered) // 100), 1) - 1]


def _cost(row: Row, column: str) -> float | None:
    """A row's cost: $0 without usage (nothing to price), None when it had tokens but no known price."""
    if row["usage_source"] == "none":
        return 0.0
    value = row[column]
    return None if value is None else float(value)


def _generation_cost(row: Row) -> float | None:
    """What the call's answer cost to generate on its tier: its cost, or the cost a cached answer avoided."""
    if row.get("cache") in SERVED_FROM_STORE:
        avoided = row.get("cost_avoided_usd")
        return None if avoided is None else float(avoided)
    return _cost(row, "cost_usd")


def _money(values: Sequence[float | None]) -> float | None:
    """The exact sum of the known values; None only when there were values and none is known."""
    known = [v for v in values if v is not None]
    return math.fsum(known) if known or not values else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


# --- what-if re-tiering -------------------------------------------------------------------------


Priced = tuple[float | None, float | None, bool]  # current cost, candidate cost, approximate tokens


def what_if(rows: Sequence[Row], candidate: Registry, pricer: Pricer) -> WhatIf:
    """Price each logged call as served and on its task's first target in ``candidate``, same tokens.

    Both sides use ``pricer`` (the candidate's ``prices:`` over genai-prices), so a price change since
    the call was logged does not pass for a re-tiering effect; the current side falls back to the
    logged ``cost_usd`` when ``pricer`` cannot price the served model. A task the candidate does not
    define is priced as served on both sides (``in_candidate`` false): the what-if answers "what would
    re-tiering cost", not "what if these calls went away". Tokens are approximate when the call was
    served by another provider type than the candidate's (another tokenizer), or were estimated.
    """
    by_task: dict[str, list[Row]] = {}
    for row in rows:
        by_task.setdefault(str(row["task"]), []).append(row)
    changes, all_priced = [], []
    for task, members in by_task.items():
        target = _candidate_target(candidate, task)
        priced = [_reprice(row, target, candidate, pricer) for row in members]
        all_priced += priced
        changes.append(_change(task, members, priced, candidate.tasks.get(task), target))
    changes.sort(key=lambda c: (c.current_cost_usd is None, -(c.current_cost_usd or 0.0), c.task))
    total = _change("TOTAL", rows, all_priced, None, None)
    total = replace(total, in_candidate=all(c.in_candidate for c in changes))
    return WhatIf(candidate.source, tuple(changes), total)


def _candidate_target(candidate: Registry, task: str) -> Target | None:
    spec = candidate.tasks.get(task)
    return None if spec is None else candidate.tiers[spec.tier].targets[0]


def _reprice(row: Row, target: Target | None, candidate: Registry, pricer: Pricer) -> Priced:
    # A call answered from the cache cost nothing, and would cost nothing under the candidate either.
    if row["usage_source"] == "none" or row.get("cache") in SERVED_FROM_STORE:
        return 0.0, 0.0, False
    usage = Usage(
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        cached_tokens=row["cached_tokens"] or 0,
        reasoning_tokens=row["reasoning_tokens"] or 0,
        cache_write_tokens=row["cache_write_tokens"] or 0,
    )
    served = Target(provider=str(row["provider"]), model=str(row["model"]), params=MappingProxyType({}))
    repriced = pricer.cost(served, usage)
    # One price sheet for both sides, so the delta is the re-tiering alone; the logged cost only when
    # the sheet cannot price the logged model (it was priced by an override the candidate lacks).
    current = repriced.usd if repriced is not None else _cost(row, "cost_usd")
    if target is None:
        return current, current, False
    cost = pricer.cost(target, usage)
    logged = candidate.providers.get(row["provider"])  # an unknown provider: its tokenizer is unknown too
    approximate = (
        row["usage_source"] == "estimated" or logged is None or logged.type != candidate.providers[target.provider].type
    )
    return current, None if cost is None else cost.usd, approximate


def _change(
    task: str, rows: Sequence[Row], priced: Sequence[Priced], spec: Task | None, target: Target | None
) -> TaskChange:
    both = [(now, then) for now, then, _ in priced if now is not None and then is not None]
    delta = math.fsum(then - now for now, then in both) if both else None
    is_total = task == "TOTAL"
    return TaskChange(
        task=task,
        calls=len(rows),
        current_tier=None if is_total else _most_common(r["tier"] for r in rows),
        current_model=None if is_total else _most_common(group_key(r, "model") for r in rows if r["model"]),
        candidate_tier=None if spec is None else spec.tier,
        candidate_model=None if target is None else target.key,
        current_cost_usd=_money([now for now, _, _ in priced]),
        candidate_cost_usd=_money([then for _, then, _ in priced]),
        delta_usd=delta,
        delta_ratio=_ratio(delta, math.fsum(now for now, _ in both)),
        unpriced=sum(1 for now, then, _ in priced if now is None or then is None),
        approximate=sum(1 for _, _, approx in priced if approx),
        in_candidate=spec is not None,
    )


def _most_common(values: Any) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


# --- the classifier report -----------------------------------------------------------------------

PERIODS = ("day", "week")


def agreement_load(
    path: str, since: str | None = None, *, include_eval: bool = False, until: str | None = None
) -> list[dict[str, Any]]:
    """The rows the classifier report reads, at or after ``since`` and before ``until`` (ledger ts), oldest first."""
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    bounds = [(term, value) for term, value in (("ts >= ?", since), ("ts < ?", until)) if value]
    sql = (
        "SELECT ts, task, task_source, task_confidence, task_predicted, eval_run FROM requests"
        + (" WHERE " + " AND ".join(term for term, _ in bounds) if bounds else "")
        + " ORDER BY ts"
    )
    try:
        conn = open_readonly(path)
        try:
            rows = [dict(row) for row in conn.execute(sql, [value for _, value in bounds])]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            raise AuditError(f"the ledger {path} predates classification (schema v5): nothing to report") from None
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    return rows if include_eval else [row for row in rows if row["eval_run"] is None]


def agreement_summarize(rows: Sequence[Mapping[str, Any]], by: str = "day") -> Agreement:
    """The classifier report over ``rows`` (``load``'s), drift grouped ``by`` day or week."""
    if by not in PERIODS:
        raise AuditError(f"--by: with --classifier, expected day or week, got {by!r}")
    tagged = [r for r in rows if r["task_source"] == "header"]
    scored = [r for r in tagged if r["task_predicted"] is not None]
    per_task: dict[str, list[Mapping[str, Any]]] = {}
    for row in scored:
        per_task.setdefault(str(row["task"]), []).append(row)
    tasks = sorted(
        (_agreement_task(task, members) for task, members in per_task.items()), key=lambda t: (-t.scored, t.task)
    )
    periods: dict[str, dict[str, list[int]]] = {}
    for row in scored:
        cell = periods.setdefault(_period(str(row["ts"]), by), {}).setdefault(str(row["task"]), [0, 0])
        cell[0] += row["task_predicted"] == row["task"]
        cell[1] += 1
    stamps = [str(r["ts"]) for r in rows]
    return Agreement(
        calls=len(rows),
        tagged=len(tagged),
        tasks=tuple(tasks),
        total=_agreement_task("TOTAL", scored),
        sources=_sources(rows),
        by=by,
        periods=tuple(_drift(key, cells) for key, cells in sorted(periods.items())),
        first_ts=min(stamps, default=None),
        last_ts=max(stamps, default=None),
    )


def _agreement_task(task: str, rows: Sequence[Mapping[str, Any]]) -> TaskAgreement:
    agreed = sum(1 for r in rows if r["task_predicted"] == r["task"])
    misses = Counter(str(r["task_predicted"]) for r in rows if r["task_predicted"] != r["task"])
    miss, miss_calls = misses.most_common(1)[0] if misses else (None, 0)
    if task == "TOTAL":
        miss, miss_calls = None, 0  # a wrong guess means something per task, not summed over them
    return TaskAgreement(task, len(rows), agreed, agreed / len(rows) if rows else None, miss, miss_calls)


def _sources(rows: Sequence[Mapping[str, Any]]) -> tuple[Source, ...]:
    counts = Counter(str(r["task_source"]) for r in rows)
    confidences = [
        float(r["task_confidence"])
        for r in rows
        if r["task_source"] == "classifier" and r["task_confidence"] is not None
    ]

    def order(source: str) -> tuple[int, str]:
        rank = {"header": 0, "classifier": 2, "default": 3}.get(source, 1)  # rules between header and classifier
        return rank, source

    return tuple(
        Source(
            source,
            counts[source],
            counts[source] / len(rows),
            sum(confidences) / len(confidences) if source == "classifier" and confidences else None,
        )
        for source in sorted(counts, key=order)
    )


def _period(ts: str, by: str) -> str:
    day = ts[:10]  # ts is UTC, so this is the UTC day
    if by == "day":
        return day
    monday = date.fromisoformat(day) - timedelta(days=date.fromisoformat(day).weekday())
    return monday.isoformat()


def _drift(key: str, cells: Mapping[str, list[int]]) -> Period:
    agreed = sum(a for a, _ in cells.values())
    scored = sum(n for _, n in cells.values())
    return Period(key, scored, agreed / scored if scored else None, {t: (a, n) for t, (a, n) in sorted(cells.items())})
