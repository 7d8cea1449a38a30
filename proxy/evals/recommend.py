"""``tiergate audit --recommend``: the re-tierings the evidence supports, with what each would have saved.

The loop the product exists for, in one screen: the audit says which tasks cost what; ``tiergate eval``
says which cheaper tiers a task's golden set passes on; this joins the two. A recommendation is a task
whose latest eval of some other tier (or model) than its current one passed, and for which that tier
would have cost less on the task's logged production traffic, priced with the what-if arithmetic (same
tokens, one price sheet). Sorted by the saving.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass

from proxy.evals import candidates
from proxy.ledger.audit import AuditError, Scope, parse_since
from proxy.ledger.snapshot import snapshot
from proxy.ledger.whatif import Traffic
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry


@dataclass(frozen=True)
class Recommendation:
    task: str
    current_tier: str
    tier: str  # the cheaper tier its golden set passed on ("model:provider::model" for a model)
    pass_rate: float
    eval_ts: str
    calls: int
    current_cost_usd: float | None
    cost_usd: float | None
    saving_usd: float
    saving_ratio: float | None


def recommend(
    db: str, registry: Registry, *, since: str | None = None, until: str | None = None
) -> list[Recommendation]:
    """Every supported re-tiering of ``registry``'s tasks that would have cost less on the logged traffic
    (at or after ``since``, before ``until``: ``tiergate audit``'s bounds)."""
    found = []
    scope = Scope(parse_since(since), until=parse_since(until, flag="--until"))
    with snapshot(db) as snap:
        traffic = Traffic(snap, scope)  # summed once, priced per candidate
        for task, tier, pass_rate, ts in _passed_elsewhere(snap.conn, registry):
            try:
                if tier.startswith("model:"):
                    candidate = candidates.with_model(registry, task, tier.removeprefix("model:"))
                else:
                    candidate = candidates.with_tier(registry, task, tier)
            except candidates.CandidateError:
                continue  # the tier (or its provider) is gone from the registry since the eval
            change = traffic.change(task, candidate, Pricer(candidate.prices, price_ids(candidate)))
            if change is None or change.delta_usd is None or change.delta_usd >= 0:
                continue
            found.append(
                Recommendation(
                    task=task,
                    current_tier=registry.tasks[task].tier,
                    tier=tier,
                    pass_rate=pass_rate,
                    eval_ts=ts,
                    calls=change.calls,
                    current_cost_usd=change.current_cost_usd,
                    cost_usd=change.candidate_cost_usd,
                    saving_usd=-change.delta_usd,
                    saving_ratio=None if change.delta_ratio is None else -change.delta_ratio,
                )
            )
    return sorted(found, key=lambda r: -r.saving_usd)


def _passed_elsewhere(conn: sqlite3.Connection, registry: Registry) -> list[tuple[str, str, float, str]]:
    """(task, tier, pass rate, time) of each (task, tier)'s latest eval, when it passed on a tier the task
    is not on now."""
    sql = (
        "SELECT task, tier, verdict, pass_rate, MAX(ts) AS ts FROM eval_runs WHERE side = 'candidate' "
        "GROUP BY task, tier"
    )
    try:
        latest = [dict(r) for r in conn.execute(sql)]
    except sqlite3.OperationalError:
        return []  # no eval tables yet
    return [
        (r["task"], r["tier"], float(r["pass_rate"]), r["ts"])
        for r in latest
        if r["verdict"] == "pass" and r["task"] in registry.tasks and r["tier"] != registry.tasks[r["task"]].tier
    ]


def render(found: list[Recommendation], fmt: str) -> str:
    """The recommendations as a table (for people) or JSON (exact values)."""
    if fmt == "json":
        total = sum(r.saving_usd for r in found)
        return json.dumps({"recommendations": [asdict(r) for r in found], "saving_usd": total}, indent=2) + "\n"
    if fmt != "table":
        raise AuditError(f"--format: --recommend prints table or json, got {fmt!r}")
    if not found:
        return (
            "No recommendation: no task's golden set has passed on a cheaper tier yet.\n"
            "Run `tiergate eval TASK --tier <cheaper tier>` to gather the evidence.\n"
        )
    lines = ["Re-tierings the evals support, by what they would have saved on the logged traffic", ""]
    header = ["task", "now", "->", "eval", "calls", "cost now", "would cost", "saving"]
    body = [
        [r.task, r.current_tier, r.tier, f"pass {r.pass_rate * 100:.0f}% ({r.eval_ts[:10]})", f"{r.calls:,}",
         _usd(r.current_cost_usd), _usd(r.cost_usd),
         f"{_usd(r.saving_usd)} ({r.saving_ratio * 100:.0f}%)" if r.saving_ratio is not None else _usd(r.saving_usd)]
        for r in found
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    for row in (header, *body):
        lines.append(
            "  ".join(
                c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    lines += ["", "Ship one with a one-line change under `tasks:` and `tiergate eval --gate` in CI."]
    return "\n".join(lines) + "\n"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"
