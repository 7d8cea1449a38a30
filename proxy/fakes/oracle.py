"""A SIMULATION of models of different skill answering the golden cases: for ``tiergate demo`` and tests only.

Nothing here measures a model. It lets the fake upstreams (``FakeOpenAI(choose=oracle.choose)``, and
``FakeAnthropic`` alike) answer the shipped golden sets the way a frontier, a mid and a small model
plausibly would, so that ``tiergate eval`` can show real verdicts with no keys and no network. Never
point a real eval at it: its pass rates are whatever `MODELS` says they are.

    oracle = Oracle.load("evals", registry)
    fake = FakeOpenAI(choose=chain(outage, oracle.choose))   # an outage script first, then the oracle

- A request is a golden case when its non-system messages have the case's roles and each contains the
  case's text (a tier's prompt variant may add a system message or append to the last user message).
- Which cases a model answers right is decided per (model, task), deterministically: the set's cases
  ranked by a hash of (model, task, case id), the first ``round(skill * n)`` right, so a model's pass
  rate on a task is its skill, to the nearest case, and the same on every run.
- A right answer is built from the case's ``expect`` (the fields, label, reference ...) so it passes the
  set's scorers. A wrong one fails them in a way a weaker model would: a wrong label, a missing or wrong
  field, a fenced JSON, a title that rambles or misses the subject, a summary that drops a fact, prose
  that is off the brief or cut short.
- A judge prompt (`JudgeScorer.messages`) is answered as a judge: ``{"pass", "reason"}``, passing an
  answer exactly when it is the right answer the oracle would give. A judge model of less than full
  skill on the judge task gets its share of those verdicts backwards (the same ranking by hash).
- Anything else is not the oracle's: `choose` returns None and the fake answers as it always does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from proxy.evals.case import Case
from proxy.evals.golden import GoldenSet, load_all
from proxy.evals.scorers import normalize
from proxy.fakes.answers import right_answer, wrong_answer
from proxy.fakes.openai import Behavior, message_text
from proxy.registry import Registry

Chooser = Callable[[dict[str, Any]], Behavior | None]


@dataclass(frozen=True)
class Profile:
    """How good a simulated model is: per task, the fraction of the golden cases it answers right."""

    name: str
    skills: Mapping[str, float] = field(default_factory=dict)
    default: float = 1.0  # tasks not in ``skills``

    def skill(self, task: str) -> float:
        return self.skills.get(task, self.default)


FRONTIER = Profile("frontier")
MID = Profile("mid", MappingProxyType({"extraction": 0.95, "narrative": 0.9}))
# Fine on short, checkable outputs; worse at fields and facts; poor at open prose; an unreliable judge.
SMALL = Profile(
    "small",
    MappingProxyType(
        {
            "title_generation": 0.95,
            "classification": 0.95,
            "relevance": 0.95,
            "extraction": 0.9,
            "summary": 0.9,
            "narrative": 0.5,
            "eval_judge": 0.8,
        }
    ),
)
# The models of the shipped rules.yaml; any other model plays `MID` (see `Oracle.profile`).
MODELS: Mapping[str, Profile] = MappingProxyType(
    {
        "gpt-5.5": FRONTIER,
        "claude-opus-5-5": FRONTIER,
        "gpt-5.4-mini": MID,
        "claude-sonnet-5-5": MID,
        "gpt-5.4-nano": SMALL,
        "claude-haiku-5-5": SMALL,
    }
)

_SYSTEM_ROLES = ("system", "developer")
_JUDGE_MARKS = ("Task input:\n", "Rubric:\n", "Answer to grade:\n")


@dataclass(frozen=True)
class _Entry:
    golden: GoldenSet
    case: Case
    turns: tuple[tuple[str, str], ...]  # (role, text) of the case's non-system messages


class Oracle:
    """Answers golden cases as the model a request names would (see the module docstring)."""

    def __init__(
        self, sets: Mapping[str, GoldenSet], models: Mapping[str, Profile] = MODELS, default: Profile = MID
    ) -> None:
        self.sets = MappingProxyType(dict(sets))
        self.models = models
        self.default = default
        self._entries = tuple(
            _Entry(golden, case, _turns(case.messages)) for golden in self.sets.values() for case in golden.cases
        )

    @classmethod
    def load(cls, root: str | Path, registry: Registry, models: Mapping[str, Profile] = MODELS) -> Oracle:
        """The oracle of the golden sets under ``root`` (``evals/``), as ``golden.load_all`` reads them."""
        return cls(load_all(root, registry), models)

    def profile(self, model: str) -> Profile:
        """The skill of ``model``: its row of the table, else the default (mid) profile."""
        return self.models.get(model, self.default)

    # --- the fake's hook ---------------------------------------------------------------------------

    def choose(self, body: dict[str, Any]) -> Behavior | None:
        """`FakeOpenAI`'s ``choose``: the answer to a golden case or a judge prompt, else None."""
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list):
            return None
        verdict = self.judge(messages, model)
        if verdict is not None:
            return Behavior(text=verdict)
        found = self.find(messages)
        if found is None:
            return None
        text = self.answer(found.task, found.case, model)
        return None if text is None else Behavior(text=text)

    def find(self, messages: Iterable[Any]) -> _Found | None:
        """The golden case these request messages are, or None."""
        turns = _turns(messages)
        best: _Entry | None = None
        for entry in self._entries:
            if len(entry.turns) != len(turns):
                continue
            if all(r == er and et in t for (r, t), (er, et) in zip(turns, entry.turns, strict=True)):
                # A case whose text holds another's matches both: the longer (more specific) one wins.
                if best is None or _size(entry.turns) > _size(best.turns):
                    best = entry
        return None if best is None else _Found(best.golden.task, best.case)

    # --- answers -----------------------------------------------------------------------------------

    def is_right(self, task: str, case_id: str, model: str) -> bool:
        """Whether ``model`` answers this case of ``task``'s golden set right."""
        golden = self.sets[task]
        return _among_first(golden, case_id, model, skill_task=task, salt="answer", profile=self.profile(model))

    def answer(self, task: str, case: Case, model: str) -> str | None:
        """``model``'s answer to ``case`` (None: the case's expect gives nothing to build one from)."""
        golden = self.sets[task]
        if self.is_right(task, case.id, model):
            return right_answer(golden, case)
        return wrong_answer(golden, case, _hash(model, task, case.id, "flavour"))

    # --- the judge ---------------------------------------------------------------------------------

    def judge(self, messages: list[Any], model: str) -> str | None:
        """The verdict JSON for a judge prompt (`JudgeScorer.messages`), or None if it is not one."""
        users = [message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else ""
        if not all(mark in prompt for mark in _JUDGE_MARKS):
            return None
        judged = self._judged_case(prompt)
        if judged is None:
            return None
        golden, case = judged
        rubric_at = prompt.find("Rubric:\n")
        graded = prompt[prompt.find("Answer to grade:\n", rubric_at) + len("Answer to grade:\n") :]
        right = right_answer(golden, case) or ""
        good = bool(right) and normalize(right) in normalize(graded)
        # A judge short of full skill on its task gets its share of cases backwards.
        errs = not _among_first(
            golden, case.id, model, skill_task=golden.judge.task, salt="judge", profile=self.profile(model)
        )
        verdict = good != errs
        if verdict:
            reason = "It does what the input asks and keeps every fact the reference keeps."
        else:
            reason = (
                f"It misses the brief: {case.expect.get('criteria') or 'it does not cover what the reference does'}"
            )
        return orjson.dumps({"pass": verdict, "reason": reason}).decode()

    def _judged_case(self, prompt: str) -> tuple[GoldenSet, Case] | None:
        best: tuple[GoldenSet, Case] | None = None
        for golden in self.sets.values():
            if not golden.uses_judge:
                continue
            for case in golden.cases:
                if f"Task input:\n{case.prompt()}\n\n" in prompt and (
                    best is None or len(case.prompt()) > len(best[1].prompt())
                ):
                    best = (golden, case)
        return best


@dataclass(frozen=True)
class _Found:
    task: str
    case: Case


def chain(*choosers: Chooser | None) -> Chooser:
    """One ``choose`` from several: the first that returns a behaviour wins (e.g. an outage, then the oracle)."""

    def choose(body: dict[str, Any]) -> Behavior | None:
        for chooser in choosers:
            behavior = chooser(body) if chooser is not None else None
            if behavior is not None:
                return behavior
        return None

    return choose


# --- small helpers ------------------------------------------------------------------------------------


def _turns(messages: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(m.get("role")), message_text(m))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") not in _SYSTEM_ROLES
    )


def _size(turns: tuple[tuple[str, str], ...]) -> int:
    return sum(len(text) for _, text in turns)


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _among_first(golden: GoldenSet, case_id: str, model: str, *, skill_task: str, salt: str, profile: Profile) -> bool:
    """Whether the case is among the first ``round(skill * n)`` of the set, ranked by a hash per model."""
    ids = sorted((c.id for c in golden.cases), key=lambda i: _hash(salt, model, golden.task, i))
    right = int(profile.skill(skill_task) * len(ids) + 0.5)
    return case_id in ids[:right]
