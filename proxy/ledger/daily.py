"""``daily``: what retention keeps of the rows it deletes, and the totals of rows and rollups together.

One ``daily`` row per UTC day, task, tier, provider, model and eval (1 for ``tiergate eval``'s traffic),
with text keys a request did not have (it failed before routing) stored as ``''``. Each column means
what the audit's (``proxy.ledger.audit``) means over that group's rows: ``calls``; ``errors``
(``is_error``); ``disconnects`` (status 499); ``fallbacks``; ``estimated`` (usage counted by tiergate);
``unpriced`` (tokens but no known price); ``cached`` (answered from the store); prompt and completion
tokens; ``cost_usd``, ``baseline_cost_usd``, ``savings_usd`` and ``cache_saved_usd`` summed as the
audit sums them, NULL where the audit's would be unknown (every such row unpriced).

``ROLL_UP`` adds the rows of ``temp.prune_rids`` to their groups, in the transaction that deletes them
(``proxy.ledger.prune``): a row is counted in ``daily`` exactly when it has left ``requests``. A day
being pruned can so have part of its calls in ``daily`` and the rest still in ``requests``: a total
over both (``totals``) is exact whenever it is read. Money is summed in floating point, per group and
then across groups, so it agrees with the audit's exact sums to about 1e-12 of the amount, not to the bit.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from proxy.ledger.audit import AuditError, Group, summarize
from proxy.ledger.runs import Scope
from proxy.ledger.schema import open_readonly

_STORED = "ifnull(k.cache, '') IN ('hit', 'stale', 'coalesced')"  # records.SERVED_FROM_STORE
_COST = "CASE WHEN k.usage_source = 'none' THEN 0.0 ELSE r.cost_usd END"  # audit._cost
_BASELINE = "CASE WHEN k.usage_source = 'none' THEN 0.0 ELSE r.baseline_cost_usd END"
_GENERATION = f"CASE WHEN {_STORED} THEN r.cost_avoided_usd ELSE {_COST} END"  # audit._generation_cost


def _sum_known(column: str) -> str:
    """An upsert's merge of two sums where NULL means "values, none known": known + NULL is known."""
    return (
        f"CASE WHEN daily.{column} IS NULL THEN excluded.{column} WHEN excluded.{column} IS NULL THEN daily.{column}"
        f" ELSE daily.{column} + excluded.{column} END"
    )


ROLL_UP = f"""
INSERT INTO daily (day, task, tier, provider, model, eval, calls, errors, disconnects, fallbacks, estimated, unpriced,
    cached, prompt_tokens, completion_tokens, cost_usd, baseline_cost_usd, savings_usd, cache_saved_usd)
SELECT strftime('%Y-%m-%d', r.ts / 1000.0, 'unixepoch'), k.task, ifnull(k.tier, ''), ifnull(k.provider, ''),
    ifnull(k.model, ''), r.eval_run IS NOT NULL,
    count(*),
    sum(k.status != 499 AND (k.status >= 400 OR k.error_type IS NOT NULL)),
    sum(k.status = 499),
    sum(k.fallback != 0),
    sum(k.usage_source = 'estimated'),
    sum(k.usage_source != 'none' AND r.cost_usd IS NULL),
    sum({_STORED}),
    sum(ifnull(r.prompt_tokens, 0)),
    sum(ifnull(r.completion_tokens, 0)),
    sum({_COST}),
    sum({_BASELINE}),
    sum(({_BASELINE}) - ({_GENERATION})),
    CASE WHEN sum({_STORED}) THEN sum(CASE WHEN {_STORED} THEN r.cost_avoided_usd END) ELSE 0.0 END
FROM ledger_requests AS r
JOIN ledger_kinds AS k ON k.id = r.kind
WHERE r.rid IN (SELECT rid FROM temp.prune_rids)
GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT (day, task, tier, provider, model, eval) DO UPDATE SET
    calls = daily.calls + excluded.calls,
    errors = daily.errors + excluded.errors,
    disconnects = daily.disconnects + excluded.disconnects,
    fallbacks = daily.fallbacks + excluded.fallbacks,
    estimated = daily.estimated + excluded.estimated,
    unpriced = daily.unpriced + excluded.unpriced,
    cached = daily.cached + excluded.cached,
    prompt_tokens = daily.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = daily.completion_tokens + excluded.completion_tokens,
    cost_usd = {_sum_known("cost_usd")},
    baseline_cost_usd = {_sum_known("baseline_cost_usd")},
    savings_usd = {_sum_known("savings_usd")},
    cache_saved_usd = CASE WHEN daily.cached = 0 THEN excluded.cache_saved_usd
        WHEN excluded.cached = 0 THEN daily.cache_saved_usd ELSE {_sum_known("cache_saved_usd")} END
"""


@dataclass(frozen=True)
class Totals:
    """The audit's TOTAL line as counts and sums: the same definitions as ``daily``'s columns."""

    calls: int = 0
    errors: int = 0
    disconnects: int = 0
    fallbacks: int = 0
    estimated: int = 0
    unpriced: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None: there were calls with tokens and none had a known price
    baseline_cost_usd: float | None = 0.0
    savings_usd: float | None = 0.0
    cache_saved_usd: float | None = 0.0  # 0 without cached calls; None when none of theirs was priced

    @classmethod
    def of(cls, group: Group) -> Totals:
        """An audit line (``audit.summarize``'s TOTAL, say) as counts: its rates times its calls."""

        def count(rate: float | None) -> int:
            return 0 if rate is None else round(rate * group.calls)

        return cls(
            calls=group.calls,
            errors=count(group.error_rate),
            disconnects=count(group.disconnect_rate),
            fallbacks=count(group.fallback_rate),
            estimated=count(group.estimated_share),
            unpriced=group.unpriced,
            cached=group.cached,
            prompt_tokens=group.input_tokens,
            completion_tokens=group.output_tokens,
            cost_usd=group.cost_usd if group.calls else 0.0,
            baseline_cost_usd=group.baseline_cost_usd if group.calls else 0.0,
            savings_usd=group.savings_usd if group.calls else 0.0,
            cache_saved_usd=group.cache_saved_usd if group.calls else 0.0,
        )

    def __add__(self, other: Totals) -> Totals:
        values: dict[str, int | float | None] = {name: getattr(self, name) + getattr(other, name) for name in _COUNTS}
        values.update(
            {name: _known_sum(self, other, name) for name in ("cost_usd", "baseline_cost_usd", "savings_usd")}
        )
        if not self.cached or not other.cached:  # 0.0 stands for "no cached calls", not for a known $0
            values["cache_saved_usd"] = self.cache_saved_usd if other.cached == 0 else other.cache_saved_usd
        else:
            values["cache_saved_usd"] = _known_sum(self, other, "cache_saved_usd")
        return Totals(**values)  # type: ignore[arg-type]


_COUNTS = (
    "calls", "errors", "disconnects", "fallbacks", "estimated", "unpriced", "cached", "prompt_tokens",
    "completion_tokens",
)  # fmt: skip


def _known_sum(a: Totals, b: Totals, name: str) -> float | None:
    x, y = getattr(a, name), getattr(b, name)
    if not a.calls:
        return y  # type: ignore[no-any-return]
    if not b.calls:
        return x  # type: ignore[no-any-return]
    known = [v for v in (x, y) if v is not None]
    return math.fsum(known) if known else None


def read(path: str, *, include_eval: bool = False) -> list[Totals]:
    """``daily``'s rows as ``Totals`` (eval traffic left out unless ``include_eval``); none before schema v7."""
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    names = [f.name for f in fields(Totals)]
    sql = f"SELECT {', '.join(names)} FROM daily" + ("" if include_eval else " WHERE eval = 0")
    try:
        conn = open_readonly(path)
        try:
            return [Totals(**dict(row)) for row in conn.execute(sql)]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None


def total(parts: Iterable[Totals]) -> Totals:
    result = Totals()
    for part in parts:
        result = result + part
    return result


def totals(path: str, *, include_eval: bool = False) -> Totals:
    """Every call the ledger has accounted for: the audit's TOTAL, which sums the rows still in ``requests``
    and what retention rolled up into ``daily``. Exact for counts and tokens whenever it is read, even
    while a prune runs; money to about 1e-12 of the amount (see the module's docstring)."""
    return Totals.of(summarize(path, "task", Scope(include_eval=include_eval)).total)
