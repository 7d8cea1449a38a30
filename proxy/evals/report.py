"""What an eval run found: per side (candidate, current) and per case, the verdict, and how it is shown.

Definitions (the README's "Evals" section repeats them):

- a case passes when a strict majority of its repeats pass (a tie fails); it *flipped* when its repeats
  disagreed. ``reason`` and ``answer`` are those of its first repeat that agrees with its verdict.
- pass rate: passing cases / cases, with a 95% Wilson score interval (``ci95``).
- regressions: cases the candidate fails that the current tier passes.
- verdict: ``pass`` when the candidate's pass rate >= the threshold and, when the golden set sets
  ``max_regressions``, its regressions are no more than that. The current side's own verdict is its pass
  rate against the threshold alone.
- cost: what this run spent on the answers, priced with the registry's prices on the target that served
  each one; an answer reused from the store cost nothing; ``judge_cost_usd`` is the judge's calls, apart.
  An answer whose model has no known price is unpriced: left out of the sum, never counted as $0.
- p50 / p95: nearest rank over the answers' latencies (a reused answer keeps the latency of the call
  that produced it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(passed: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``passed`` successes in ``total`` trials (``(0, 1)`` for no trials)."""
    if total <= 0:
        return 0.0, 1.0
    p = passed / total
    spread = z * z / total
    centre = (p + spread / 2) / (1 + spread)
    half = z * math.sqrt(p * (1 - p) / total + spread / (4 * total)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class CaseResult:
    id: str
    passed: bool
    reason: str
    answer: str
    repeats_passed: int
    repeats: int
    latency_ms: float | None  # the median of its repeats' latencies
    cost_usd: float | None  # what this run spent on its answers (judge apart); None: unpriced

    @property
    def flipped(self) -> bool:
        return 0 < self.repeats_passed < self.repeats


@dataclass(frozen=True)
class SideResult:
    """One side of a run: one registry's tier for the task, over every case."""

    side: str  # "candidate" | "current"
    tier: str
    targets: tuple[str, ...]  # the tier's targets, provider::model, in order
    registry_hash: str
    registry_source: str
    threshold: float
    cases: tuple[CaseResult, ...]
    cost_usd: float | None
    judge_cost_usd: float | None
    unpriced: int  # calls made with tokens on a model without a known price
    answers: int  # cases x repeats
    reused: int  # answers taken from the store (no call made)
    p50_ms: float | None
    p95_ms: float | None

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson(self.passed, self.total)

    @property
    def meets_threshold(self) -> bool:
        # Compared as counts: 0.9 of 10 cases is 9, whatever the float rounding of 9 / 10.
        return self.passed >= math.ceil(self.threshold * self.total - 1e-9)

    @property
    def flipped(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.cases if c.flipped)

    def case(self, case_id: str) -> CaseResult:
        return next(c for c in self.cases if c.id == case_id)


@dataclass(frozen=True)
class Regression:
    """A case the candidate fails and the current tier passes."""

    id: str
    reason: str  # the candidate's
    answer: str  # the candidate's
    current_reason: str
    current_answer: str


@dataclass(frozen=True)
class EvalReport:
    run: str  # the run id: eval_runs.run, requests.eval_run
    ts: str
    task: str
    threshold: float
    max_regressions: int | None
    repeats: int
    golden_source: str
    candidate: SideResult
    current: SideResult | None  # None: no current side ran (see candidate_is_current)
    candidate_is_current: bool = False  # the candidate runs the task as the current registry does

    @property
    def regressions(self) -> tuple[Regression, ...]:
        if self.current is None:
            return ()
        out = []
        for case in self.candidate.cases:
            now = self.current.case(case.id)
            if not case.passed and now.passed:
                out.append(Regression(case.id, case.reason, case.answer, now.reason, now.answer))
        return tuple(out)

    @property
    def verdict(self) -> str:
        """``pass`` or ``fail`` (see the module's definitions)."""
        allowed = self.max_regressions is None or len(self.regressions) <= self.max_regressions
        return "pass" if self.candidate.meets_threshold and allowed else "fail"

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "pass" else 1

    def to_json(self) -> dict[str, Any]:
        """The ``--format json`` object: the candidate's fields at the top, the current side's under ``current``."""
        top = self._side_json(self.candidate, self.verdict, self.regressions)
        current = None
        if self.current is not None:
            current = self._side_json(self.current, "pass" if self.current.meets_threshold else "fail", ())
        return {"run": self.run, **top, "current": current}

    def _side_json(self, side: SideResult, verdict: str, regressions: Sequence[Regression]) -> dict[str, Any]:
        lo, hi = side.ci95
        return {
            "task": self.task,
            "candidate": {"tier": side.tier, "targets": list(side.targets)},
            "threshold": self.threshold,
            "max_regressions": self.max_regressions,
            "repeats": self.repeats,
            "passed": side.passed,
            "total": side.total,
            "pass_rate": side.pass_rate,
            "ci95": [lo, hi],
            "verdict": verdict,
            "regressions": [
                {
                    "id": r.id,
                    "reason": r.reason,
                    "answer": r.answer,
                    "current_reason": r.current_reason,
                    "current_answer": r.current_answer,
                }
                for r in regressions
            ],  # fmt: skip
            "flipped": list(side.flipped),
            "cost_usd": side.cost_usd,
            "judge_cost_usd": side.judge_cost_usd,
            "reused": side.reused,
            "p50_ms": side.p50_ms,
            "p95_ms": side.p95_ms,
            "cases": [{"id": c.id, "passed": c.passed, "reason": c.reason, "answer": c.answer} for c in side.cases],
        }


# --- the table ----------------------------------------------------------------------------------


def table(report: EvalReport) -> str:
    """Both sides side by side, then regressions (reasons, both answers), flips, the candidate's failures."""
    sides = [report.candidate, *([report.current] if report.current is not None else [])]
    head = "candidate vs current" if report.current is not None else "the current tier"
    if report.current is None and not report.candidate_is_current:
        head = "candidate (no current side: the current registry has no such task)"
    lines = [
        f"tiergate eval {report.task}: {head}, {report.candidate.total} cases x {report.repeats} "
        f"repeat{'s' if report.repeats != 1 else ''}, threshold {_pct(report.threshold)}"
        + (f", at most {report.max_regressions} regressions" if report.max_regressions is not None else ""),
        "",
    ]
    rows = [
        ["", *(s.side for s in sides)],
        ["tier", *(s.tier for s in sides)],
        ["targets", *(", ".join(s.targets) for s in sides)],
        ["passed", *(f"{s.passed}/{s.total} ({_pct(s.pass_rate)})" for s in sides)],
        ["95% CI", *(f"{_pct(s.ci95[0])} - {_pct(s.ci95[1])}" for s in sides)],
        ["cost", *(_usd(s.cost_usd) + (f" ({s.unpriced} unpriced)" if s.unpriced else "") for s in sides)],
        ["judge cost", *(_usd(s.judge_cost_usd) for s in sides)],
        ["reused answers", *(f"{s.reused} of {s.answers}" for s in sides)],
        ["p50 / p95 ms", *(f"{_ms(s.p50_ms)} / {_ms(s.p95_ms)}" for s in sides)],
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]

    regressions = report.regressions
    if report.current is not None:
        limit = f" (at most {report.max_regressions} allowed)" if report.max_regressions is not None else ""
        lines += ["", f"Regressions: {len(regressions)}{limit}"]
        for r in regressions:
            lines += [
                f"  {r.id}: {r.reason}",
                f"    candidate: {_clip(r.answer)!r}",
                f"    current:   {_clip(r.current_answer)!r}",
            ]
    for side in sides:
        if side.flipped:
            lines += ["", f"Flipped between repeats ({side.side}): {', '.join(side.flipped)}"]
    failed = [c for c in report.candidate.cases if not c.passed and c.id not in {r.id for r in regressions}]
    if failed:
        lines += ["", "Other cases the candidate fails:"]
        lines += [f"  {c.id}: {c.reason}" for c in failed]
    lines += ["", f"Verdict: {report.verdict.upper()} ({_why(report)})"]
    return "\n".join(lines) + "\n"


def headline(report: EvalReport) -> str:
    """The verdict in one line: the candidate's pass rate and interval, the current side's, the regressions."""
    c = report.candidate
    line = f"{report.task} on {c.tier}: {c.passed}/{c.total} pass ({_pct(c.pass_rate)}, 95% CI {_pct(c.ci95[0])}-{_pct(c.ci95[1])})"
    if report.current is not None:
        n = len(report.regressions)
        line += f"; {report.current.tier} {report.current.passed}/{report.current.total}; {n} regression{'s' if n != 1 else ''}"
    return f"{line} -> {report.verdict.upper()} ({_why(report)})"


def _why(report: EvalReport) -> str:
    c = report.candidate
    sign = ">=" if c.meets_threshold else "<"
    why = f"pass rate {_pct(c.pass_rate)} {sign} threshold {_pct(report.threshold)}"
    if report.max_regressions is not None and report.current is not None:
        n = len(report.regressions)
        why += f", {n} regression{'s' if n != 1 else ''} {'<=' if n <= report.max_regressions else '>'} "
        why += str(report.max_regressions)
    return why


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.6f}"  # an eval run costs cents: show them


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
