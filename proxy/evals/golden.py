"""``evals/<task>/`` -> a validated, frozen ``GoldenSet``: the task's cases and how they are scored.

    evals/<task>/eval.yaml      scorers, pass threshold, optional max_regressions, judge settings
    evals/<task>/cases.jsonl    one case per line: id, messages, optional request params, expect

Validated as strictly as rules.yaml: an unknown key, a bad value, a duplicate case id, or a case whose
``expect`` lacks what a scorer reads is a ``ConfigError`` of one line naming the file, the line and the
dotted path, e.g. ``evals/title_generation/cases.jsonl:7: expect.answer: expected a string``. A task
folder that names no task of the registry is refused too (a renamed task must take its golden set along).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from proxy import yamldoc
from proxy.errors import ConfigError
from proxy.evals.case import Case
from proxy.evals.scorers import Scorer, Where, build_scorer
from proxy.registry import Registry

EVAL_FILE = "eval.yaml"
CASES_FILE = "cases.jsonl"
DEFAULT_JUDGE_TASK = "eval_judge"
# Request fields a case may set beside its messages (the rest of a chat request is tiergate's or the tier's).
CASE_PARAMS = frozenset(
    {
        "response_format", "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "max_tokens",
        "max_completion_tokens", "stop", "seed", "reasoning_effort", "metadata", "presence_penalty",
        "frequency_penalty", "logit_bias",
    }
)  # fmt: skip
_CASE_KEYS = frozenset({"id", "messages", "expect", "note"}) | CASE_PARAMS
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class JudgeSettings:
    task: str = DEFAULT_JUDGE_TASK  # the registry task that judges (routed, priced, ledgered like any call)
    rubric: str | None = None  # the default rubric of judge scorers that name none


@dataclass(frozen=True)
class GoldenSet:
    task: str
    cases: tuple[Case, ...]
    scorers: tuple[Scorer, ...]  # a case passes when every scorer passes
    threshold: float  # the fraction of cases that must pass
    max_regressions: int | None = None  # cases the candidate may fail that the current tier passes
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    repeats: int = 1  # runs of each case; a case passes by majority
    description: str = ""
    source: str = ""  # the task's folder

    @property
    def uses_judge(self) -> bool:
        return any(s.kind == "judge" for s in self.scorers)


def load(folder: str | Path, task: str | None = None) -> GoldenSet:
    """The golden set in ``folder`` (``evals/<task>``); ``task`` defaults to the folder's name."""
    folder = Path(folder)
    name = task or folder.name
    spec_path, cases_path = folder / EVAL_FILE, folder / CASES_FILE
    spec = _read_spec(spec_path)
    judge = _judge(spec.get("judge"), f"{spec_path}: judge")
    items = spec["scorers"]
    if not isinstance(items, list):
        raise ConfigError(f"{spec_path}: scorers", "expected a list of scorers")
    where = Where(folder, judge.rubric)
    scorers = tuple(build_scorer(item, f"{spec_path}: scorers[{i}]", where) for i, item in enumerate(items))
    if not scorers:
        raise ConfigError(f"{spec_path}: scorers", "at least one scorer is required")
    cases = _read_cases(cases_path)
    for case in cases:
        for scorer in scorers:
            scorer.check_case(case, f"{cases_path}:{case.line}: expect")
    return GoldenSet(
        task=name,
        cases=cases,
        scorers=scorers,
        threshold=_fraction(spec["threshold"], f"{spec_path}: threshold"),
        max_regressions=_count(spec.get("max_regressions"), f"{spec_path}: max_regressions"),
        judge=judge,
        repeats=_count(spec.get("repeats", 1), f"{spec_path}: repeats", minimum=1) or 1,
        description=_text(spec.get("description", ""), f"{spec_path}: description"),
        source=str(folder),
    )


def load_all(root: str | Path, registry: Registry) -> dict[str, GoldenSet]:
    """Every golden set under ``root`` (``evals/``), checked against the registry's tasks."""
    root = Path(root)
    if not root.is_dir():
        return {}
    sets: dict[str, GoldenSet] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if folder.name not in registry.tasks:
            known = ", ".join(sorted(registry.tasks))
            raise ConfigError(str(folder), f"{folder.name!r} is not a task of the registry (tasks: {known})")
        golden = load(folder)
        if golden.uses_judge and golden.judge.task not in registry.tasks:
            raise ConfigError(
                f"{folder / EVAL_FILE}: judge.task", f"{golden.judge.task!r} is not a task of the registry"
            )
        sets[folder.name] = golden
    return sets


# --- eval.yaml ----------------------------------------------------------------------------------


_SPEC_KEYS = {"threshold", "scorers", "max_regressions", "judge", "repeats", "description"}


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read it: {exc.strerror or exc}") from None
    try:
        raw = yamldoc.load(text, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.path}" if exc.path else "", str(exc).removeprefix(f"{exc.path}: ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "expected a mapping (threshold, scorers, ...)")
    for key in raw:
        if key not in _SPEC_KEYS:
            raise ConfigError(f"{path}: {key}", f"unknown key (allowed: {', '.join(sorted(_SPEC_KEYS))})")
    for key in ("threshold", "scorers"):
        if key not in raw:
            raise ConfigError(f"{path}: {key}", "is required")
    return raw


def _judge(node: Any, path: str) -> JudgeSettings:
    if node is None:
        return JudgeSettings()
    if not isinstance(node, dict):
        raise ConfigError(path, "expected a mapping (task, rubric)")
    for key in node:
        if key not in ("task", "rubric"):
            raise ConfigError(f"{path}.{key}", "unknown key (allowed: rubric, task)")
    return JudgeSettings(
        task=_text(node.get("task", DEFAULT_JUDGE_TASK), f"{path}.task", empty=False),
        rubric=_text(node["rubric"], f"{path}.rubric", empty=False) if "rubric" in node else None,
    )


# --- cases.jsonl --------------------------------------------------------------------------------


def _read_cases(path: Path) -> tuple[Case, ...]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read it: {exc.strerror or exc}") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(where, f"not a JSON object: {exc.msg}") from None
        case = _case(raw, where, number)
        if case.id in seen:
            raise ConfigError(f"{where}: id", f"{case.id!r} is already the id of line {seen[case.id]}")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise ConfigError(str(path), "no cases: a golden set needs at least one")
    return tuple(cases)


def _case(raw: Any, where: str, number: int) -> Case:
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a JSON object (id, messages, expect)")
    for key in raw:
        if key not in _CASE_KEYS:
            raise ConfigError(f"{where}: {key}", "unknown key (a case has id, messages, expect, note, request params)")
    for key in ("id", "messages", "expect"):
        if key not in raw:
            raise ConfigError(f"{where}: {key}", "is required")
    case_id = _text(raw["id"], f"{where}: id", empty=False)
    messages = raw["messages"]
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: messages", "expected a non-empty list of messages")
    for i, message in enumerate(messages):
        here = f"{where}: messages[{i}]"
        if not isinstance(message, dict):
            raise ConfigError(here, "expected an object with role and content")
        if message.get("role") not in _ROLES:
            raise ConfigError(
                f"{here}.role", f"expected one of {', '.join(sorted(_ROLES))}, got {message.get('role')!r}"
            )
        if "content" not in message and "tool_calls" not in message:
            raise ConfigError(f"{here}.content", "is required")
    if not isinstance(raw["expect"], dict):
        raise ConfigError(f"{where}: expect", "expected an object (what the scorers read)")
    params = {k: v for k, v in raw.items() if k in CASE_PARAMS}
    return Case(
        id=case_id,
        messages=tuple(MappingProxyType(m) for m in messages),
        params=MappingProxyType(params),
        expect=MappingProxyType(raw["expect"]),
        line=number,
    )


# --- small checks -------------------------------------------------------------------------------


def _fraction(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(path, f"expected a fraction of cases in (0, 1], got {value!r}")
    return float(value)


def _count(value: Any, path: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(path, f"expected a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, path: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(path, "expected a non-empty string" if not empty else "expected a string")
    return value
