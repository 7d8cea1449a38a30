"""``tiergate eval --gate CANDIDATE.yaml``: a registry change ships only if every task it touches passes.

The gate finds every task whose calls would run differently under the candidate registry
(``diff.changed_tasks``), runs each one's golden set on the candidate side by side with the current
registry, and passes only if all of them pass. A changed task without a golden set fails the gate: a
re-tiering without its eval is a gamble. No change at all passes ("no task changed").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.evals import golden
from proxy.evals.diff import Change, changed_tasks
from proxy.evals.report import EvalReport, table
from proxy.evals.runner import Options, Progress, evaluate
from proxy.registry import Registry


@dataclass(frozen=True)
class TaskVerdict:
    change: Change
    report: EvalReport | None  # None: no golden set, so no run
    error: str | None = None

    @property
    def verdict(self) -> str:
        return self.report.verdict if self.report is not None else "fail"

    def to_json(self) -> dict[str, Any]:
        if self.report is not None:
            return {**self.report.to_json(), "changed": list(self.change.what)}
        return {"task": self.change.task, "changed": list(self.change.what), "verdict": "fail", "error": self.error}


@dataclass(frozen=True)
class GateReport:
    results: tuple[TaskVerdict, ...]

    @property
    def verdict(self) -> str:
        return "pass" if all(r.verdict == "pass" for r in self.results) else "fail"

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "pass" else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": [r.change.task for r in self.results],
            "results": [r.to_json() for r in self.results],
            "verdict": self.verdict,
        }

    def table(self) -> str:
        if not self.results:
            return "no task changed: the gate passes\n"
        lines = []
        for result in self.results:
            lines.append(f"== {result.change.describe()}")
            lines.append(table(result.report) if result.report is not None else f"FAIL: {result.error}\n")
        passed = sum(1 for r in self.results if r.verdict == "pass")
        lines.append(
            f"gate: {self.verdict.upper()} — {passed} of {len(self.results)} changed tasks pass "
            f"({', '.join(f'{r.change.task} {r.verdict}' for r in self.results)})\n"
        )
        return "\n".join(lines)


async def gate(
    current: Registry,
    candidate: Registry,
    evals: str | Path,
    *,
    db: str,
    options: Options | None = None,
    progress: Progress | None = None,
) -> GateReport:
    """Evaluate every task the candidate changes; one verdict per task, and the gate's."""
    options = options or Options()
    results = []
    for change in changed_tasks(current, candidate):
        folder = Path(evals) / change.task
        if not folder.is_dir():
            missing = f"no golden set for {change.task!r} ({folder} is missing): write its eval before re-tiering it"
            results.append(TaskVerdict(change, None, missing))
            continue
        cases = golden.load(folder)
        if cases.uses_judge and cases.judge.task not in candidate.tasks:
            raise ConfigError(f"{folder / golden.EVAL_FILE}: judge.task", f"{cases.judge.task!r} is not a task")
        before = current if change.task in current.tasks else None
        report = await evaluate(cases, candidate, current_registry=before, db=db, options=options, progress=progress)
        results.append(TaskVerdict(change, report))
    return GateReport(tuple(results))
