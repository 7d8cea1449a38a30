"""Answers to golden cases built from their ``expect``: a right one that passes the set's scorers, and wrong
ones that fail them the way a weaker model would. Part of the demo's SIMULATION (``proxy.fakes.oracle``).

Right: the fields as JSON (``build_json`` of the dotted paths), else the label, the reference, the answer or
the number. Wrong, by what the set scores: a label of the set other than the case's; JSON with one field
missing or misread, or fenced in markdown where fences are refused; for prose, a version that drops one of
the facts ``expect.contains`` names, opens with a phrase ``not_contains`` refuses, rambles past
``max_words``, or (judge-scored) is generic filler or stops after a sentence. Each is built to fail by
construction; ``tests/test_oracle.py`` checks it against the shipped sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.evals.case import Case
from proxy.evals.golden import GoldenSet
from proxy.evals.scorers import JsonFields, JsonSchema, Label, Length, NotContains, ValidJson, normalize

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


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
