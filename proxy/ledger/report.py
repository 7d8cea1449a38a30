"""The audit's output: ``render`` writes an ``audit.Summary`` or ``whatif.WhatIf`` as a table (rounded, for
people), CSV or JSON (exact values, for tools); ``report`` chains ``audit.summarize`` or
``whatif.what_if`` and ``render`` for ``tiergate audit``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from proxy.ledger.audit import (
    GROUPINGS,
    MONTH_DAYS,
    AuditError,
    EvalVerdict,
    Group,
    Scope,
    Summary,
    last_evals,
    parse_since,
    summarize,
)
from proxy.ledger.whatif import TaskChange, WhatIf, what_if
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry

FORMATS = ("table", "csv", "json")


def render(
    result: Summary | WhatIf, fmt: str, eval_left_out: int = 0, evals: Mapping[str, EvalVerdict] | None = None
) -> str:
    """``result`` as ``table`` (rounded, for people), ``csv`` or ``json`` (exact values, for tools).

    ``eval_left_out``: eval calls the rows leave out, said under the table and in the JSON
    (``eval_calls_left_out``), so traffic is never dropped silently. ``evals``: per task, its last eval
    verdict on its current tier (a by-task summary shows it beside each task).
    """
    if fmt not in FORMATS:
        raise AuditError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    records, first = _records(result)
    evals = evals if isinstance(result, Summary) and result.by == "task" else None
    if evals is not None:
        for record in records[:-1]:
            verdict = evals.get(record["task"])
            record["eval_tier"] = verdict.tier if verdict else None
            record["eval_verdict"] = verdict.verdict if verdict else None
            record["eval_pass_rate"] = verdict.pass_rate if verdict else None
            record["eval_ts"] = verdict.ts if verdict else None
    if fmt == "csv":
        return _csv(records, first)
    if fmt == "json":
        about = {**_about(result), "eval_calls_left_out": eval_left_out}
        return json.dumps({**about, "rows": records[:-1], "total": records[-1]}, indent=2) + "\n"
    text = _summary_table(result, evals) if isinstance(result, Summary) else _what_if_table(result)
    if eval_left_out:
        s = "s" if eval_left_out != 1 else ""
        text += f"\n{eval_left_out:,} eval call{s} left out (tiergate eval's traffic; --include-eval counts them).\n"
    return text


def _records(result: Summary | WhatIf) -> tuple[list[dict[str, Any]], str]:
    """Every line then the total as plain dicts; the first column is named after the grouping."""
    if isinstance(result, WhatIf):
        return [asdict(c) for c in (*result.tasks, result.total)], "task"
    lines = [{result.by: g.key, **asdict(g)} for g in (*result.groups, result.total)]
    for line in lines:
        del line["key"]
    return lines, result.by


def _about(result: Summary | WhatIf) -> dict[str, Any]:
    if isinstance(result, WhatIf):
        return {"candidate": result.source, "rolled_up_calls_left_out": result.rolled_up}
    total = result.total
    month = {
        name: result.per_month(value)
        for name, value in (("cost_usd", total.cost_usd), ("baseline_cost_usd", total.baseline_cost_usd),
                            ("savings_usd", total.savings_usd))
    }  # fmt: skip
    return {
        "by": result.by, "from": result.first_ts, "to": result.last_ts, "rolled_up_calls": result.rolled_up,
        "period_days": result.period_days, "per_month": {"days": MONTH_DAYS, **month},
    }  # fmt: skip


def _csv(records: list[dict[str, Any]], first: str) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else [first], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)  # floats are written with repr: exact, they parse back to the same value
    return out.getvalue()


def _summary_table(s: Summary, evals: Mapping[str, EvalVerdict] | None = None) -> str:
    if not s.total.calls:
        return "No requests in the ledger for this period.\n"
    title = f"Workload by {s.by}: {s.total.calls:,} calls, {_when(s.first_ts)} to {_when(s.last_ts)} UTC"
    ranked = list(enumerate(s.groups, 1))
    header = [
        "#",
        s.by,
        "calls",
        "input",
        "cached in",
        "output",
        "cost",
        "%cost",
        "unpriced",
        "baseline",
        "savings",
        "%saved",
    ]
    cached = s.total.cached > 0  # the cache's columns, once it has answered anything
    if cached:
        header += ["cached", "cache saved"]
    if evals is not None:
        header.append("last eval")

    def cells(g: Group, total: bool = False) -> list[str]:
        out = _cost_cells(g)
        if cached:
            out += [f"{g.cached:,}", _usd(g.cache_saved_usd)]
        if evals is not None:
            out.append("" if total else _eval_cell(evals.get(g.key)))
        return out

    cost = _grid(header, [[str(i), *cells(g)] for i, g in ranked], ["", *cells(s.total, total=True)])
    traffic = _grid(
        ["#", s.by, "calls", "%calls", "p50 ms", "p95 ms", "errors", "discon.", "fallback", "estim."],
        [[str(i), *_traffic_cells(g)] for i, g in ranked],
        ["", *_traffic_cells(s.total)],
    )
    days = s.period_days
    span = f"{days:,.1f} days, first call to last" if days > 1 else "under a day, counted as one"
    notes = [
        f"per {MONTH_DAYS} days at this rate ({span}):",
        f"  cost {_usd(s.per_month(s.total.cost_usd))}, baseline {_usd(s.per_month(s.total.baseline_cost_usd))}, "
        f"savings {_usd(s.per_month(s.total.savings_usd))} ({_pct(s.total.savings_share)} of the baseline)",
    ]
    if s.total.unpriced:
        notes.append(f"unpriced: {s.total.unpriced} of {s.total.calls:,} calls had tokens but no known price;")
        notes.append("cost and savings leave them out (price their model under `prices:` in rules.yaml).")
    if s.rolled_up:
        kept = s.total.calls - s.rolled_up
        notes.append(f"rolled up: {s.rolled_up:,} calls are counted from the daily rollup (retention deleted their")
        notes.append(f"rows); p50 and p95 cover only the {kept:,} calls still in `requests`.")
    if s.total.latency_estimated or any(g.latency_estimated for g in s.groups):
        notes.append("≈: p50 and p95 estimated from a 1-in-16 sample of the line's latencies (lines of")
        notes.append("over 3,000 calls in a period of over 500,000); every other figure is exact.")
    return _lines(title, "", "Cost", *cost, "", "Traffic", *traffic, *_footer(notes))


def _eval_cell(verdict: EvalVerdict | None) -> str:
    if verdict is None:
        return "none"
    return f"{verdict.verdict} {verdict.pass_rate * 100:.0f}% on {verdict.tier}, {verdict.ts[5:10]}"


def _cost_cells(g: Group) -> list[str]:
    return [
        g.key, f"{g.calls:,}", f"{g.input_tokens:,}", f"{g.cached_tokens:,}", f"{g.output_tokens:,}", _usd(g.cost_usd),
        _pct(g.cost_share), f"{g.unpriced:,}", _usd(g.baseline_cost_usd), _usd(g.savings_usd), _pct(g.savings_share),
    ]  # fmt: skip


def _traffic_cells(g: Group) -> list[str]:
    return [
        g.key, f"{g.calls:,}", _pct(g.call_share), _ms(g.p50_ms, g.latency_estimated), _ms(g.p95_ms, g.latency_estimated), _pct(g.error_rate),
        _pct(g.disconnect_rate), _pct(g.fallback_rate), _pct(g.estimated_share),
    ]  # fmt: skip


def _what_if_table(w: WhatIf) -> str:
    if not w.total.calls:
        return "No requests in the ledger for this period.\n"
    grid = _grid(
        ["task", "calls", "current", "what-if", "delta", "delta%", "change"],
        [_change_cells(c) for c in w.tasks],
        _change_cells(w.total),
    )
    notes = [
        _note(w.tasks, lambda c: c.approximate, "approximate tokens (another provider type's tokenizer, or estimated)"),
        _note(w.tasks, lambda c: c.unpriced, "no known price on one side (left out of the delta)"),
        _note(w.tasks, lambda c: c.calls * (not c.in_candidate), "not in the candidate (priced as served)"),
    ]
    if w.rolled_up:
        notes.append(f"rolled up (left out: the daily rollup keeps no token counts to price):\n  {w.rolled_up:,} calls")
    notes = [n for n in notes if n]
    title = f"What-if: the {w.total.calls:,} logged calls priced under {w.source}"
    return _lines(title, "", *grid, *_footer(notes))


def _change_cells(c: TaskChange) -> list[str]:
    now = f"{c.current_tier or '-'} {(c.current_model or '-').rpartition('::')[2]}"
    then = f"{c.candidate_tier} {(c.candidate_model or '').rpartition('::')[2]}"
    if c.task == "TOTAL":
        change = ""
    elif not c.in_candidate:
        change = f"{now} (not in candidate)"
    else:
        change = f"= {then}" if now == then else f"{now} -> {then}"
    return [
        c.task, f"{c.calls:,}", _usd(c.current_cost_usd), _usd(c.candidate_cost_usd), _usd(c.delta_usd),
        _pct(c.delta_ratio, signed=True), change,
    ]  # fmt: skip


def _note(changes: Sequence[TaskChange], count: Callable[[TaskChange], int], what: str) -> str:
    hits = [f"{c.task} ({count(c)} of {c.calls})" for c in changes if count(c)]
    return f"{what}:\n  {', '.join(hits)}" if hits else ""


def _grid(header: list[str], body: list[list[str]], total: list[str]) -> list[str]:
    """Aligned lines: text columns (the grouping, the change) left, numbers right; a rule around the body."""
    widths = [max(len(line[i]) for line in (header, *body, total)) for i in range(len(header))]
    left = {header.index(h) for h in header if h in {*GROUPINGS, "change", "last eval"}}

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [line(header), rule, *(line(cells) for cells in body), rule, line(total)]


def _footer(notes: list[str]) -> list[str]:
    return ["", *notes] if notes else []


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _usd(value: float | None) -> str:
    """Dollars to 4 decimals, or to 3 significant digits when that takes more (up to 8: $0.0000350, not
    $0.0000), so a line of small calls still shows what it cost."""
    if value is None:
        return "-"
    size = abs(value)
    digits = 4 if size == 0 else min(max(4, 2 - math.floor(math.log10(size))), 8)
    return f"{'-' if value < 0 else ''}${size:,.{digits}f}"


def _pct(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value * 100:{'+' if signed else ''}.1f}%"


def _ms(value: float | None, estimated: bool = False) -> str:
    return "-" if value is None else f"{'≈' if estimated else ''}{value:,.1f}"


def _when(ts: str | None) -> str:
    return "-" if ts is None else ts[:19].replace("T", " ")


# --- the CLI's one call -------------------------------------------------------------------------


def report(
    db: str,
    *,
    since: str | None = None,
    by: str | None = None,
    fmt: str = "table",
    candidate: Registry | None = None,
    now: datetime | None = None,
    include_eval: bool = False,
    until: str | None = None,
    tasks: Sequence[str] = (),
    models: Sequence[str] = (),
) -> str:
    """``tiergate audit``: read the ledger at ``db`` and render its summary, or the what-if under ``candidate``.

    Eval traffic is left out (and counted under the table) unless ``include_eval``. ``since``/``until``
    bound the period (``until`` exclusive); ``tasks``/``models`` keep only those calls (not with the what-if).
    """
    if fmt not in FORMATS:
        raise AuditError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if candidate is not None and by not in (None, "task"):
        raise AuditError("--what-if compares per task; drop --by")
    scope = Scope(parse_since(since, now), include_eval, parse_since(until, now, "--until"))
    if candidate is not None and (tasks or models):
        raise AuditError("--what-if re-prices every task: drop --task and --model")
    if candidate is not None:
        result: Summary | WhatIf = what_if(db, candidate, Pricer(candidate.prices, price_ids(candidate)), scope)
        return render(result, fmt, result.eval_left_out)
    summary = summarize(db, by or "task", scope, tasks=tasks, models=models)
    return render(summary, fmt, summary.eval_left_out, last_evals(db))
