"""What-if re-tiering: the logged traffic priced as served and as a candidate registry would run it.

Each logged call is priced twice with the same tokens and the same price sheet (``pricer``: the
candidate's ``prices:`` over genai-prices): as served, falling back to the logged ``cost_usd`` when the
sheet cannot price the served model (it was priced by an override the candidate lacks), and on the first
target of its task's tier in the candidate. One sheet for both sides means a price change since the call
was logged does not pass for a re-tiering effect. A task the candidate does not define is priced as
served on both sides (``in_candidate`` false): the what-if answers "what would re-tiering cost", not
"what if these calls went away". Tokens are approximate when the call was served by another provider
type than the candidate's (another tokenizer), or were estimated. A call answered from the cache cost
nothing, and would cost nothing under the candidate either.

How: the traffic is the audit's runs (``proxy.ledger.runs``) with their token parts summed. Within one
price tier a price is affine in the token counts (``Pricer.cost_of_calls``), so a run is priced from its
sums in one go when all its calls are in the first tier of both models (its largest prompt says so) and
none breaks ``Usage``'s rule. Any other run is priced per price tier, grouped in SQL over that run's index
range, with its odd rows one by one, clamped as ``Usage`` clamps them: the same numbers either way.
Rolled-up days (``daily``) keep no token parts: they are left out of the what-if, and counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from proxy.ledger import rollup, runs
from proxy.ledger.runs import Run, Scope
from proxy.ledger.snapshot import Snapshot, snapshot
from proxy.pricing import Pricer
from proxy.registry import Registry, Target
from proxy.usage import Usage


@dataclass(frozen=True)
class TaskChange:
    """One task's logged calls, priced as served and as the candidate would run them (one price sheet)."""

    task: str
    calls: int
    current_tier: str | None  # the most frequent in the ledger
    current_model: str | None
    candidate_tier: str | None  # None: the candidate does not define the task (priced as served)
    candidate_model: str | None
    current_cost_usd: float | None
    candidate_cost_usd: float | None
    delta_usd: float | None  # candidate - current, over the calls priced on both sides
    delta_ratio: float | None
    unpriced: int  # calls with tokens but no price on one side or both
    approximate: int  # calls whose token counts are approximate on the candidate's model
    in_candidate: bool


@dataclass(frozen=True)
class WhatIf:
    source: str
    tasks: tuple[TaskChange, ...]
    total: TaskChange
    eval_left_out: int = 0
    rolled_up: int = 0  # calls in rolled-up days: not re-priced (their token parts are not kept)


def what_if(db: str, candidate: Registry, pricer: Pricer, scope: Scope | None = None) -> WhatIf:
    """The logged traffic in ``scope`` (default: all production traffic) of the ledger at ``db``, per task,
    priced under ``candidate``."""
    with snapshot(db) as snap:
        return Traffic(snap, scope or Scope()).what_if(candidate, pricer)


@dataclass
class _Sums:
    """A task's (or the total's) priced blocks: ``*_known`` counts the calls whose price is known."""

    calls: int = 0
    now: list[float] = field(default_factory=list)
    now_known: int = 0
    then: list[float] = field(default_factory=list)
    then_known: int = 0
    both: int = 0  # calls priced on both sides: their current costs, and candidate minus current
    both_now: list[float] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)
    unpriced: int = 0
    approximate: int = 0

    def add(self, calls: int, now: float | None, then: float | None) -> None:
        self.calls += calls
        if now is not None:
            self.now.append(now)
            self.now_known += calls
        if then is not None:
            self.then.append(then)
            self.then_known += calls
        if now is not None and then is not None:
            self.both += calls
            self.both_now.append(now)
            self.deltas.append(then - now)
        else:
            self.unpriced += calls

    def merge(self, other: _Sums) -> None:
        for name in ("now", "then", "both_now", "deltas"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("calls", "now_known", "then_known", "both", "unpriced", "approximate"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _Block:
    """Calls priced together: their summed tokens, all in the price tier of a ``tier_of``-token prompt."""

    calls: int
    tokens: Usage
    tier_of: int
    logged: float | None  # the sum of their logged cost_usd; None when they have none
    logged_mixed: bool = False  # some of them have a logged cost and some not


@dataclass(frozen=True)
class _Closer:
    """The runs whose sums cannot price them (``wanted``), and what ``runs.closer`` read of them: the
    cut-offs its blocks are cut at, the blocks and the odd rows per run."""

    wanted: frozenset[runs.Key]
    cuts: tuple[int, ...]
    blocks: Mapping[runs.Key, list[tuple[Any, ...]]]
    odd: Mapping[runs.Key, list[tuple[Any, ...]]]


class Traffic:
    """The logged traffic in ``scope``, per task, as runs with their token parts: what a what-if prices."""

    def __init__(self, snap: Snapshot, scope: Scope) -> None:
        self._snap, self._scope = snap, scope
        self.tasks: dict[str, list[Run]] = {}
        self.eval_left_out = 0
        for run in runs.scan(snap, scope, tokens=True):
            if run.is_eval and not scope.include_eval:
                self.eval_left_out += run.calls
            else:
                self.tasks.setdefault(run.task, []).append(run)
        days = rollup.read(snap.conn, scope)
        self.eval_left_out += 0 if scope.include_eval else sum(d.calls for d in days if d.eval)
        self.rolled_up = sum(d.calls for d in days if scope.include_eval or not d.eval)

    def what_if(self, candidate: Registry, pricer: Pricer) -> WhatIf:
        """Every task's change under ``candidate``, by current cost; and the TOTAL."""
        total = _Sums()
        changes = []
        closer = self._closer(list(self.tasks), candidate, pricer)
        for task in self.tasks:
            sums = self._price(task, candidate, pricer, closer)
            total.merge(sums)
            changes.append(self._change(task, sums, candidate))
        changes.sort(key=lambda c: (c.current_cost_usd is None, -(c.current_cost_usd or 0.0), c.task))
        whole = replace(_task_change("TOTAL", total, None, None, None, None, None), in_candidate=all(
            c.in_candidate for c in changes
        ))  # fmt: skip
        return WhatIf(candidate.source, tuple(changes), whole, self.eval_left_out, self.rolled_up)

    def change(self, task: str, candidate: Registry, pricer: Pricer) -> TaskChange | None:
        """``task``'s change under ``candidate``; None when the scope has no call of it."""
        if task not in self.tasks:
            return None
        closer = self._closer([task], candidate, pricer)
        return self._change(task, self._price(task, candidate, pricer, closer), candidate)

    def _change(self, task: str, sums: _Sums, candidate: Registry) -> TaskChange:
        spec = candidate.tasks.get(task)
        target = None if spec is None else candidate.tiers[spec.tier].targets[0]
        members = self.tasks[task]
        tier = self._most_common(task, [(run.tier,) for run in members], ("tier",), members)
        model = self._most_common(task, [(run.provider, run.model) for run in members], ("provider", "model"), members)
        return _task_change(
            task, sums, tier[0] if tier else None, f"{model[0]}::{model[1]}" if model else None,
            spec.tier if spec else None, target, spec is not None,
        )  # fmt: skip

    def _runs(self, task: str, candidate: Registry, pricer: Pricer) -> Iterator[tuple[Run, Target, list[int]]]:
        """``task``'s runs with usage that was billed, each with its served target and the prompt sizes
        where the price of that target or of the candidate's changes."""
        spec = candidate.tasks.get(task)
        target = None if spec is None else candidate.tiers[spec.tier].targets[0]
        for run in self.tasks[task]:
            if not run.has_usage or run.from_store:
                continue
            served = Target(provider=str(run.provider), model=str(run.model), params=MappingProxyType({}))
            starts = sorted({*pricer.tier_starts(served), *(pricer.tier_starts(target) if target else ())})
            yield run, served, starts

    def _closer(self, tasks: list[str], candidate: Registry, pricer: Pricer) -> _Closer:
        """The closer looks every run of ``tasks`` that its sums cannot price needs, read in one pass."""
        wanted: set[runs.Key] = set()
        starts: set[int] = set()
        for task in tasks:
            for run, served, run_starts in self._runs(task, candidate, pricer):
                if not self._simple(run, run_starts, pricer, served):
                    wanted.add(run.key)
                    starts.update(run_starts)
        if not wanted:
            return _Closer(frozenset(), (), {}, {})
        # One set of cut-offs for every run (all their starts): a finer cut than a run's own still
        # prices each block in one tier on both sides.
        cuts = tuple(sorted(starts))
        blocks, odd = runs.closer(self._snap, self._scope, wanted, cuts)
        return _Closer(frozenset(wanted), cuts, blocks, odd)

    def _price(self, task: str, candidate: Registry, pricer: Pricer, closer: _Closer) -> _Sums:
        spec = candidate.tasks.get(task)
        target = None if spec is None else candidate.tiers[spec.tier].targets[0]
        sums = _Sums()
        for run in self.tasks[task]:
            if not run.has_usage or run.from_store:
                sums.add(run.calls, 0.0, 0.0)
        for run, served, _ in self._runs(task, candidate, pricer):
            if target is not None:
                logged = candidate.providers.get(str(run.provider))  # unknown provider: unknown tokenizer too
                other = logged is None or logged.type != candidate.providers[target.provider].type
                sums.approximate += run.calls if other or run.usage_source == "estimated" else 0
            for block in self._blocks(run, closer):
                now_cost = pricer.cost_of_calls(served, block.tokens, block.calls, block.tier_of)
                now = now_cost.usd if now_cost is not None else block.logged
                if target is None:
                    sums.add(block.calls, now, now)
                    continue
                then_cost = pricer.cost_of_calls(target, block.tokens, block.calls, block.tier_of)
                sums.add(block.calls, now, None if then_cost is None else then_cost.usd)
        return sums

    @staticmethod
    def _whole(run: Run) -> _Block:
        return _Block(
            run.calls,
            Usage(run.prompt_tokens, run.completion_tokens, run.cached_tokens, 0, run.cache_write_tokens),
            0,
            run.cost_usd if run.priced == run.calls else None,
            0 < run.priced < run.calls,
        )

    def _simple(self, run: Run, starts: list[int], pricer: Pricer, served: Target) -> bool:
        """Whether ``run``'s sums price it exactly: no row breaks Usage's rule, every prompt is in the first
        price tier, and its logged costs are all there or not needed."""
        whole = self._whole(run)
        simple = run.odd == 0 and (not starts or run.largest_prompt <= starts[0])
        # A mix of logged and missing costs only matters when the sheet cannot price the served model.
        return simple and not (whole.logged_mixed and pricer.cost_of_calls(served, whole.tokens, 1, 0) is None)

    def _blocks(self, run: Run, closer: _Closer) -> list[_Block]:
        """``run``'s calls in blocks that are each priced exactly from their sums (see the module doc):
        one, unless ``_closer`` found it is not ``_simple``."""
        if run.key not in closer.wanted:
            return [self._whole(run)]
        cuts = closer.cuts
        blocks = []
        for bucket, no_cost, calls, prompt, completion, cached, written, logged in closer.blocks.get(run.key, ()):
            tier_of = 0 if not bucket else cuts[bucket - 1] + 1
            blocks.append(
                _Block(calls, Usage(prompt, completion, cached, 0, written), tier_of, None if no_cost else logged)
            )
        for prompt, completion, cached, reasoning, written, logged in closer.odd.get(run.key, ()):
            # Priced one by one, clamped as Usage clamps a call's counts that break its rule.
            usage = Usage(prompt or 0, completion or 0, cached or 0, reasoning or 0, written or 0)
            blocks.append(_Block(1, usage, usage.prompt_tokens, logged))
        return blocks

    def _most_common(
        self, task: str, values: list[tuple[str | None, ...]], columns: tuple[str, ...], members: list[Run]
    ) -> tuple[str, ...] | None:
        """The value (of ``columns``) most of ``task``'s calls have, ignoring empty ones; a tie goes to the
        value seen first, as when counting the rows oldest first."""
        counts: Counter[tuple[str, ...]] = Counter()
        for value, run in zip(values, members, strict=True):
            if value[-1]:
                counts[tuple(str(v) for v in value)] += run.calls
        if not counts:
            return None
        most = max(counts.values())
        tied = [value for value, n in counts.items() if n == most]
        return tied[0] if len(tied) == 1 else min(tied, key=lambda v: self._first_seen(task, columns, v))

    def _first_seen(self, task: str, columns: tuple[str, ...], value: tuple[str, ...]) -> int:
        bounds, params = self._scope.terms()
        terms = ["k.task = ?", *(f"k.{column} = ?" for column in columns), *(f"r.{term}" for term in bounds)]
        if not self._scope.include_eval:
            terms.append("r.eval_run IS NULL")
        # Oldest first along the ts index, stopping at the first match.
        sql = (
            "SELECT r.ts FROM ledger_requests AS r JOIN ledger_kinds AS k ON k.id = r.kind"
            f" WHERE {' AND '.join(terms)} ORDER BY r.ts LIMIT 1"
        )
        return int(self._snap.conn.execute(sql, [task, *value, *params]).fetchone()[0])


def _task_change(
    task: str,
    sums: _Sums,
    current_tier: str | None,
    current_model: str | None,
    candidate_tier: str | None,
    target: Target | None,
    in_candidate: bool | None,
) -> TaskChange:
    delta = math.fsum(sums.deltas) if sums.both else None
    return TaskChange(
        task=task,
        calls=sums.calls,
        current_tier=current_tier,
        current_model=current_model,
        candidate_tier=candidate_tier,
        candidate_model=None if target is None else target.key,
        current_cost_usd=_money(sums.now, sums.now_known, sums.calls),
        candidate_cost_usd=_money(sums.then, sums.then_known, sums.calls),
        delta_usd=delta,
        delta_ratio=_ratio(delta, math.fsum(sums.both_now)),
        unpriced=sums.unpriced,
        approximate=sums.approximate,
        in_candidate=bool(in_candidate),
    )


def _money(parts: list[float], known: int, calls: int) -> float | None:
    return math.fsum(parts) if known or not calls else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole
