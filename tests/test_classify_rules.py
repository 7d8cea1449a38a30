"""classify: rules — every condition, the combinators, first-match order, dead rules, load errors."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.classify.conditions import RequestView, dead_rules, first_match, holds, parse_condition, parse_rules
from proxy.errors import ConfigError

TASKS = ("agent", "title_generation", "extraction", "summary", "classification")


def _view(body: dict[str, Any], headers: dict[str, str] | None = None) -> RequestView:
    return RequestView(body, headers or {})


def _holds(when: dict[str, Any], body: dict[str, Any], headers: dict[str, str] | None = None) -> bool:
    return holds(parse_condition(when, "when"), _view(body, headers))


CHAT = {
    "messages": [
        {"role": "system", "content": "You write conversation titles."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "Extract the invoice number"}]},
    ],
    "tools": [{"type": "function", "function": {"name": "lookup_order"}}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "max_tokens": 64,
    "metadata": {"feature": "inbox-title"},
}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"system": "(?i)conversation titles"}, True),
        ({"system": "invoice"}, False),
        ({"last_user": "^Extract"}, True),
        ({"last_user": "first"}, False),  # not the last user message
        ({"any_message": "an answer"}, True),
        ({"tools": True}, True),
        ({"tools": False}, False),
        ({"tools": ["lookup_order", "other"]}, True),
        ({"tools": "send_email"}, False),
        ({"response_format": "json_schema"}, True),
        ({"response_format": ["text", "json_object"]}, False),
        ({"max_tokens": {"max": 64}}, True),
        ({"max_tokens": {"min": 65}}, False),
        ({"messages": {"min": 3, "max": 4}}, True),
        ({"messages": {"max": 2}}, False),
        ({"metadata": {"feature": "^inbox-"}}, True),
        ({"metadata": {"other": "."}}, False),
        ({"header": {"User-Agent": "^MobileApp/"}}, True),  # header names are case-insensitive
        ({"header": {"x-app": "."}}, False),
        ({"system": "titles", "tools": True}, True),  # a mapping is "all"
        ({"system": "titles", "tools": False}, False),
        ({"any": [{"tools": False}, {"max_tokens": {"max": 100}}]}, True),
        ({"any": [{"tools": False}, {"max_tokens": {"min": 100}}]}, False),
        ({"all": [{"tools": True}, {"not": {"system": "nope"}}]}, True),
        ({"not": {"tools": True}}, False),
        ({}, True),
    ],
)
def test_each_condition_and_combinator(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CHAT, {"user-agent": "MobileApp/2.3"}) is expected


def test_a_request_without_the_field_does_not_match_it() -> None:
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    assert not _holds({"max_tokens": {"max": 1000}}, bare)
    assert not _holds({"system": "."}, bare)
    assert _holds({"response_format": "text"}, bare)  # no response_format means text
    assert _holds({"tools": False}, bare)


def test_the_first_matching_rule_wins() -> None:
    rules = parse_rules(
        [
            {"name": "agents", "task": "agent", "when": {"tools": True}},
            {"name": "titles", "task": "title_generation", "when": {"system": "titles"}},
        ],
        "classify",
        TASKS,
    )
    matched = first_match(rules, _view(CHAT))
    assert matched is not None and matched.name == "agents"
    no_tools = {**CHAT, "tools": []}
    matched = first_match(rules, _view(no_tools))
    assert matched is not None and matched.name == "titles"
    assert first_match(rules, _view({"messages": [{"role": "user", "content": "x"}]})) is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "a", "task": "nope", "when": {}}], "classify[0].task: 'nope' is not a defined task"),
        ([{"name": "a", "task": "agent", "when": {"sytem": "x"}}], "classify[0].when.sytem: unknown condition"),
        ([{"name": "a", "task": "agent", "when": {"system": "(unclosed"}}], "classify[0].when.system: not a valid"),
        (
            [{"name": "a", "task": "agent", "when": {"any": [{"last_user": "["}]}}],
            "classify[0].when.any[0].last_user: not a valid regular expression",
        ),
        (
            [{"name": "a", "task": "agent", "when": {"max_tokens": {"min": 9, "max": 2}}}],
            "classify[0].when.max_tokens: min is above max",
        ),
        (
            [{"name": "a", "task": "agent", "when": {"response_format": "yaml"}}],
            "classify[0].when.response_format: 'yaml' is not a response_format type",
        ),
        ([{"name": "a", "task": "agent"}], "classify[0].when: is required"),
        (
            [{"name": "a", "task": "agent", "when": {}}, {"name": "a", "task": "agent", "when": {}}],
            "classify[1].name: 'a' names an earlier rule too",
        ),
        ([{"name": "a", "task": "agent", "when": {}, "then": 1}], "classify[0].then: unknown key"),
    ],
)
def test_a_bad_rule_is_one_line_with_its_dotted_path(rules: list[Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(rules, "classify", TASKS)
    assert str(err.value).startswith(message), str(err.value)


def test_dead_rules_are_found_where_decidable() -> None:
    rules = parse_rules(
        [
            {"name": "short", "task": "title_generation", "when": {"max_tokens": {"max": 64}}},
            {"name": "shorter-json", "task": "extraction", "when": {"max_tokens": {"max": 32}, "response_format": "json_object"}},
            {"name": "longer", "task": "summary", "when": {"max_tokens": {"max": 128}}},
            {"name": "maybe", "task": "agent", "when": {"any": [{"tools": True}, {"max_tokens": {"max": 8}}]}},
            {"name": "catch-all", "task": "classification", "when": {}},
            {"name": "after-all", "task": "agent", "when": {"tools": True}},
        ],
        "classify",
        TASKS,
    )  # fmt: skip
    assert [d.describe() for d in dead_rules(rules)] == [
        "classify[1] (shorter-json) can never match: classify[0] (short) matches every request it would",
        "classify[5] (after-all) can never match: classify[4] (catch-all) matches every request it would",
    ]
