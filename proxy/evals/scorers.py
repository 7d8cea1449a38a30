"""Scorers: does one answer satisfy one case? Each is a small class picked by ``type`` from ``SCORERS``.

Options come from ``eval.yaml`` (checked when the golden set loads); per-case values come from the
case's ``expect`` (checked against every case at load too, so ``tiergate check`` catches a case that
lacks what its scorer reads). A case passes when every scorer of its set passes.

    exact, normalized   answer equals expect[field] (default field: answer; a string or a list of them)
    contains            every string of expect.contains is in the answer (case-insensitive by default)
    not_contains        no string of expect.not_contains, nor of the option values, is in the answer
    regex               the answer matches the option pattern, else expect.regex
    valid_json          the answer is one JSON value (option allow_fences: a ```json block is unwrapped)
    json_schema         the answer's JSON validates against the option schema / schema_file, else expect.schema,
                        else the schema the case's own response_format asked for (type json_schema)
    json_fields         each dotted path of expect.fields has that value in the answer's JSON
    number              the answer's first number is expect.number, within tolerance / relative
    length              min_chars, max_chars, min_words, max_words (options; expect.length overrides)
    label               the answer, normalised, is one of the option labels, and expect.label when given
    judge               an LLM judge (the registry's eval_judge task) applies a rubric: pass/fail with a reason
    custom              function: "package.module:fn", fn(answer, case) -> bool | Verdict | (bool, reason)

Custom scorers and judges may be sync or async; one that raises fails the case with the error as reason.
"""

from __future__ import annotations

import importlib
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson

from proxy import yamldoc
from proxy.errors import ConfigError
from proxy.evals.case import Case


@dataclass(frozen=True)
class Answer:
    """What a scorer reads: the answer's text (its tool-call arguments when it has no text) and the message."""

    text: str
    message: Mapping[str, Any]

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> Answer:
        content = message.get("content")
        if isinstance(content, str) and content:
            return cls(content, message)
        calls = message.get("tool_calls") or []
        arguments = [c.get("function", {}).get("arguments", "") for c in calls if isinstance(c, dict)]
        return cls("\n".join(str(a) for a in arguments), message)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


@dataclass(frozen=True)
class Where:
    """What a scorer's options are read against: the golden set's folder, its judge's default rubric."""

    folder: Path
    judge_rubric: str | None = None


_FLAG_OPTIONS = frozenset({"case_sensitive", "allow_fences", "full", "normalize"})
_NUMBER_OPTIONS = frozenset({"tolerance", "relative"})

# The judge: sends one chat request for the judge task (through tiergate, like any call) -> its answer text.
Judge = Callable[[list[dict[str, Any]]], Awaitable[str]]


class Scorer(ABC):
    kind: ClassVar[str]
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        for key in spec:
            if key != "type" and key not in self.options:
                allowed = ", ".join(sorted(self.options)) or "none"
                raise ConfigError(f"{path}.{key}", f"unknown option of a {self.kind} scorer (allowed: {allowed})")
            # read with bool() / float() when scoring: a quoted "false" or "0.5" would pass unnoticed
            if key in _FLAG_OPTIONS and not isinstance(spec[key], bool):
                raise ConfigError(f"{path}.{key}", f"expected true or false, got {spec[key]!r}")
            if key in _NUMBER_OPTIONS and (
                isinstance(spec[key], bool) or not isinstance(spec[key], int | float) or spec[key] < 0
            ):
                raise ConfigError(f"{path}.{key}", f"expected a number >= 0, got {spec[key]!r}")
        self.spec = spec
        self.path = path

    def check_case(self, case: Case, path: str) -> None:  # noqa: B027 - most scorers read nothing per case
        """Refuse, at load, a case whose ``expect`` lacks what this scorer reads (``path`` names ``expect``)."""

    @abstractmethod
    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict: ...


def build_scorer(node: Any, path: str, where: Where) -> Scorer:
    """One ``scorers:`` item of eval.yaml -> its scorer (options checked)."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ConfigError(path, f"expected a mapping with a type ({', '.join(SCORERS)})")
    kind = node["type"]
    if kind not in SCORERS:
        raise ConfigError(f"{path}.type", f"{kind!r} is not a scorer ({', '.join(SCORERS)})")
    return SCORERS[kind](node, path, where)


# --- text -------------------------------------------------------------------------------------------


_QUOTES = "\"'`“”‘’«»"
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case, surrounding quotes, trailing punctuation and runs of white space do not count."""
    text = _SPACE.sub(" ", text.strip()).strip(_QUOTES + " ").rstrip(".!?;:, ").strip(_QUOTES + " ")
    return text.casefold()


def _strings(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(path, "expected a string or a non-empty list of strings")


class _Equals(Scorer):
    options = frozenset({"field"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        field = spec.get("field", "answer")
        if not isinstance(field, str) or not field:
            raise ConfigError(f"{path}.field", "expected the name of an expect field")
        self.field = field

    def check_case(self, case: Case, path: str) -> None:
        if self.field not in case.expect:
            raise ConfigError(f"{path}.{self.field}", f"is required by the {self.kind} scorer")
        _strings(case.expect[self.field], f"{path}.{self.field}")

    def compare(self, text: str) -> str:
        return text

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        wanted = _strings(case.expect[self.field], self.field)
        got = self.compare(answer.text)
        if any(got == self.compare(w) for w in wanted):
            return Verdict(True, f"{self.kind} match")
        return Verdict(False, f"expected {_show(wanted)}, got {_clip(answer.text)!r}")


class Exact(_Equals):
    kind = "exact"


class Normalized(_Equals):
    kind = "normalized"

    def compare(self, text: str) -> str:
        return normalize(text)


class Contains(Scorer):
    kind = "contains"
    options = frozenset({"case_sensitive"})

    def check_case(self, case: Case, path: str) -> None:
        if "contains" not in case.expect:
            raise ConfigError(f"{path}.contains", "is required by the contains scorer")
        _strings(case.expect["contains"], f"{path}.contains")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        sensitive = bool(self.spec.get("case_sensitive", False))
        text = answer.text if sensitive else answer.text.casefold()
        missing = [
            s for s in _strings(case.expect["contains"], "contains") if (s if sensitive else s.casefold()) not in text
        ]
        return Verdict(not missing, "contains all" if not missing else f"missing {_show(missing)}")


class NotContains(Scorer):
    kind = "not_contains"
    options = frozenset({"case_sensitive", "values"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        self.values = _strings(spec["values"], f"{path}.values") if "values" in spec else []

    def check_case(self, case: Case, path: str) -> None:
        if "not_contains" in case.expect:
            _strings(case.expect["not_contains"], f"{path}.not_contains")
        elif not self.values:
            raise ConfigError(f"{path}.not_contains", "is required by a not_contains scorer without values")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        sensitive = bool(self.spec.get("case_sensitive", False))
        text = answer.text if sensitive else answer.text.casefold()
        forbidden = self.values + (_strings(case.expect["not_contains"], "") if "not_contains" in case.expect else [])
        found = [s for s in forbidden if (s if sensitive else s.casefold()) in text]
        return Verdict(not found, "contains none" if not found else f"contains {_show(found)}")


class Regex(Scorer):
    kind = "regex"
    options = frozenset({"pattern", "flags", "full"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        flags = spec.get("flags", "")
        if not isinstance(flags, str) or set(flags) - set("imsx"):
            raise ConfigError(f"{path}.flags", "expected letters of imsx")
        self.flags = 0
        for letter in flags:
            self.flags |= getattr(re, letter.upper())
        self.pattern = _compile(spec["pattern"], f"{path}.pattern", self.flags) if "pattern" in spec else None

    def check_case(self, case: Case, path: str) -> None:
        if self.pattern is None:
            if "regex" not in case.expect:
                raise ConfigError(f"{path}.regex", "is required by a regex scorer without a pattern")
            _compile(case.expect["regex"], f"{path}.regex", self.flags)

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        pattern = self.pattern or re.compile(case.expect["regex"], self.flags)
        text = answer.text.strip()
        found = pattern.fullmatch(text) if self.spec.get("full") else pattern.search(text)
        return Verdict(
            found is not None, f"matches /{pattern.pattern}/" if found else f"no match for /{pattern.pattern}/"
        )


def _compile(value: Any, path: str, flags: int) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise ConfigError(path, "expected a regular expression")
    try:
        return re.compile(value, flags)
    except re.error as exc:
        raise ConfigError(path, f"not a valid regular expression: {exc}") from None


# --- JSON -------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)


def parse_json(text: str, allow_fences: bool = False) -> tuple[bool, Any, str]:
    """``(ok, value, reason)`` for an answer that should be one JSON value."""
    text = text.strip()
    if allow_fences and (fenced := _FENCE.match(text)):
        text = fenced[1]
    try:
        return True, orjson.loads(text), "valid JSON"
    except orjson.JSONDecodeError as exc:
        return False, None, f"not JSON ({exc.msg}): {_clip(text)!r}"


class ValidJson(Scorer):
    kind = "valid_json"
    options = frozenset({"allow_fences"})

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        ok, _, reason = parse_json(answer.text, bool(self.spec.get("allow_fences")))
        return Verdict(ok, reason)


class JsonSchema(Scorer):
    kind = "json_schema"
    options = frozenset({"schema", "schema_file", "allow_fences"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        schema: Any = spec.get("schema")
        if "schema_file" in spec:
            file = where.folder / str(spec["schema_file"])
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{path}.schema_file", f"cannot read {file}: {exc.strerror or exc}") from None
            schema = orjson.loads(text) if file.suffix == ".json" else yamldoc.load(text, str(file))
        self.validator = _validator(schema, f"{path}.schema") if schema is not None else None

    def check_case(self, case: Case, path: str) -> None:
        if self.validator is not None:
            return
        if "schema" in case.expect:
            _validator(case.expect["schema"], f"{path}.schema")
        elif (requested := requested_schema(case)) is not None:
            # ``path`` names the case's expect; the schema is a request param beside it
            _validator(requested, f"{path.rpartition(': ')[0]}: response_format.json_schema.schema")
        else:
            raise ConfigError(
                f"{path}.schema",
                "is required by a json_schema scorer without a schema (or give the case a json_schema response_format)",
            )

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        ok, value, reason = parse_json(answer.text, bool(self.spec.get("allow_fences")))
        if not ok:
            return Verdict(False, reason)
        validator = self.validator or _validator(case.expect.get("schema") or requested_schema(case), "schema")
        error = next(iter(validator.iter_errors(value)), None)
        if error is None:
            return Verdict(True, "valid against the schema")
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return Verdict(False, f"schema violation at {where}: {error.message}")


def requested_schema(case: Case) -> Any:
    """The JSON Schema the case's ``response_format`` asks for (``type: json_schema``), or None."""
    spec = case.params.get("response_format")
    if not isinstance(spec, Mapping) or spec.get("type") != "json_schema":
        return None
    inner = spec.get("json_schema")
    return inner.get("schema") if isinstance(inner, Mapping) else None


def _validator(schema: Any, path: str) -> Any:
    from jsonschema import Draft202012Validator  # loaded only by golden sets that validate JSON
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise ConfigError(path, "expected a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(path, f"not a valid JSON Schema: {exc.message}") from None
    return Draft202012Validator(schema)


_MISSING = object()


def dig(value: Any, path: str) -> Any:
    """``value`` at a dotted path (``a.b[0].c``), or ``_MISSING``."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            value = value[index] if isinstance(value, list) and index < len(value) else _MISSING
        else:
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is _MISSING:
            return _MISSING
    return value


class JsonFields(Scorer):
    kind = "json_fields"
    options = frozenset({"allow_fences", "tolerance", "normalize"})

    def check_case(self, case: Case, path: str) -> None:
        fields = case.expect.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise ConfigError(f"{path}.fields", "expected an object of dotted path -> value (json_fields scorer)")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        ok, value, reason = parse_json(answer.text, bool(self.spec.get("allow_fences")))
        if not ok:
            return Verdict(False, reason)
        wrong = []
        for path, wanted in case.expect["fields"].items():
            got = dig(value, path)
            if got is _MISSING or not self._same(got, wanted):
                wrong.append(f"{path}: expected {wanted!r}, got {'nothing' if got is _MISSING else repr(got)}")
        return Verdict(not wrong, "every field matches" if not wrong else "; ".join(wrong))

    def _same(self, got: Any, wanted: Any) -> bool:
        if isinstance(wanted, bool) or isinstance(got, bool):
            return got is wanted  # JSON true is not 1, nor false 0 (Python's == says they are)
        if isinstance(wanted, int | float) and isinstance(got, int | float) and not isinstance(got, bool):
            return abs(got - wanted) <= float(self.spec.get("tolerance", 0))
        if isinstance(wanted, str) and isinstance(got, str) and self.spec.get("normalize"):
            return normalize(got) == normalize(wanted)
        return bool(got == wanted)


# --- numbers, lengths, labels -------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


class Number(Scorer):
    kind = "number"
    options = frozenset({"tolerance", "relative"})

    def check_case(self, case: Case, path: str) -> None:
        wanted = case.expect.get("number")
        if isinstance(wanted, bool) or not isinstance(wanted, int | float):
            raise ConfigError(f"{path}.number", "expected a number (number scorer)")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        found = _NUMBER.search(answer.text)
        if found is None:
            return Verdict(False, f"no number in {_clip(answer.text)!r}")
        got = float(found[0].replace(",", ""))
        wanted = float(case.expect["number"])
        allowed = max(float(self.spec.get("tolerance", 0)), abs(wanted) * float(self.spec.get("relative", 0)))
        ok = abs(got - wanted) <= allowed
        return Verdict(
            ok, f"{got:g} is within {allowed:g} of {wanted:g}" if ok else f"{got:g} is not {wanted:g} ± {allowed:g}"
        )


class Length(Scorer):
    kind = "length"
    options = frozenset({"min_chars", "max_chars", "min_words", "max_words"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        for key in self.options & set(spec):
            if isinstance(spec[key], bool) or not isinstance(spec[key], int) or spec[key] < 0:
                raise ConfigError(f"{path}.{key}", "expected a whole number >= 0")
        if not self.options & set(spec):
            raise ConfigError(path, "a length scorer needs min_chars, max_chars, min_words or max_words")

    def check_case(self, case: Case, path: str) -> None:
        bounds = case.expect.get("length")
        if bounds is None:
            return
        if not isinstance(bounds, Mapping):
            raise ConfigError(f"{path}.length", "expected an object of min_chars, max_chars, min_words, max_words")
        for key, value in bounds.items():
            if key not in self.options:
                raise ConfigError(f"{path}.length.{key}", f"unknown bound (allowed: {', '.join(sorted(self.options))})")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{path}.length.{key}", f"expected a whole number >= 0, got {value!r}")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        bounds = {**self.spec, **(case.expect.get("length") or {})}
        text = answer.text.strip()
        measured = {"chars": len(text), "words": len(text.split())}
        for unit, size in measured.items():
            low, high = bounds.get(f"min_{unit}"), bounds.get(f"max_{unit}")
            if low is not None and size < low:
                return Verdict(False, f"{size} {unit}, fewer than {low}")
            if high is not None and size > high:
                return Verdict(False, f"{size} {unit}, more than {high}")
        return Verdict(True, f"{measured['words']} words, {measured['chars']} chars: within bounds")


class Label(Scorer):
    kind = "label"
    options = frozenset({"labels"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        if "labels" not in spec:
            raise ConfigError(f"{path}.labels", "is required by the label scorer")
        self.labels = {normalize(label): label for label in _strings(spec["labels"], f"{path}.labels")}

    def check_case(self, case: Case, path: str) -> None:
        if "label" in case.expect and normalize(str(case.expect["label"])) not in self.labels:
            raise ConfigError(f"{path}.label", f"{case.expect['label']!r} is not one of the labels")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        got = normalize(answer.text)
        if got not in self.labels:
            return Verdict(False, f"{_clip(answer.text)!r} is not one of {', '.join(self.labels.values())}")
        wanted = case.expect.get("label")
        if wanted is not None and got != normalize(str(wanted)):
            return Verdict(False, f"labelled {self.labels[got]!r}, expected {wanted!r}")
        return Verdict(True, f"label {self.labels[got]!r}")


# --- the judge and custom functions -----------------------------------------------------------------

JUDGE_SYSTEM = (
    "You grade one answer against a rubric. Reply with a single JSON object and nothing else: "
    '{"pass": true or false, "reason": "one sentence"}.'
)


class JudgeScorer(Scorer):
    kind = "judge"
    options = frozenset({"rubric"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        rubric = spec.get("rubric", where.judge_rubric)
        if not isinstance(rubric, str) or not rubric.strip():
            raise ConfigError(f"{path}.rubric", "a judge scorer needs a rubric (here or under judge.rubric)")
        self.rubric = rubric

    def messages(self, answer: Answer, case: Case) -> list[dict[str, Any]]:
        rubric = self.rubric
        parts = [f"Task input:\n{case.prompt()}"]
        if case.expect.get("reference"):
            parts.append(
                f"A reference answer (a good answer need not match it word for word):\n{case.expect['reference']}"
            )
        if case.expect.get("criteria"):
            parts.append(f"Case-specific criteria:\n{case.expect['criteria']}")
        parts += [f"Rubric:\n{rubric}", f"Answer to grade:\n{answer.text}"]
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        reply = await judge(self.messages(answer, case))
        ok, value, _ = parse_json(reply, allow_fences=True)
        if not ok or not isinstance(value, dict) or not isinstance(value.get("pass"), bool):
            return Verdict(False, f"the judge's reply is not a verdict: {_clip(reply)!r}")
        return Verdict(value["pass"], f"judge: {value.get('reason') or ('pass' if value['pass'] else 'fail')}")


class Custom(Scorer):
    kind = "custom"
    options = frozenset({"function"})

    def __init__(self, spec: Mapping[str, Any], path: str, where: Where) -> None:
        super().__init__(spec, path, where)
        name = spec.get("function")
        module, sep, attribute = str(name).partition(":")
        if not isinstance(name, str) or not sep or not module or not attribute:
            raise ConfigError(f"{path}.function", f"expected 'package.module:function', got {name!r}")
        try:
            self.function = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{path}.function", str(exc)) from None
        if not callable(self.function):
            raise ConfigError(f"{path}.function", f"{name} is not callable")

    async def score(self, answer: Answer, case: Case, judge: Judge) -> Verdict:
        result = self.function(answer, case)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Verdict):
            return result
        if isinstance(result, tuple) and len(result) == 2:
            return Verdict(bool(result[0]), str(result[1]))
        return Verdict(bool(result), f"{self.spec['function']} said {'pass' if result else 'fail'}")


SCORERS: dict[str, type[Scorer]] = {
    cls.kind: cls
    for cls in (Exact, Normalized, Contains, NotContains, Regex, ValidJson, JsonSchema, JsonFields, Number, Length,
                Label, JudgeScorer, Custom)
}  # fmt: skip


async def score_all(scorers: tuple[Scorer, ...], answer: Answer, case: Case, judge: Judge) -> Verdict:
    """Every scorer's verdict on one answer, as one: a pass when all pass; a scorer that raises fails it."""
    reasons = []
    for scorer in scorers:
        try:
            verdict = await scorer.score(answer, case, judge)
        except Exception as exc:  # noqa: BLE001 - a custom scorer's or the judge's failure is a failed case
            verdict = Verdict(False, f"{scorer.kind} scorer raised {type(exc).__name__}: {exc}")
        if not verdict.passed:
            named = verdict.reason.startswith(f"{scorer.kind}:")  # the judge names itself already
            return Verdict(False, verdict.reason if named else f"{scorer.kind}: {verdict.reason}")
        reasons.append(verdict.reason)
    return Verdict(True, "; ".join(reasons))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(values: list[str]) -> str:
    return " or ".join(repr(v) for v in values)
