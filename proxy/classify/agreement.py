"""``tiergate audit --classifier``: how far to trust the classifier, measured on the team's real traffic.

Shadow mode scores every call, tagged or not (``task_predicted``). On a header-tagged call the header
is the truth, so ``task_predicted == task`` is the classifier agreeing with the app: per task, that
agreement and the classifier's most frequent wrong guess; per day (or week), the same, so a call site
that changed its prompt shows as a drop. Then how the calls were decided (``task_source``: header,
``rule:<name>``, classifier, default), with the classifier's mean confidence where it decided.

Definitions: *scored* are the header-tagged rows with ``task_predicted`` set (a call made while no
model was loaded has none); *agreement* is agreeing / scored. Eval traffic is left out unless asked.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from proxy.ledger.audit import AuditError
from proxy.ledger.schema import open_readonly

PERIODS = ("day", "week")
_COLUMNS = "SELECT ts, task, task_source, task_confidence, task_predicted, eval_run FROM requests"


@dataclass(frozen=True)
class TaskAgreement:
    task: str
    scored: int
    agreed: int
    agreement: float | None
    miss: str | None  # the most frequent wrong prediction
    miss_calls: int


@dataclass(frozen=True)
class Source:
    source: str  # header, rule:<name>, classifier, default
    calls: int
    share: float
    mean_confidence: float | None  # the classifier's, over the calls it decided


@dataclass(frozen=True)
class Period:
    period: str  # the day (2026-11-02) or the week's Monday (week of 2026-11-02)
    scored: int
    agreement: float | None
    tasks: Mapping[str, tuple[int, int]]  # task -> (agreed, scored)


@dataclass(frozen=True)
class Agreement:
    calls: int
    tagged: int  # header-tagged calls
    tasks: tuple[TaskAgreement, ...]  # most scored first
    total: TaskAgreement
    sources: tuple[Source, ...]  # header, the rules by name, classifier, default
    by: str
    periods: tuple[Period, ...]  # oldest first
    first_ts: str | None
    last_ts: str | None


def load(path: str, since: str | None = None, *, include_eval: bool = False) -> list[dict[str, Any]]:
    """The rows the classifier report reads, at or after ``since`` (a ledger ts), oldest first."""
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    sql = _COLUMNS + (" WHERE ts >= ?" if since else "") + " ORDER BY ts"
    try:
        conn = open_readonly(path)
        try:
            rows = [dict(row) for row in conn.execute(sql, (since,) if since else ())]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            raise AuditError(f"the ledger {path} predates classification (schema v5): nothing to report") from None
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    return rows if include_eval else [row for row in rows if row["eval_run"] is None]


def summarize(rows: Sequence[Mapping[str, Any]], by: str = "day") -> Agreement:
    """The classifier report over ``rows`` (``load``'s), drift grouped ``by`` day or week."""
    if by not in PERIODS:
        raise AuditError(f"--by: with --classifier, expected day or week, got {by!r}")
    tagged = [r for r in rows if r["task_source"] == "header"]
    scored = [r for r in tagged if r["task_predicted"] is not None]
    per_task: dict[str, list[Mapping[str, Any]]] = {}
    for row in scored:
        per_task.setdefault(str(row["task"]), []).append(row)
    tasks = sorted((_task(task, members) for task, members in per_task.items()), key=lambda t: (-t.scored, t.task))
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
        total=_task("TOTAL", scored),
        sources=_sources(rows),
        by=by,
        periods=tuple(_drift(key, cells) for key, cells in sorted(periods.items())),
        first_ts=min(stamps, default=None),
        last_ts=max(stamps, default=None),
    )


def _task(task: str, rows: Sequence[Mapping[str, Any]]) -> TaskAgreement:
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
