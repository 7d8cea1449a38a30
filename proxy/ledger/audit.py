"""The workload audit: the ledger's calls grouped by task, tier, model, provider or day, summed in SQL.

``summarize`` reads the ledger at a path and returns a ``Summary``; ``proxy.ledger.whatif`` re-prices it
under a candidate registry; ``proxy.ledger.report`` writes either as a table, CSV or JSON.

Definitions (the README's "The workload audit" repeats them):

- calls: rows of ``requests``, one per client request, failed ones included.
- error: ``status >= 400`` other than 499, or a ``status < 400`` row with ``error_type`` set (a stream
  that broke after its 200). A 499 (the client hung up mid-stream) is a *disconnect*, counted apart:
  it is neither the upstream's nor tiergate's failure.
- unpriced: a row with tokens (``usage_source`` is not ``'none'``) whose ``cost_usd`` is NULL because
  its model has no known price. Its cost is unknown, never $0: a group's cost sums the priced rows and
  is shown next to its unpriced count; a group whose rows are all unpriced has no cost at all. A row
  without usage (an error before any token) has nothing to price and counts as $0.
- savings: what the tiering saved: baseline cost minus what the call cost to generate on its tier (its
  cost, or for an answer served from the cache the cost it avoided), over the rows priced on both sides.
- savings share: savings / baseline cost. Cached tokens: the input tokens the provider read from its
  prompt cache (inside input tokens).
- per month: a cost over the period (first call to last, at least a day) / its days × ``MONTH_DAYS``.
- ``--task``/``--model`` keep the runs of those tasks and models; the period's bounds stay the scope's.
- cached: calls answered from a stored answer (``cache`` is hit, stale or coalesced); cache saved: the
  cost those answers avoided (the price of the generation each stood in for). Savings and cache saved
  add up to baseline cost minus cost.
- p50 / p95: nearest rank over the non-NULL ``latency_ms``: the value at rank ceil(p/100 * n).
- shares and rates are fractions (0.25) in CSV and JSON, percentages in the table.

How: the ledger is summed into runs (``proxy.ledger.runs``: its kept sums, and one scan of the rest); each line
is a sum of runs (``proxy.ledger.tally``), plus the days the retention rolled up into ``daily``
(``proxy.ledger.rollup``; they have no latencies, so percentiles then cover the rows still in
``requests``); percentiles are exact nearest ranks read from the index (``proxy.ledger.ranks``). Cost
grows with the number of runs and with the rows read around each percentile, not with the rows loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from proxy.ledger import ranks, rollup, runs
from proxy.ledger.records import moment_ms
from proxy.ledger.rollup import Day
from proxy.ledger.runs import Run, Scope
from proxy.ledger.snapshot import AuditError, Snapshot, snapshot
from proxy.ledger.tally import Group, Pairs, Tally, needs_pairs

__all__ = ["GROUPINGS", "AuditError", "EvalVerdict", "Group", "Scope", "Summary", "last_evals", "parse_since"]

REGISTRY_PREFIX = 12  # hex digits of a registry's content hash an audit line shows (what /readyz starts with)
GROUPINGS = ("task", "tier", "model", "provider", "day", "registry", "client")
MONTH_DAYS = 30  # the projection's month
_DAY_MS = 86_400_000
_TOTAL = "\0TOTAL"  # the TOTAL's key among the groups: no task, tier, model or day is named that
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None, now: datetime | None = None, flag: str = "--since") -> int | None:
    """``24h`` / ``90m`` / ``7d`` / ``2w`` before ``now``, a date or an ISO timestamp -> a bound on the ledger's
    ``ts`` in epoch ms (``records.moment_ms``; ``--until`` takes the same: a date is its midnight, so
    ``--until 2026-11-02`` ends with Nov 1)."""
    if value is None:
        return None
    relative = _RELATIVE.match(value.strip())
    try:
        if relative:
            delta = timedelta(**{_UNITS[relative[2]]: int(relative[1])})
            return moment_ms((now or datetime.now(UTC)) - delta)
        start = datetime.fromisoformat(value.strip())
        return moment_ms(start if start.tzinfo else start.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise AuditError(
            f"{flag}: expected 24h, 90m, 7d, a date (2026-11-01) or an ISO timestamp, got {value!r}"
        ) from None


@dataclass(frozen=True)
class Summary:
    by: str
    groups: tuple[Group, ...]  # by cost, highest first; unpriced groups last
    total: Group
    first_ts: str | None
    last_ts: str | None
    eval_left_out: int = 0  # eval calls in the period, left out (``include_eval`` counts them instead)
    rolled_up: int = 0  # calls counted from the daily rollup: in every column but the percentiles

    @property
    def period_days(self) -> float:
        """The period's length in days, first call to last; a period under a day counts as one day."""
        if self.first_ts is None or self.last_ts is None:
            return 1.0
        span = datetime.fromisoformat(self.last_ts) - datetime.fromisoformat(self.first_ts)
        return max(span / timedelta(days=1), 1.0)

    def per_month(self, usd: float | None) -> float | None:
        """``usd`` over the period as a month (``MONTH_DAYS``) at the same daily rate."""
        return None if usd is None else usd / self.period_days * MONTH_DAYS


def summarize(
    db: str,
    by: str,
    scope: Scope | None = None,
    *,
    refresh: bool = True,
    tasks: Sequence[str] = (),
    models: Sequence[str] = (),
) -> Summary:
    """The audit of the ledger at ``db`` grouped by ``by`` (one of ``GROUPINGS``), plus a TOTAL line; all of
    its production traffic unless ``scope`` says otherwise. ``refresh``: sum the rows not yet in
    ``ledger_runs`` first, when the file can be written (else they are read as rows). ``tasks``,
    ``models``: only the calls of these tasks, of these models (``gpt-5.5`` or ``openai::gpt-5.5``); a
    filter on runs, which each have one task and one model."""
    scope = scope or Scope()
    if by not in GROUPINGS:
        raise AuditError(f"--by: expected one of {', '.join(GROUPINGS)}, got {by!r}")
    with snapshot(db, refresh=refresh) as snap:
        conn = snap.conn
        wanted = _wanted(tasks, models)
        found = [
            run for run in runs.scan(snap, scope, sample=True, tokens=True) if wanted(run.task, run.provider, run.model)
        ]
        days = [d for d in rollup.read(conn, scope) if wanted(d.task, d.provider, d.model)]
        kept = [run for run in found if scope.include_eval or not run.is_eval]
        left_out = sum(run.calls for run in found if run.is_eval) + sum(d.calls for d in days if d.eval)
        days = [d for d in days if scope.include_eval or not d.eval]
        first, last = runs.bounds(conn, scope)
        return _summary(snap, scope, by, kept, days, first, last, 0 if scope.include_eval else left_out)


def _wanted(tasks: Sequence[str], models: Sequence[str]) -> Callable[[str | None, str | None, str | None], bool]:
    """Whether a run (or rolled-up day) of that task, provider and model passes the ``--task``/``--model`` filters."""
    task_set, model_set = set(tasks), set(models)

    def wanted(task: str | None, provider: str | None, model: str | None) -> bool:
        if task_set and task not in task_set:
            return False
        return not model_set or model in model_set or f"{provider}::{model}" in model_set

    return wanted


def _summary(
    snap: Snapshot,
    scope: Scope,
    by: str,
    kept: Sequence[Run],
    days: Sequence[Day],
    first: str | None,
    last: str | None,
    left_out: int,
) -> Summary:
    tallies: dict[str, Tally] = {}
    members: dict[str, list[Run]] = {}
    total = Tally()
    pairs = _pairs(snap, scope, kept)
    for run in kept:
        key = group_key(run, by)
        tallies.setdefault(key, Tally()).add_run(run, pairs)
        members.setdefault(key, []).append(run)
        total.add_run(run, pairs)
    for day in days:
        key = key_of(by, day.day, day.task, day.tier, day.provider, day.model)  # no registry, no client: -
        tallies.setdefault(key, Tally()).add_day(day)
        total.add_day(day)
    latencies = ranks.percentiles(snap, scope, {**members, _TOTAL: kept})
    none = ranks.Percentiles((None, None))
    whole_p = latencies.get(_TOTAL, none)
    whole = total.group("TOTAL", total.calls, None, whole_p.values[0], whole_p.values[1], whole_p.estimated)
    groups = []
    for key, tally in tallies.items():
        found = latencies.get(key, none)
        p50, p95 = found.values
        groups.append(tally.group(key, total.calls, whole.cost_usd, p50, p95, found.estimated))
    groups.sort(key=lambda g: (g.cost_usd is None, -(g.cost_usd or 0.0), -g.calls, g.key))
    if days:  # a rolled-up day counts whole
        first = min(filter(None, (first, f"{min(d.day for d in days)}T00:00:00.000Z")))
        last = max(filter(None, (last, f"{max(d.day for d in days)}T23:59:59.999Z")))
    return Summary(by, tuple(groups), whole, first, last, left_out, total.rolled_up)


def group_key(run: Run, by: str) -> str:
    """The value a run is grouped under; ``-`` when it has none (a request that failed before routing)."""
    return key_of(by, run.day, run.task, run.tier, run.provider, run.model, run.registry, run.client)


def key_of(
    by: str,
    day: str,
    task: str | None,
    tier: str | None,
    provider: str | None,
    model: str | None,
    registry: str | None = None,
    client: str | None = None,
) -> str:
    """The line a call of that day, task, tier, provider, model, registry and client is counted in,
    grouping ``by`` (a rolled-up day has no registry and no client: ``-``)."""
    if by == "day":
        return day  # ts is UTC, so this is the UTC day
    if by == "registry":
        return registry[:REGISTRY_PREFIX] if registry else "-"
    if by == "model":
        return f"{provider}::{model}" if model else "-"
    return str({"task": task, "tier": tier, "provider": provider, "client": client}[by] or "-")


def _pairs(snap: Snapshot, scope: Scope, kept: Sequence[Run]) -> Pairs:
    """``Tally``'s pairs: for the rare runs whose rows are priced on one side only in part, what one more
    pass reads (``runs.pairs``); asked of no other run."""
    wanted = {run.key for run in kept if needs_pairs(run)}
    found = runs.pairs(snap, scope, wanted) if wanted else {}

    def pairs(run: Run) -> tuple[int, float, float]:
        both = found.get(run.key, (0, 0.0, 0.0, 0, 0.0, 0.0))
        return both[3:] if run.from_store else both[:3]

    return pairs


# --- the last evals, shown beside each task ------------------------------------------------------


@dataclass(frozen=True)
class EvalVerdict:
    """A task's last ``tiergate eval`` of the tier it ran on then (``eval_runs.current = 1``)."""

    task: str
    tier: str
    verdict: str
    pass_rate: float
    ts: str


def last_evals(path: str) -> dict[str, EvalVerdict]:
    """Per task, its latest eval verdict on its current tier; empty for a ledger without evals."""
    sql = "SELECT task, tier, verdict, pass_rate, MAX(ts) AS ts FROM eval_runs WHERE current = 1 GROUP BY task"  # SQLite: the bare columns come from the row holding the MAX
    try:
        with snapshot(path, connections=1) as snap:
            return {row["task"]: EvalVerdict(**dict(row)) for row in snap.conn.execute(sql)}
    except AuditError:
        return {}  # a ledger older than the eval tables (schema v4)


def percentile(values: Sequence[float], p: int) -> float | None:
    """Nearest-rank percentile of values in memory: the value at rank ceil(p/100 * n); None when empty."""
    if not values:
        return None
    return sorted(values)[ranks.nearest_rank(p, len(values)) - 1]
