"""A SIMULATION of models of different skill answering the golden cases: for ``tiergate demo`` and tests only.

Nothing here measures a model. It lets the fake upstreams (``FakeOpenAI(choose=oracle.choose)``, and
``FakeAnthropic`` alike) answer the shipped golden sets the way a frontier, a mid and a small model
plausibly would, so that ``tiergate eval`` can show real verdicts with no keys and no network. Never
point a real eval at it: its pass rates are whatever `MODELS` says they are.

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
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from proxy.evals.case import Case
from proxy.evals.golden import GoldenSet
from proxy.evals.scorers import JsonFields, JsonSchema, Label, Length, NotContains, ValidJson, normalize
from proxy.fakes.openai import Behavior, message_text

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
# Fine on short, checkable outputs; worse at fields and facts; poor at open prose; a lenient judge.
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
# What a weaker model writes instead of the point.
_VAGUE_TITLES = (
    "Question about a recent issue",
    "Help with an account question",
    "Follow-up on an earlier request",
    "Troubleshooting a setup problem",
)
_FILLER = (
    "There are several things to consider here.",
    "Every situation is different, so the details matter.",
    "In general it is best to keep things clear and simple and to focus on what matters most.",
    "Teams that communicate openly tend to get better results over time.",
    "We hope this helps, and we are always happy to help with anything else you need.",
)
_TRAILING = "and what the team decided to do about it next"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


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

    def profile(self, model: str) -> Profile:
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


# --- right answers ------------------------------------------------------------------------------------


def right_answer(golden: GoldenSet, case: Case) -> str | None:
    """An answer that satisfies the case's expect: its fields, label, reference, answer or number."""
    expect = case.expect
    if isinstance(expect.get("fields"), Mapping):
        return _json(build_json(expect["fields"]))
    if "label" in expect:
        return str(expect["label"])
    if isinstance(expect.get("reference"), str):
        return str(expect["reference"])
    answer = expect.get("answer")
    if isinstance(answer, str):
        return answer
    if isinstance(answer, list) and answer and isinstance(answer[0], str):
        return answer[0]
    number = expect.get("number")
    if isinstance(number, int | float) and not isinstance(number, bool):
        return f"{number}"
    return None


def build_json(fields: Mapping[str, Any]) -> Any:
    """The JSON value whose dotted paths (``a.b[0].c``) hold ``fields``' values."""
    root: Any = None
    for path, value in fields.items():
        parts: list[str | int] = [
            int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"[^.\[\]]+|\[\d+\]", path)
        ]
        root = _put(root, parts, value)
    return root


def _put(node: Any, parts: list[str | int], value: Any) -> Any:
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(head, int):
        items = node if isinstance(node, list) else []
        items.extend([None] * (head + 1 - len(items)))
        items[head] = _put(items[head], rest, value)
        return items
    mapping = node if isinstance(node, dict) else {}
    mapping[head] = _put(mapping.get(head), rest, value)
    return mapping


# --- wrong answers ------------------------------------------------------------------------------------


def wrong_answer(golden: GoldenSet, case: Case, pick: int) -> str | None:
    """An answer a weaker model might give, built to fail the set's scorers; ``pick`` chooses how."""
    expect = case.expect
    if isinstance(expect.get("fields"), Mapping):
        return _wrong_json(golden, expect["fields"], pick)
    if "label" in expect:
        labels = next((list(s.labels.values()) for s in golden.scorers if isinstance(s, Label)), [])
        others = [label for label in labels if normalize(label) != normalize(str(expect["label"]))]
        return others[pick % len(others)] if others else f"not {expect['label']}"
    if isinstance(expect.get("reference"), str):
        flavours = _prose_flavours(golden, case)
        return flavours[pick % len(flavours)](golden, case, pick // len(flavours))
    if "answer" in expect:
        return "I'm not sure."
    number = expect.get("number")
    if isinstance(number, int | float) and not isinstance(number, bool):
        return f"{number * 2 + 1}"
    return None


def _wrong_json(golden: GoldenSet, fields: Mapping[str, Any], pick: int) -> str:
    fences_refused = any(
        isinstance(s, ValidJson | JsonSchema | JsonFields) and not s.spec.get("allow_fences") for s in golden.scorers
    )
    ways = ["wrong value", "missing field"] + (["fenced"] if fences_refused else [])
    way = ways[pick % len(ways)]
    value = build_json(fields)
    if way == "fenced":  # right fields, wrapped in the markdown a model adds when it ignores the format
        return f"```json\n{_json(value)}\n```"
    if way == "missing field" and isinstance(value, dict) and value:
        keys = sorted(value)
        del value[keys[(pick // len(ways)) % len(keys)]]
        return _json(value)
    paths = sorted(fields)
    path = paths[(pick // len(ways)) % len(paths)]
    tolerance = next((float(s.spec.get("tolerance", 0)) for s in golden.scorers if s.kind == "json_fields"), 0.0)
    wrong = dict(fields)
    wrong[path] = _mistake(fields[path], tolerance)
    return _json(build_json(wrong))


def _mistake(value: Any, tolerance: float) -> Any:
    """A plausible misreading of one field's value that no scorer option forgives."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 + int(tolerance)
    if isinstance(value, float):
        return round(value + max(1.0, abs(value) / 10) + tolerance, 2)
    if isinstance(value, str):
        if date := _DATE.match(value):  # off by one day
            day = int(date[3])
            return f"{date[1]}-{date[2]}-{day + 1 if day < 28 else day - 1:02d}"
        words = value.split()
        return " ".join(words[:-1]) if len(words) > 1 else None
    if isinstance(value, list):
        return value[:-1] if value else ["n/a"]
    return "unknown"  # null where the text gave nothing: a model that makes something up


ProseFlavour = Callable[[GoldenSet, Case, int], str]


def _prose_flavours(golden: GoldenSet, case: Case) -> list[ProseFlavour]:
    kinds = {s.kind for s in golden.scorers}
    flavours: list[ProseFlavour] = []
    if "contains" in kinds:
        flavours.append(_misses_a_fact)
    if any(isinstance(s, NotContains) and s.values for s in golden.scorers):
        flavours.append(_preamble)
    if "judge" in kinds:
        # not _rambles: the right answer plus padding would read as right to a judge comparing with it
        flavours += [_off_brief, _cut_short]
    elif _bounds(golden, case).get("max_words") is not None:
        flavours.append(_rambles)
    return flavours or [_off_brief]


def _misses_a_fact(golden: GoldenSet, case: Case, pick: int) -> str:
    terms = case.expect["contains"]
    terms = [terms] if isinstance(terms, str) else list(terms)
    term = str(terms[pick % len(terms)]).casefold()
    reference = str(case.expect["reference"])
    kept = [s for s in _SENTENCE.split(reference) if term not in s.casefold()]
    if kept:
        text = " ".join(kept)
    else:  # one sentence (a title): say something vaguer that names none of it
        text = next((t for t in _VAGUE_TITLES if term not in t.casefold()), "An earlier conversation")
    return re.sub(re.escape(term), "it", text, flags=re.I)


def _preamble(golden: GoldenSet, case: Case, pick: int) -> str:
    opening = next(s.values for s in golden.scorers if isinstance(s, NotContains) and s.values)[0]
    return f"{opening[:1].upper()}{opening[1:]}:\n\n{case.expect['reference']}"


def _rambles(golden: GoldenSet, case: Case, pick: int) -> str:
    limit = int(_bounds(golden, case)["max_words"])
    reference = str(case.expect["reference"])
    if len(_SENTENCE.split(reference)) == 1:  # a title: it trails off into the rest of the conversation
        words, more = reference.split(), _TRAILING.split()
        while len(words) <= limit:
            words += more
        return " ".join(words[: limit + len(more)])
    sentences, i = [reference], pick
    while len(" ".join(sentences).split()) <= limit:
        sentences.append(_FILLER[i % len(_FILLER)])
        i += 1
    return " ".join(sentences)


def _off_brief(golden: GoldenSet, case: Case, pick: int) -> str:
    target = len(str(case.expect["reference"]).split())
    sentences: list[str] = []
    i = pick
    while sum(len(s.split()) for s in sentences) < target:
        sentences.append(_FILLER[i % len(_FILLER)])
        i += 1
    return " ".join(sentences)


def _cut_short(golden: GoldenSet, case: Case, pick: int) -> str:
    return _SENTENCE.split(str(case.expect["reference"]).strip())[0]


def _bounds(golden: GoldenSet, case: Case) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for scorer in golden.scorers:
        if isinstance(scorer, Length):
            bounds.update({k: v for k, v in scorer.spec.items() if k != "type"})
    overrides = case.expect.get("length")
    return {**bounds, **(overrides if isinstance(overrides, Mapping) else {})}


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


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
