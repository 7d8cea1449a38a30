"""The classifier commands' output: a table for people (rounded) or JSON for tools (exact values).

``training`` writes ``tiergate classifier train``'s evaluation, ``explanation`` one ``tiergate classify``
decision, ``agreement`` the ``tiergate audit --classifier`` report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from proxy.classify.agreement import Agreement, TaskAgreement
from proxy.classify.explain import Explanation
from proxy.classify.training import TrainingReport

FORMATS = ("table", "json")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected table or json, got {fmt!r}")


# --- tiergate classifier train ------------------------------------------------------------------


def training(r: TrainingReport, fmt: str) -> str:
    check_format(fmt)
    if fmt == "json":
        return _json(
            {
                "examples": r.examples,
                "tasks": list(r.tasks),
                "accuracy": r.accuracy,
                "per_task": {t: dict(v) for t, v in r.per_task.items()},
                "out": r.out,
                "folds": r.folds,
                "confusion": {t: {p: r.confusion[t].get(p, 0) for p in r.tasks} for t in r.tasks},
                "temperature": r.temperature,
                "untrained": list(r.untrained),
                "left_out": dict(r.left_out),
                "foreign_key_rows": r.foreign,
                "since": r.since,
                "from": r.first_ts,
                "to": r.last_ts,
            }
        )
    title = (
        f"Trained on {r.examples:,} header-tagged calls of {len(r.tasks)} tasks, "
        f"{_when(r.first_ts)} to {_when(r.last_ts)} UTC"
    )
    accuracy = f"{r.folds}-fold accuracy {_pct(r.accuracy)} (calibration temperature {r.temperature:g})"
    scores = _grid(
        ["task", "examples", "precision", "recall"],
        [[t, f"{int(v['examples']):,}", _pct(v["precision"]), _pct(v["recall"])] for t, v in r.per_task.items()],
        ["TOTAL", f"{r.examples:,}", "", _pct(r.accuracy)],
    )
    confusion = _grid(
        ["true \\ predicted", *r.tasks],
        [[t, *(_count(r.confusion[t].get(p, 0)) for p in r.tasks)] for t in r.tasks],
    )
    notes = [f"left out: {t} ({n:,} calls): not a task of the registry" for t, n in sorted(r.left_out.items())]
    if r.foreign:
        notes.append(
            f"left out: {r.foreign:,} calls hashed under another feature key (TIERGATE_FEATURE_KEY changed since)"
        )
    if r.untrained:
        notes.append(f"no tagged traffic, so the model never picks them: {', '.join(r.untrained)}")
    notes.append(
        f"wrote {r.out}. To use it: classifier: {{model: {r.out}, min_confidence: 0.7}} in rules.yaml (a relative "
        "path is read from rules.yaml's folder); a server already using that file reloads it within a second."
    )
    return _lines(
        title,
        accuracy,
        "",
        *scores,
        "",
        "Confusion (held-out predictions; rows: the header's task, columns: the classifier's)",
        *confusion,
        "",
        *notes,
    )


# --- tiergate classify --------------------------------------------------------------------------


def explanation(e: Explanation, fmt: str) -> str:
    check_format(fmt)
    d = e.decision
    if fmt == "json":
        return _json(
            {
                "task": e.task,
                "source": d.source,
                "confidence": d.confidence,
                "top": [[t, p] for t, p in d.top],
                "tier": e.tier,
                "targets": list(e.targets),
                "coverage": d.coverage,
                "abstained": e.abstained,
                "reasons": list(e.reasons),
                "predicted": d.predicted,
                "rule": e.rule.name if e.rule is not None else None,
            }
        )
    lines = [
        f"task:    {e.task}",
        f"source:  {d.source} ({_why(e)})",
        f"tier:    {e.tier}",
        f"targets: {', '.join(e.targets)}" + (" (in fallback order)" if len(e.targets) > 1 else ""),
    ]
    if e.model is not None and d.top:
        role = (
            "shadow mode: the ledger keeps its choice as task_predicted"
            if e.abstained is None
            else f"min_confidence {e.min_confidence:g}"
        )
        lines += ["", f"classifier {e.model} ({role})"]
        lines += [f"  coverage {d.coverage:.2f} (floor {e.min_coverage:g})"]
        width = max(len(t) for t, _ in d.top)
        lines += [f"  {t.ljust(width)}  {p:.3f}" for t, p in d.top]
    return _lines(*lines)


def _why(e: Explanation) -> str:
    d = e.decision
    if d.source == "header":
        return f"X-Task-Type: {d.task}"
    if e.rule is not None:
        return f"the first classify rule that matched: {e.rule.name} -> {e.rule.task}"
    if d.source == "classifier":
        assert d.confidence is not None and d.coverage is not None
        return f"{d.task} at {d.confidence:.3f} >= min_confidence {e.min_confidence:g}, coverage {d.coverage:.2f}"
    if e.model is None:
        return "no X-Task-Type, no classify rule matched, no classifier configured"
    return "no X-Task-Type, no classify rule matched, the classifier abstained: " + "; ".join(e.reasons)


# --- tiergate audit --classifier ----------------------------------------------------------------


def agreement(a: Agreement, fmt: str) -> str:
    check_format(fmt)
    if fmt == "json":
        doc: dict[str, Any] = asdict(a)
        doc["from"], doc["to"] = doc.pop("first_ts"), doc.pop("last_ts")
        doc["periods"] = [
            {
                "period": p.period,
                "scored": p.scored,
                "agreement": p.agreement,
                "tasks": {t: {"agreed": x, "scored": n, "agreement": x / n} for t, (x, n) in p.tasks.items()},
            }
            for p in a.periods
        ]
        return _json(doc)
    if not a.calls:
        return "No requests in the ledger for this period.\n"
    sources = _grid(
        ["source", "calls", "%calls", "mean conf."],
        [
            [s.source, f"{s.calls:,}", _pct(s.share), "" if s.mean_confidence is None else f"{s.mean_confidence:.3f}"]
            for s in a.sources
        ],
        ["TOTAL", f"{a.calls:,}", "", ""],
    )
    lines = [f"Classifier on {a.calls:,} calls, {_when(a.first_ts)} to {_when(a.last_ts)} UTC", ""]
    lines += ["How calls were decided", *sources, ""]
    if not a.total.scored:
        lines.append(
            f"Shadow agreement: none of the {a.tagged:,} header-tagged calls was scored (no classifier model was "
            "loaded when they ran: classifier: in rules.yaml)."
        )
        return _lines(*lines)
    lines += ["Shadow agreement on header-tagged calls (the classifier's choice against the header's)"]
    lines += _grid(
        ["task", "scored", "agreed", "agreement", "most frequent miss"],
        [_agreement_cells(t) for t in a.tasks],
        _agreement_cells(a.total),
    )
    unscored = a.tagged - a.total.scored
    if unscored:
        lines.append(f"{unscored:,} header-tagged calls were not scored (no model was loaded when they ran).")
    tasks = [t.task for t in a.tasks]
    lines += ["", f"Drift: agreement by {a.by}" + (" (the week of its Monday)" if a.by == "week" else "")]
    lines += _grid(
        [a.by, "scored", "all", *tasks],
        [[p.period, f"{p.scored:,}", _pct(p.agreement), *(_cell(p.tasks.get(t)) for t in tasks)] for p in a.periods],
    )
    return _lines(*lines)


def _agreement_cells(t: TaskAgreement) -> list[str]:
    miss = f"{t.miss} ({t.miss_calls:,})" if t.miss is not None else ""
    return [t.task, f"{t.scored:,}", f"{t.agreed:,}", _pct(t.agreement), miss]


def _cell(cell: tuple[int, int] | None) -> str:
    return "" if cell is None else f"{_pct(cell[0] / cell[1])} of {cell[1]:,}"


# --- helpers --------------------------------------------------------------------------------------


def _grid(header: list[str], body: Sequence[list[str]], total: list[str] | None = None) -> list[str]:
    """Aligned lines: the first column (and the last, if it is text) left, numbers right; rules around the body."""
    every = [header, *body, *([total] if total else [])]
    widths = [max(len(line[i]) for line in every) for i in range(len(header))]
    text = {0} | ({len(header) - 1} if header[-1] == "most frequent miss" else set())

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [line(header), rule, *(line(cells) for cells in body)]
    return out + [rule, line(total)] if total else out


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _count(n: int) -> str:
    return f"{n:,}" if n else "."


def _when(ts: str | None) -> str:
    return "-" if ts is None else ts[:19].replace("T", " ")
