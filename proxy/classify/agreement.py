"""``tiergate audit --classifier``: how far to trust the classifier, measured on the team's real traffic.

Shadow mode scores every call, tagged or not (``task_predicted``). On a header-tagged call the header
is the truth, so ``task_predicted == task`` is the classifier agreeing with the app: per task, that
agreement and the classifier's most frequent wrong guess; per day (or week), the same, so a call site
that changed its prompt shows as a drop. Then how the calls were decided (``task_source``: header,
``rule:<name>``, classifier, default), with the classifier's mean confidence where it decided.

Definitions: *scored* are the header-tagged rows with ``task_predicted`` set (a call made while no
model was loaded has none); *agreement* is agreeing / scored. Eval traffic is left out unless asked.

Counted in SQL, one day at a time (``_cells``): the calls that share a day, task, task source and
prediction are one count, and everything above is a sum of those.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from proxy.ledger import runs
from proxy.ledger.audit import AuditError, Scope
from proxy.ledger.snapshot import Snapshot, snapshot

PERIODS = ("day", "week")


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


def summarize(db: str, scope: Scope | None = None, by: str = "day") -> Agreement:
    """The classifier report over the ledger at ``db`` (production traffic unless ``scope`` says), drift
    grouped ``by`` day or week."""
    if by not in PERIODS:
        raise AuditError(f"--by: with --classifier, expected day or week, got {by!r}")
    scope = scope or Scope()
    with snapshot(db) as snap:
        try:
            first, last = runs.bounds(snap.conn, scope)
            return _agreement(_cells(snap, scope), by, first, last, _FirstMiss(snap.conn, scope))
        except sqlite3.OperationalError as exc:
            if "no such column" in str(exc):
                raise AuditError(f"the ledger {db} predates classification (schema v5): nothing to report") from None
            raise


@dataclass(frozen=True, slots=True)
class _Cell:
    """The calls of one day that share task, how it was decided, and the classifier's own guess."""

    day: str
    task: str
    source: str
    predicted: str | None
    calls: int
    confidence: float  # the sum of the non-NULL task_confidence, over ``confident`` calls
    confident: int


class _FirstMiss:
    """When a task's two most frequent wrong guesses tie, the one made first wins (as when counting the
    rows oldest first): when each was first made, looked up only then."""

    def __init__(self, conn: sqlite3.Connection, scope: Scope) -> None:
        self._conn, self._scope = conn, scope

    def __call__(self, task: str, guess: str) -> int:
        sql = (
            "SELECT r.ts FROM ledger_requests AS r JOIN ledger_kinds AS k ON k.id = r.kind"
            " WHERE k.task = ? AND k.task_source = 'header' AND k.task_predicted = ?"
        )
        params: list[str | int] = [task, guess]
        bounds, values = self._scope.terms()  # on ts, which only ledger_requests has
        for term in bounds:
            sql += f" AND r.{term}"
        params += values
        if not self._scope.include_eval:
            sql += " AND r.eval_run IS NULL"
        # Oldest first along the ts index, stopping at the first match.
        return int(self._conn.execute(sql + " ORDER BY r.ts LIMIT 1", params).fetchone()[0])


def _cells(snap: Snapshot, scope: Scope) -> list[_Cell]:
    # The audit's runs (one day, eval run and kind each) already hold everything a cell counts: a kind
    # fixes the task, how it was decided and the classifier's guess.
    cells: dict[tuple[str, str, str, str | None], list[float]] = {}
    for run in runs.scan(snap, scope, confidence=True):
        if run.is_eval and not scope.include_eval:
            continue
        sums = cells.setdefault((run.day, run.task, run.task_source, run.task_predicted), [0, 0.0, 0])
        sums[0] += run.calls
        sums[1] += run.confidence
        sums[2] += run.confident
    return [_Cell(*key, int(calls), conf, int(n)) for key, (calls, conf, n) in cells.items()]


def _agreement(
    cells: list[_Cell], by: str, first: str | None, last: str | None, first_miss: Callable[[str, str], int]
) -> Agreement:
    tagged = [c for c in cells if c.source == "header"]
    scored = [c for c in tagged if c.predicted is not None]
    per_task: dict[str, list[_Cell]] = {}
    for cell in scored:
        per_task.setdefault(cell.task, []).append(cell)
    tasks = sorted(
        (_task(task, members, first_miss) for task, members in per_task.items()), key=lambda t: (-t.scored, t.task)
    )
    periods: dict[str, dict[str, list[int]]] = {}
    for cell in scored:
        counts = periods.setdefault(_period(cell.day, by), {}).setdefault(cell.task, [0, 0])
        counts[0] += cell.calls if cell.predicted == cell.task else 0
        counts[1] += cell.calls
    return Agreement(
        calls=sum(c.calls for c in cells),
        tagged=sum(c.calls for c in tagged),
        tasks=tuple(tasks),
        total=_task("TOTAL", scored, first_miss),
        sources=_sources(cells),
        by=by,
        periods=tuple(_drift(key, counts) for key, counts in sorted(periods.items())),
        first_ts=first,
        last_ts=last,
    )


def _task(task: str, cells: Sequence[_Cell], first_miss: Callable[[str, str], int]) -> TaskAgreement:
    scored = sum(c.calls for c in cells)
    agreed = sum(c.calls for c in cells if c.predicted == c.task)
    misses: Counter[str] = Counter()
    for cell in cells:
        if cell.predicted != cell.task:
            misses[str(cell.predicted)] += cell.calls
    miss, miss_calls = None, 0
    if misses and task != "TOTAL":  # a wrong guess means something per task, not summed over them
        miss_calls = max(misses.values())
        tied = [guess for guess, n in misses.items() if n == miss_calls]
        miss = tied[0] if len(tied) == 1 else min(tied, key=lambda guess: first_miss(task, guess))
    return TaskAgreement(task, scored, agreed, agreed / scored if scored else None, miss, miss_calls)


def _sources(cells: Sequence[_Cell]) -> tuple[Source, ...]:
    counts: Counter[str] = Counter()
    for cell in cells:
        counts[cell.source] += cell.calls
    decided = [c for c in cells if c.source == "classifier"]
    confident = sum(c.confident for c in decided)
    mean = sum(c.confidence for c in decided) / confident if confident else None
    total = sum(counts.values())

    def order(source: str) -> tuple[int, str]:
        rank = {"header": 0, "classifier": 2, "default": 3}.get(source, 1)  # rules between header and classifier
        return rank, source

    return tuple(
        Source(source, counts[source], counts[source] / total, mean if source == "classifier" else None)
        for source in sorted(counts, key=order)
    )


def _period(day: str, by: str) -> str:
    if by == "day":
        return day
    monday = date.fromisoformat(day) - timedelta(days=date.fromisoformat(day).weekday())
    return monday.isoformat()


def _drift(key: str, cells: Mapping[str, list[int]]) -> Period:
    agreed = sum(a for a, _ in cells.values())
    scored = sum(n for _, n in cells.values())
    return Period(key, scored, agreed / scored if scored else None, {t: (a, n) for t, (a, n) in sorted(cells.items())})
