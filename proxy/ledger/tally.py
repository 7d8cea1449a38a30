"""One audit line's sums (``Tally``), fed whole runs and rolled-up days, and the ``Group`` it makes.

Every column of a line is a sum over its rows of something that is the same for all rows of a run
(``proxy.ledger.runs``), so a line is the sum of its runs. The definitions are ``proxy.ledger.audit``'s.
The one thing a run's sums cannot say alone is savings over the rows priced on both sides when some of
its rows have a baseline and no cost or the other way round; the caller answers that (``Pairs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.ledger.rollup import Day
from proxy.ledger.runs import Run

# For a run whose baseline and generation cost are each known for some rows only: how many rows have
# both, and the sums of each over those rows.
Pairs = Callable[[Run], tuple[int, float, float]]


@dataclass(frozen=True)
class Group:
    """One line of the audit: the calls that share a task (or tier, model, provider, day, registry, client)."""

    key: str
    calls: int
    call_share: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # the priced rows' sum; None when every row with tokens is unpriced
    unpriced: int
    cost_share: float | None
    baseline_cost_usd: float | None
    savings_usd: float | None
    cached: int  # answered from the cache (hit, stale, coalesced)
    cache_saved_usd: float | None  # what those answers would have cost to generate
    p50_ms: float | None
    p95_ms: float | None
    error_rate: float | None
    disconnect_rate: float | None
    fallback_rate: float | None
    estimated_share: float | None
    latency_estimated: bool = False  # p50/p95 from a sample of the line's latencies (``proxy.ledger.ranks``)
    cached_tokens: int = 0  # input tokens the provider read from its prompt cache (part of input_tokens)
    savings_share: float | None = None  # savings / baseline cost


def _priced(run: Run) -> tuple[float, int, float, int, float, int]:
    """(cost, rows it is known of, baseline, rows known, generation cost, rows known) of ``run``. Without
    usage a row has nothing to price: $0, known; with usage, known when priced. A stored answer's
    generation cost is the cost it avoided."""
    n = run.calls
    cost, cost_known = (run.cost_usd, run.priced) if run.has_usage else (0.0, n)
    base, base_known = (run.baseline_cost_usd, run.baselined) if run.has_usage else (0.0, n)
    made, made_known = (run.cost_avoided_usd, run.avoided) if run.from_store else (cost, cost_known)
    return cost, cost_known, base, base_known, made, made_known


def needs_pairs(run: Run) -> bool:
    """Whether ``add_run`` will ask ``pairs`` about ``run``: some, not all, of its rows have a baseline
    cost, or a generation cost (rare: the kind of a row fixes whether it is priced)."""
    _, _, _, base_known, _, made_known = _priced(run)
    return not (base_known == made_known == run.calls) and bool(base_known and made_known)


@dataclass
class Tally:
    """The sums behind one line. ``*_known``: rows whose value is known (a row without usage costs $0)."""

    calls: int = 0
    rolled_up: int = 0  # calls counted from the daily rollup (no latencies)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: list[float] = field(default_factory=list)
    cost_known: int = 0
    unpriced: int = 0
    baseline: list[float] = field(default_factory=list)
    baseline_known: int = 0
    savings: list[float] = field(default_factory=list)
    savings_known: int = 0
    cached: int = 0
    saved: list[float] = field(default_factory=list)
    saved_known: int = 0
    errors: int = 0
    disconnects: int = 0
    fallbacks: int = 0
    estimated: int = 0

    def add_run(self, run: Run, pairs: Pairs) -> None:
        n = run.calls
        self.calls += n
        self.input_tokens += run.prompt_tokens
        self.output_tokens += run.completion_tokens
        self.cached_tokens += run.cached_tokens
        cost, cost_known, base, base_known, made, made_known = _priced(run)
        self.cost.append(cost)
        self.cost_known += cost_known
        self.unpriced += n - cost_known
        self.baseline.append(base)
        self.baseline_known += base_known
        if base_known == n and made_known == n:
            self.savings.append(base - made)
            self.savings_known += n
        elif needs_pairs(run):
            both, base_sum, made_sum = pairs(run)
            self.savings.append(base_sum - made_sum)
            self.savings_known += both
        if run.from_store:
            self.cached += n
            self.saved.append(run.cost_avoided_usd)
            self.saved_known += run.avoided
        self.errors += n if run.is_error else 0
        self.disconnects += n if run.status == 499 else 0
        self.fallbacks += n if run.fallback else 0
        self.estimated += n if run.usage_source == "estimated" else 0

    def add_day(self, day: Day) -> None:
        """A rolled-up day; its money sums are NULL when none of its calls had the value."""
        n = day.calls
        self.calls += n
        self.rolled_up += n
        self.input_tokens += day.prompt_tokens
        self.output_tokens += day.completion_tokens
        self.cost.append(day.cost_usd or 0.0)
        self.cost_known += n - day.unpriced
        self.unpriced += day.unpriced
        if day.baseline_cost_usd is not None:
            self.baseline.append(day.baseline_cost_usd)
            self.baseline_known += n
        if day.savings_usd is not None:
            self.savings.append(day.savings_usd)
            self.savings_known += n
        self.cached += day.cached
        if day.cache_saved_usd is not None:
            self.saved.append(day.cache_saved_usd)
            self.saved_known += day.cached
        self.errors += day.errors
        self.disconnects += day.disconnects
        self.fallbacks += day.fallbacks
        self.estimated += day.estimated

    def group(
        self,
        key: str,
        all_calls: int,
        all_cost: float | None,
        p50: float | None,
        p95: float | None,
        latency_estimated: bool = False,
    ) -> Group:
        """This tally as a line; ``all_calls`` and ``all_cost`` are the TOTAL's (its own, for the TOTAL)."""
        n = self.calls
        cost = _money(self.cost, self.cost_known, n)
        baseline, savings = _money(self.baseline, self.baseline_known, n), _money(self.savings, self.savings_known, n)
        return Group(
            key=key,
            calls=n,
            call_share=_ratio(n, all_calls),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=cost,
            unpriced=self.unpriced,
            cost_share=_ratio(cost, cost if all_cost is None else all_cost),
            baseline_cost_usd=baseline,
            savings_usd=savings,
            cached=self.cached,
            cache_saved_usd=_money(self.saved, self.saved_known, self.cached) if self.cached else 0.0,
            p50_ms=p50,
            p95_ms=p95,
            error_rate=_ratio(self.errors, n),
            disconnect_rate=_ratio(self.disconnects, n),
            fallback_rate=_ratio(self.fallbacks, n),
            estimated_share=_ratio(self.estimated, n),
            latency_estimated=latency_estimated,
            cached_tokens=self.cached_tokens,
            savings_share=_ratio(savings, baseline),
        )


def _money(parts: list[float], known: int, rows: int) -> float | None:
    """The exact sum of the known values; None only when there were rows and none had a known value."""
    return math.fsum(parts) if known or not rows else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole
