"""Every scorer of ``proxy.evals.scorers`` with answers that pass and answers that fail, and the reason it gives.

Scorers are built as ``golden.load`` builds them (``build_scorer`` with a dotted path), their per-case
checks run as at load, and the judge is a plain async function, so no test needs a model or a mock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.evals.case import Case
from proxy.evals.scorers import (
    JUDGE_SYSTEM,
    Answer,
    Judge,
    JudgeScorer,
    Scorer,
    Verdict,
    Where,
    build_scorer,
    dig,
    normalize,
    score_all,
)

PATH = "evals/t/eval.yaml: scorers[0]"
WHERE = Where(Path("evals/t"))


def make_case(expect: Mapping[str, Any] | None = None, prompt: str = "the task input", **params: Any) -> Case:
    messages = ({"role": "system", "content": "be brief"}, {"role": "user", "content": prompt})
    return Case(
        id="c1",
        messages=tuple(MappingProxyType(m) for m in messages),
        params=MappingProxyType(params),
        expect=MappingProxyType(dict(expect or {})),
        line=1,
    )


def build(spec: Mapping[str, Any], where: Where = WHERE) -> Scorer:
    return build_scorer(dict(spec), PATH, where)


async def no_judge(messages: list[dict[str, Any]]) -> str:
    raise AssertionError("this scorer must not call the judge")


async def verdict(
    spec: Mapping[str, Any], text: str, expect: Mapping[str, Any] | None = None, judge: Judge = no_judge, **params: Any
) -> Verdict:
    scorer = build(spec)
    case = make_case(expect, **params)
    scorer.check_case(case, "cases.jsonl:1: expect")  # as at load: the case has what the scorer reads
    return await scorer.score(Answer.of({"role": "assistant", "content": text}), case, judge)


def config_error(action: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- exact, normalized ------------------------------------------------------------------------------


async def test_exact_matches_byte_for_byte_and_any_of_a_list() -> None:
    assert (await verdict({"type": "exact"}, "Paris", {"answer": "Paris"})).passed
    assert (await verdict({"type": "exact"}, "Lyon", {"answer": ["Paris", "Lyon"]})).passed
    failed = await verdict({"type": "exact"}, "paris.", {"answer": "Paris"})
    assert not failed.passed and failed.reason == "expected 'Paris', got 'paris.'"


async def test_normalized_ignores_case_quotes_final_punctuation_and_spacing() -> None:
    assert normalize('  "Reset  your\npassword."  ') == "reset your password"
    assert (await verdict({"type": "normalized"}, "“Reset your password!”", {"answer": "reset your password"})).passed
    failed = await verdict({"type": "normalized"}, "Reset the password", {"answer": "reset your password"})
    assert not failed.passed and "expected 'reset your password'" in failed.reason


async def test_exact_reads_the_field_its_options_name() -> None:
    assert (await verdict({"type": "exact", "field": "city"}, "Oslo", {"city": "Oslo"})).passed
    message = config_error(lambda: build({"type": "exact", "field": "city"}).check_case(make_case({}), "f:3: expect"))
    assert message == "f:3: expect.city: is required by the exact scorer"
    message = config_error(lambda: build({"type": "exact"}).check_case(make_case({"answer": 7}), "f:3: expect"))
    assert message == "f:3: expect.answer: expected a string or a non-empty list of strings"


# --- contains, not_contains, regex ------------------------------------------------------------------


async def test_contains_needs_every_string_case_insensitive_by_default() -> None:
    expect = {"contains": ["Redis", "rollback"]}
    assert (await verdict({"type": "contains"}, "redis failed over; a ROLLBACK fixed it", expect)).passed
    failed = await verdict({"type": "contains"}, "Redis failed over", expect)
    assert not failed.passed and failed.reason == "missing 'rollback'"
    sensitive = await verdict({"type": "contains", "case_sensitive": True}, "redis and rollback", expect)
    assert not sensitive.passed and sensitive.reason == "missing 'Redis'"


async def test_not_contains_refuses_option_values_and_per_case_strings() -> None:
    spec = {"type": "not_contains", "values": ["As an AI"]}
    assert (await verdict(spec, "The deploy was rolled back.")).passed
    failed = await verdict(spec, "as an ai, I cannot", {})
    assert not failed.passed and failed.reason == "contains 'As an AI'"
    per_case = await verdict(spec, "Call Dana at 555-0100", {"not_contains": ["555-0100"]})
    assert not per_case.passed and per_case.reason == "contains '555-0100'"
    message = config_error(lambda: build({"type": "not_contains"}).check_case(make_case({}), "f:2: expect"))
    assert message == "f:2: expect.not_contains: is required by a not_contains scorer without values"


async def test_regex_searches_or_fully_matches_with_flags() -> None:
    spec = {"type": "regex", "pattern": "^[A-Z]{3}-\\d+$"}
    assert (await verdict(spec, "  INV-2041\n")).passed  # the answer is stripped first
    failed = await verdict(spec, "inv-2041")
    assert not failed.passed and failed.reason == "no match for /^[A-Z]{3}-\\d+$/"
    assert (await verdict({**spec, "flags": "i"}, "inv-2041")).passed
    assert (await verdict({"type": "regex", "pattern": "\\d+"}, "order 42 shipped")).passed
    assert not (await verdict({"type": "regex", "pattern": "\\d+", "full": True}, "order 42 shipped")).passed


async def test_regex_reads_the_case_pattern_when_the_options_have_none() -> None:
    assert (await verdict({"type": "regex"}, "ticket #4411", {"regex": "#\\d{4}\\b"})).passed
    assert not (await verdict({"type": "regex"}, "ticket #441", {"regex": "#\\d{4}\\b"})).passed


def test_a_bad_regex_or_bad_flags_is_refused_at_load() -> None:
    assert config_error(lambda: build({"type": "regex", "pattern": "(unclosed"})).startswith(
        f"{PATH}.pattern: not a valid regular expression: missing ), unterminated subpattern"
    )
    assert config_error(lambda: build({"type": "regex", "pattern": "x", "flags": "g"})) == (
        f"{PATH}.flags: expected letters of imsx"
    )
    message = config_error(lambda: build({"type": "regex"}).check_case(make_case({"regex": "[a-"}), "f:9: expect"))
    assert message.startswith("f:9: expect.regex: not a valid regular expression")
    message = config_error(lambda: build({"type": "regex"}).check_case(make_case({}), "f:9: expect"))
    assert message == "f:9: expect.regex: is required by a regex scorer without a pattern"


# --- JSON -------------------------------------------------------------------------------------------

FENCED = '```json\n{"city": "Oslo"}\n```'


async def test_valid_json_unwraps_a_fence_only_when_allowed() -> None:
    assert (await verdict({"type": "valid_json"}, ' {"city": "Oslo"} ')).passed
    assert (await verdict({"type": "valid_json"}, "[1, 2, 3]")).passed
    refused = await verdict({"type": "valid_json"}, FENCED)
    assert not refused.passed and refused.reason.startswith("not JSON (")
    assert (await verdict({"type": "valid_json", "allow_fences": True}, FENCED)).passed
    truncated = await verdict({"type": "valid_json", "allow_fences": True}, '{"city": "Os')
    assert not truncated.passed and truncated.reason.endswith('\'{"city": "Os\'')


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "seats": {"type": "integer", "minimum": 1}},
    "required": ["name", "seats"],
    "additionalProperties": False,
}


async def test_json_schema_names_the_violation_and_where() -> None:
    spec = {"type": "json_schema", "schema": SCHEMA}
    assert (await verdict(spec, '{"name": "Acme", "seats": 25}')).passed
    wrong_type = await verdict(spec, '{"name": "Acme", "seats": "25"}')
    assert wrong_type == Verdict(False, "schema violation at seats: '25' is not of type 'integer'")
    missing = await verdict(spec, '{"name": "Acme"}')
    assert missing == Verdict(False, "schema violation at (top level): 'seats' is a required property")
    assert not (await verdict(spec, "Acme, 25 seats")).passed  # not JSON at all


async def test_json_schema_reads_a_schema_file(tmp_path: Path) -> None:
    (tmp_path / "lead.schema.json").write_text('{"type": "object", "required": ["company"]}')
    scorer = build({"type": "json_schema", "schema_file": "lead.schema.json"}, Where(tmp_path))
    case = make_case()
    assert (await scorer.score(Answer.of({"content": '{"company": "Acme"}'}), case, no_judge)).passed
    assert not (await scorer.score(Answer.of({"content": '{"name": "Acme"}'}), case, no_judge)).passed
    message = config_error(lambda: build({"type": "json_schema", "schema_file": "nope.json"}, Where(tmp_path)))
    assert message.startswith(f"{PATH}.schema_file: cannot read {tmp_path / 'nope.json'}")


async def test_json_schema_falls_back_to_the_case_schema_then_its_response_format() -> None:
    per_case = {"schema": {"type": "array"}}
    assert (await verdict({"type": "json_schema"}, "[1]", per_case)).passed
    assert not (await verdict({"type": "json_schema"}, "{}", per_case)).passed
    response_format = {"type": "json_schema", "json_schema": {"name": "lead", "strict": True, "schema": SCHEMA}}
    assert await verdict({"type": "json_schema"}, '{"name": "Acme", "seats": 3}', response_format=response_format)
    failed = await verdict({"type": "json_schema"}, '{"name": "Acme", "seats": 0}', response_format=response_format)
    assert failed == Verdict(False, "schema violation at seats: 0 is less than the minimum of 1")


def test_json_schema_without_any_schema_or_with_a_bad_one_is_refused_at_load() -> None:
    scorer = build({"type": "json_schema"})
    message = config_error(lambda: scorer.check_case(make_case({}), "f:4: expect"))
    assert message.startswith("f:4: expect.schema: is required by a json_schema scorer without a schema")
    plain = make_case({}, response_format={"type": "json_object"})
    assert config_error(lambda: scorer.check_case(plain, "f:4: expect")).startswith("f:4: expect.schema: ")
    bad = make_case({}, response_format={"type": "json_schema", "json_schema": {"schema": {"type": "thing"}}})
    message = config_error(lambda: scorer.check_case(bad, "f:4: expect"))
    assert message.startswith("f:4: response_format.json_schema.schema: not a valid JSON Schema:")
    assert config_error(lambda: build({"type": "json_schema", "schema": [1]})) == (
        f"{PATH}.schema: expected a JSON Schema object"
    )


def test_dig_follows_dotted_paths_and_list_indexes() -> None:
    value = {"invoice": {"lines": [{"sku": "A-1"}, {"sku": "B-2", "tags": ["x", "y"]}]}}
    assert dig(value, "invoice.lines[1].sku") == "B-2"
    assert dig(value, "invoice.lines[1].tags[0]") == "x"
    missing = dig(value, "invoice.lines[2].sku")
    assert missing is dig(value, "invoice.total") is dig(value, "invoice.lines.sku")  # all the same sentinel
    assert missing is not None


async def test_json_fields_checks_each_dotted_path() -> None:
    answer = '{"customer": {"name": "Dana Ruiz"}, "items": [{"sku": "PRO-12", "qty": 3}], "rush": false}'
    fields = {"customer.name": "Dana Ruiz", "items[0].sku": "PRO-12", "items[0].qty": 3, "rush": False}
    assert (await verdict({"type": "json_fields"}, answer, {"fields": fields})).passed
    wrong = await verdict({"type": "json_fields"}, answer, {"fields": {"items[0].qty": 4, "items[1].sku": "X"}})
    assert wrong == Verdict(False, "items[0].qty: expected 4, got 3; items[1].sku: expected 'X', got nothing")


async def test_json_fields_tolerance_normalize_and_booleans_are_not_numbers() -> None:
    answer = '{"total": 1249.999, "company": "brightline ltd.", "paid": true, "count": 1}'
    strict = await verdict({"type": "json_fields"}, answer, {"fields": {"total": 1250}})
    assert not strict.passed
    assert (await verdict({"type": "json_fields", "tolerance": 0.01}, answer, {"fields": {"total": 1250}})).passed
    fields = {"company": "Brightline Ltd"}
    assert not (await verdict({"type": "json_fields"}, answer, {"fields": fields})).passed
    assert (await verdict({"type": "json_fields", "normalize": True}, answer, {"fields": fields})).passed
    # JSON true is not the number 1, and 1 is not true (Python's True == 1 must not leak in)
    assert not (await verdict({"type": "json_fields"}, answer, {"fields": {"paid": 1}})).passed
    assert not (await verdict({"type": "json_fields"}, answer, {"fields": {"count": True}})).passed
    assert (await verdict({"type": "json_fields"}, answer, {"fields": {"paid": True, "count": 1}})).passed


async def test_json_fields_with_fences_and_without_fields() -> None:
    assert not (await verdict({"type": "json_fields"}, FENCED, {"fields": {"city": "Oslo"}})).passed
    assert (await verdict({"type": "json_fields", "allow_fences": True}, FENCED, {"fields": {"city": "Oslo"}})).passed
    message = config_error(lambda: build({"type": "json_fields"}).check_case(make_case({"fields": {}}), "f:1: expect"))
    assert message.startswith("f:1: expect.fields: expected an object of dotted path -> value")


# --- numbers, lengths, labels -----------------------------------------------------------------------


async def test_number_reads_the_first_number_with_commas() -> None:
    assert (await verdict({"type": "number"}, "The total is $12,480.50 (incl. VAT)", {"number": 12480.5})).passed
    assert (await verdict({"type": "number"}, "-3 degrees", {"number": -3})).passed
    failed = await verdict({"type": "number"}, "2 invoices, 12,480 total", {"number": 12480})
    assert failed == Verdict(False, "2 is not 12480 ± 0")  # the first number counts
    none = await verdict({"type": "number"}, "about twelve thousand", {"number": 12000})
    assert none == Verdict(False, "no number in 'about twelve thousand'")


async def test_number_tolerance_absolute_and_relative() -> None:
    assert (await verdict({"type": "number", "tolerance": 0.5}, "41.6", {"number": 42})).passed
    assert not (await verdict({"type": "number", "tolerance": 0.5}, "41.4", {"number": 42})).passed
    assert (await verdict({"type": "number", "relative": 0.01}, "1,009", {"number": 1000})).passed
    assert not (await verdict({"type": "number", "relative": 0.01}, "1,011", {"number": 1000})).passed
    message = config_error(lambda: build({"type": "number"}).check_case(make_case({"number": "42"}), "f:5: expect"))
    assert message == "f:5: expect.number: expected a number (number scorer)"
    assert config_error(lambda: build({"type": "number", "tolerance": "0.5"})) == (
        f"{PATH}.tolerance: expected a number >= 0, got '0.5'"
    )


async def test_length_in_chars_and_words() -> None:
    spec = {"type": "length", "min_words": 3, "max_words": 8, "max_chars": 45}
    assert (await verdict(spec, "Okta SSO login loop after domain change")).passed
    assert await verdict(spec, "SSO loop") == Verdict(False, "2 words, fewer than 3")
    assert await verdict(spec, "a b c d e f g h i j k") == Verdict(False, "11 words, more than 8")
    assert await verdict(spec, "Internationalization, localization, accessibility") == Verdict(
        False, "49 chars, more than 45"
    )
    assert (await verdict({"type": "length", "min_chars": 5}, "  abc  ")) == Verdict(False, "3 chars, fewer than 5")


async def test_length_bounds_can_be_overridden_per_case() -> None:
    spec = {"type": "length", "max_words": 5}
    text = "one two three four five six seven"
    assert not (await verdict(spec, text)).passed
    assert (await verdict(spec, text, {"length": {"max_words": 10}})).passed
    assert await verdict(spec, text, {"length": {"min_chars": 50}}) == Verdict(False, "33 chars, fewer than 50")
    scorer = build(spec)
    message = config_error(lambda: scorer.check_case(make_case({"length": {"max_lines": 3}}), "f:6: expect"))
    assert message.startswith("f:6: expect.length.max_lines: unknown bound (allowed: max_chars, max_words")
    message = config_error(lambda: scorer.check_case(make_case({"length": {"max_words": "ten"}}), "f:6: expect"))
    assert message == "f:6: expect.length.max_words: expected a whole number >= 0, got 'ten'"


def test_length_needs_a_bound_and_whole_numbers() -> None:
    assert config_error(lambda: build({"type": "length"})) == (
        f"{PATH}: a length scorer needs min_chars, max_chars, min_words or max_words"
    )
    assert config_error(lambda: build({"type": "length", "max_words": 2.5})) == (
        f"{PATH}.max_words: expected a whole number >= 0"
    )


async def test_label_is_normalised_then_checked_against_the_set_and_the_case() -> None:
    spec = {"type": "label", "labels": ["bug", "billing", "feature"]}
    assert (await verdict(spec, " Billing.\n", {"label": "billing"})).passed
    assert (await verdict(spec, '"FEATURE"')).passed  # no expected label: any label of the set passes
    wrong = await verdict(spec, "bug", {"label": "billing"})
    assert wrong == Verdict(False, "labelled 'bug', expected 'billing'")
    chatty = await verdict(spec, "billing, because of the refund", {"label": "billing"})
    assert chatty == Verdict(False, "'billing, because of the refund' is not one of bug, billing, feature")
    message = config_error(lambda: build(spec).check_case(make_case({"label": "refund"}), "f:8: expect"))
    assert message == "f:8: expect.label: 'refund' is not one of the labels"
    assert config_error(lambda: build({"type": "label"})) == f"{PATH}.labels: is required by the label scorer"


# --- judge ------------------------------------------------------------------------------------------


def replying(reply: str, seen: list[list[dict[str, Any]]] | None = None) -> Judge:
    async def judge(messages: list[dict[str, Any]]) -> str:
        if seen is not None:
            seen.append(messages)
        return reply

    return judge


JUDGED = {"reference": "The keeper logs a signal from a ship lost in 1911.", "criteria": "Mentions 1911."}


async def test_judge_shows_the_input_reference_criteria_rubric_and_answer() -> None:
    seen: list[list[dict[str, Any]]] = []
    spec = {"type": "judge", "rubric": "Vivid, on brief, one paragraph."}
    passed = await verdict(spec, "A keeper hears 1911.", JUDGED, replying('{"pass": true, "reason": "on brief"}', seen))
    assert passed == Verdict(True, "judge: on brief")
    [messages] = seen
    assert messages[0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert messages[1]["content"] == (
        "Task input:\nthe task input\n\n"
        "A reference answer (a good answer need not match it word for word):\n"
        "The keeper logs a signal from a ship lost in 1911.\n\n"
        "Case-specific criteria:\nMentions 1911.\n\n"
        "Rubric:\nVivid, on brief, one paragraph.\n\n"
        "Answer to grade:\nA keeper hears 1911."
    )


async def test_judge_fail_fenced_verdicts_and_garbage() -> None:
    spec = {"type": "judge", "rubric": "On brief."}
    failed = await verdict(spec, "x", JUDGED, replying('```json\n{"pass": false, "reason": "off brief"}\n```'))
    assert failed == Verdict(False, "judge: off brief")
    terse = await verdict(spec, "x", JUDGED, replying('{"pass": true}'))
    assert terse == Verdict(True, "judge: pass")
    for garbage in ("Looks good to me!", '{"pass": "yes"}', "[true]", ""):
        got = await verdict(spec, "x", JUDGED, replying(garbage))
        assert not got.passed and got.reason.startswith("the judge's reply is not a verdict"), garbage


def test_judge_needs_a_rubric_here_or_in_the_judge_settings() -> None:
    assert config_error(lambda: build({"type": "judge"})).startswith(f"{PATH}.rubric: a judge scorer needs a rubric")
    scorer = build({"type": "judge"}, Where(Path("evals/t"), judge_rubric="The set's rubric."))
    assert isinstance(scorer, JudgeScorer) and scorer.rubric == "The set's rubric."
    own = build({"type": "judge", "rubric": "Mine."}, Where(Path("evals/t"), judge_rubric="The set's rubric."))
    assert isinstance(own, JudgeScorer) and own.rubric == "Mine."


# --- custom -----------------------------------------------------------------------------------------


def ends_with_question(answer: Answer, case: Case) -> bool:
    return answer.text.rstrip().endswith("?")


async def mentions_the_case(answer: Answer, case: Case) -> tuple[bool, str]:
    return case.id in answer.text, f"looked for {case.id}"


def verdict_of_length(answer: Answer, case: Case) -> Verdict:
    return Verdict(len(answer.text) < 10, "short" if len(answer.text) < 10 else "long")


def explodes(answer: Answer, case: Case) -> bool:
    raise ValueError("the scorer's own bug")


NOT_CALLABLE = 3
MODULE = "tests.test_scorers"


async def test_custom_scorers_sync_async_and_their_return_shapes() -> None:
    spec = {"type": "custom", "function": f"{MODULE}:ends_with_question"}
    assert await verdict(spec, "Shall we?") == Verdict(True, f"{MODULE}:ends_with_question said pass")
    assert await verdict(spec, "We shall.") == Verdict(False, f"{MODULE}:ends_with_question said fail")
    async_spec = {"type": "custom", "function": f"{MODULE}:mentions_the_case"}
    assert await verdict(async_spec, "re c1") == Verdict(True, "looked for c1")
    assert not (await verdict(async_spec, "re c2")).passed
    assert await verdict({"type": "custom", "function": f"{MODULE}:verdict_of_length"}, "a long answer") == Verdict(
        False, "long"
    )


async def test_a_custom_scorer_that_raises_fails_the_case_with_the_error() -> None:
    scorers = (build({"type": "custom", "function": f"{MODULE}:explodes"}),)
    got = await score_all(scorers, Answer.of({"content": "x"}), make_case(), no_judge)
    assert got == Verdict(False, "custom: custom scorer raised ValueError: the scorer's own bug")


def test_a_custom_function_that_cannot_be_imported_is_refused_at_load() -> None:
    assert config_error(lambda: build({"type": "custom", "function": "no_colon"})) == (
        f"{PATH}.function: expected 'package.module:function', got 'no_colon'"
    )
    assert config_error(lambda: build({"type": "custom", "function": "tests.nowhere:fn"})) == (
        f"{PATH}.function: No module named 'tests.nowhere'"
    )
    assert "has no attribute 'missing'" in config_error(
        lambda: build({"type": "custom", "function": f"{MODULE}:missing"})
    )
    assert config_error(lambda: build({"type": "custom", "function": f"{MODULE}:NOT_CALLABLE"})) == (
        f"{PATH}.function: {MODULE}:NOT_CALLABLE is not callable"
    )


# --- building, and all scorers together -------------------------------------------------------------


def test_unknown_scorers_and_options_are_refused_with_their_path() -> None:
    assert config_error(lambda: build({"type": "bleu"})).startswith(f"{PATH}.type: 'bleu' is not a scorer (exact, ")
    assert config_error(lambda: build({"pattern": "x"})).startswith(f"{PATH}: expected a mapping with a type")
    assert config_error(lambda: build({"type": "contains", "ignore_case": True})) == (
        f"{PATH}.ignore_case: unknown option of a contains scorer (allowed: case_sensitive)"
    )
    assert config_error(lambda: build({"type": "valid_json", "allow_fences": "yes"})) == (
        f"{PATH}.allow_fences: expected true or false, got 'yes'"
    )


def test_an_answer_without_text_is_read_from_its_tool_calls() -> None:
    call = {"type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}}
    assert Answer.of({"content": None, "tool_calls": [call, call]}).text == '{"id": 7}\n{"id": 7}'
    assert Answer.of({"content": "hi", "tool_calls": [call]}).text == "hi"
    assert Answer.of({"content": None}).text == ""


async def test_score_all_passes_when_every_scorer_does_and_stops_at_the_first_failure() -> None:
    calls: list[list[dict[str, Any]]] = []
    scorers = (
        build({"type": "length", "max_words": 3}),
        build({"type": "judge", "rubric": "Anything."}),
    )
    case = make_case(JUDGED)
    judge = replying('{"pass": true, "reason": "fine"}', calls)
    passed = await score_all(scorers, Answer.of({"content": "short answer"}), case, judge)
    assert passed == Verdict(True, "2 words, 12 chars: within bounds; judge: fine")
    assert len(calls) == 1
    failed = await score_all(scorers, Answer.of({"content": "far too long an answer"}), case, judge)
    assert failed == Verdict(False, "length: 5 words, more than 3")
    assert len(calls) == 1  # the judge (a paid call) is not asked about an answer already failed
