"""Prompt variants: the client's messages reworded for the tier that serves them, hop by hop.

Unit tests of ``proxy.prompts.apply`` and of the ``prompt:`` / ``prompts:`` validation (through
``proxy.registry.build``, so errors carry their dotted path), then end to end: what the fake upstream
received, and what the ledger recorded in ``prompt_variant``, for the shipped rules.yaml and for a
registry where every tier of a fallback chain words the request its own way.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from proxy import prompts
from proxy.errors import ConfigError
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.prompts import PromptVariant
from proxy.registry import Registry
from proxy.rules import build
from tests.conftest import UPSTREAM_KEY, ProxyFactory, sdk, shipped_registry
from tests.test_ledger import rows

SMALL_TERSE = "Answer with only what was asked: no preamble, no explanation."
TITLE_SMALL = "You write conversation titles: 3 to 8 words, no quotes, no final period."

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "We moved the billing cron to a queue."},
    {"role": "assistant", "content": "Noted."},
    {"role": "user", "content": "It fixed retries."},
]


# --- apply ------------------------------------------------------------------------------------------


def test_prepend_puts_the_variant_before_the_clients_system_message() -> None:
    out = prompts.apply(CONVERSATION, PromptVariant("v", system="Be terse."))
    assert out == [{"role": "system", "content": "Be terse."}, *CONVERSATION]
    no_system = CONVERSATION[1:]
    assert prompts.apply(no_system, PromptVariant("v", system="Be terse.")) == [
        {"role": "system", "content": "Be terse."},
        *no_system,
    ]


def test_replace_drops_every_system_and_developer_message() -> None:
    messages = [
        {"role": "developer", "content": "Use French."},
        *CONVERSATION,
        {"role": "system", "content": "A late instruction."},
    ]
    out = prompts.apply(messages, PromptVariant("v", system="Be terse.", system_mode="replace"))
    assert out == [{"role": "system", "content": "Be terse."}, *CONVERSATION[1:]]


def test_wrap_puts_system_and_developer_text_in_place_of_original() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        *CONVERSATION[1:],
    ]
    variant = PromptVariant("v", system="Rules:\n{original}\nBe terse.", system_mode="wrap")
    out = prompts.apply(messages, variant)
    assert out == [{"role": "system", "content": "Rules:\nYou are helpful.\nUse French.\nBe terse."}, *CONVERSATION[1:]]
    # no system message to wrap: the placeholder is empty
    assert prompts.apply(CONVERSATION[1:], variant)[0] == {"role": "system", "content": "Rules:\n\nBe terse."}


def test_append_goes_to_the_last_user_message_only() -> None:
    variant = PromptVariant("v", append_to_last_user="Reply with the label only.")
    messages = [*CONVERSATION, {"role": "assistant", "content": "Calling."}, {"role": "tool", "content": "x"}]
    out = prompts.apply(messages, variant)
    assert out[3] == {"role": "user", "content": "It fixed retries.\n\nReply with the label only."}
    assert out[:3] == messages[:3] and out[4:] == messages[4:]


def test_append_to_list_of_parts_content_adds_a_text_part() -> None:
    parts = [
        {"type": "text", "text": "Label this screenshot"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    out = prompts.apply([{"role": "user", "content": parts}], PromptVariant("v", append_to_last_user="One word."))
    assert out == [{"role": "user", "content": [*parts, {"type": "text", "text": "One word."}]}]


@pytest.mark.parametrize("content", ["", None])
def test_append_to_empty_content_is_the_text_alone(content: Any) -> None:
    out = prompts.apply([{"role": "user", "content": content}], PromptVariant("v", append_to_last_user="One word."))
    assert out == [{"role": "user", "content": "One word."}]


def test_append_without_a_user_message_changes_nothing() -> None:
    messages = [{"role": "system", "content": "Hi"}]
    assert prompts.apply(messages, PromptVariant("v", append_to_last_user="One word.")) == messages


def test_system_and_append_together() -> None:
    out = prompts.apply(
        CONVERSATION, PromptVariant("v", system="Be terse.", system_mode="replace", append_to_last_user="Short.")
    )
    assert out == [
        {"role": "system", "content": "Be terse."},
        *CONVERSATION[1:3],
        {"role": "user", "content": "It fixed retries.\n\nShort."},
    ]


@pytest.mark.parametrize("mode", ["prepend", "replace", "wrap"])
def test_the_clients_messages_are_not_mutated(mode: str) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    before = copy.deepcopy(messages)
    system = "Rules: {original}" if mode == "wrap" else "Be terse."
    out = prompts.apply(messages, PromptVariant("v", system=system, system_mode=mode, append_to_last_user="Short."))
    assert messages == before
    assert out is not messages and out != messages


# --- validation, through the registry -------------------------------------------------------------------


def registry_doc(tier_prompt: Any = None, task_prompts: Any = None) -> dict[str, Any]:
    small: dict[str, Any] = {"targets": ["openai::gpt-4o-mini"]}
    if tier_prompt is not None:
        small["prompt"] = tier_prompt
    task: dict[str, Any] = {"tier": "small"}
    if task_prompts is not None:
        task["prompts"] = task_prompts
    return {
        "providers": {"openai": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
        "tiers": {"small": small, "mid": {"targets": ["openai::gpt-4o"]}},
        "tasks": {"titles": task},
    }


def config_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        build(doc)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("variant", "path", "why"),
    [
        ({"system": "x", "tone": "warm"}, "tiers.small.prompt.tone", "unknown key"),
        ({"system": "x", "system_mode": "shout"}, "tiers.small.prompt.system_mode", "'shout' is not one of"),
        ({"system": "Be terse.", "system_mode": "wrap"}, "tiers.small.prompt.system", "{original}"),
        ({}, "tiers.small.prompt", "needs `system` or `append_to_last_user`"),
        ({"name": "empty"}, "tiers.small.prompt", "needs `system` or `append_to_last_user`"),
        ({"system": 42}, "tiers.small.prompt.system", "expected a string"),
        ("Be terse.", "tiers.small.prompt", "expected a mapping"),
        (
            {"system": "x", "applies_to": ["text", "json"]},
            "tiers.small.prompt.applies_to[1]",
            "'json' is not a request",
        ),
        ({"system": "x", "applies_to": "prose"}, "tiers.small.prompt.applies_to", "'prose' is not a request shape"),
        ({"system": "x", "applies_to": []}, "tiers.small.prompt.applies_to", "non-empty list"),
        ({"system": "x", "applies_to": {"text": True}}, "tiers.small.prompt.applies_to", "expected a request shape"),
    ],
)
def test_a_bad_tier_variant_names_its_path(variant: Any, path: str, why: str) -> None:
    message = config_error(registry_doc(tier_prompt=variant))
    assert message.startswith(f"{path}: ") and why in message


@pytest.mark.parametrize(
    ("variants", "path", "why"),
    [
        ({"small": {"system": "x", "mode": "wrap"}}, "tasks.titles.prompts.small.mode", "unknown key"),
        ({"small": {"system_mode": "replace"}}, "tasks.titles.prompts.small", "needs `system`"),
        ({"small": {"system": "x", "system_mode": "wrap"}}, "tasks.titles.prompts.small.system", "{original}"),
        ({"nano": {"system": "x"}}, "tasks.titles.prompts.nano", "'nano' is not a defined tier"),
        ([{"system": "x"}], "tasks.titles.prompts", "expected a mapping"),
    ],
)
def test_a_bad_task_variant_names_its_path(variants: Any, path: str, why: str) -> None:
    message = config_error(registry_doc(task_prompts=variants))
    assert message.startswith(f"{path}: ") and why in message


def test_variant_names_default_to_the_tier_and_task_at_tier() -> None:
    registry = build(
        registry_doc(tier_prompt={"system": "Be terse."}, task_prompts={"mid": {"append_to_last_user": "Short."}})
    )
    assert registry.tiers["small"].prompt == PromptVariant("small", system="Be terse.")
    assert registry.tasks["titles"].prompts["mid"] == PromptVariant("titles@mid", append_to_last_user="Short.")


def test_the_shipped_variants() -> None:
    registry = shipped_registry("http://127.0.0.1:1")
    assert registry.tiers["small"].prompt == PromptVariant(
        "small-terse", append_to_last_user=SMALL_TERSE, applies_to=frozenset({"text"})
    )
    assert registry.tasks["title_generation"].prompts["small"] == PromptVariant("title-small", system=TITLE_SMALL)
    assert [t for t, tier in registry.tiers.items() if tier.prompt is not None] == ["small"]


# --- request shapes: a variant may reword only some -----------------------------------------------------

SCHEMA_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "f", "schema": {"type": "object"}}}
TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "text"),
        ({"response_format": {"type": "text"}}, "text"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"response_format": SCHEMA_FORMAT}, "json_schema"),
        ({"tools": [TOOL]}, "tools"),
        ({"tools": [TOOL], "response_format": SCHEMA_FORMAT}, "tools"),  # a tool turn first
        ({"tools": [TOOL], "tool_choice": "none"}, "text"),  # tools offered but not to be called
        ({"tools": []}, "text"),
    ],
)
def test_a_requests_shape(extra: dict[str, Any], expected: str) -> None:
    assert prompts.shape({"messages": CONVERSATION, **extra}) == expected


def test_applies_to_a_shape_or_a_list_of_them() -> None:
    registry = build(registry_doc(tier_prompt={"system": "x", "applies_to": "text"}))
    assert registry.tiers["small"].prompt == PromptVariant("small", system="x", applies_to=frozenset({"text"}))
    registry = build(registry_doc(tier_prompt={"system": "x", "applies_to": ["text", "tools"]}))
    variant = registry.tiers["small"].prompt
    assert variant is not None and variant.applies_to == {"text", "tools"}
    assert variant.applies({"tools": [TOOL]}) and not variant.applies({"response_format": SCHEMA_FORMAT})
    assert PromptVariant("all", system="x").applies({"response_format": {"type": "a_future_format"}})


# --- end to end: what the upstream received, what the ledger says ------------------------------------------


async def run(
    start_proxy: ProxyFactory, registry: Registry, db: Path, task: str, messages: list[Any], **kwargs: Any
) -> Any:
    """One call through a tiergate that stops afterwards (so its ledger is on disk); the raw response."""
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url, {"X-Task-Type": task})
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages, **kwargs)
        if kwargs.get("stream"):
            [_ async for _ in raw.parse()]
        await client.close()
    return raw


async def test_the_small_tier_variant_is_appended_to_the_last_user_message(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    raw = await run(start_proxy, shipped_registry(upstream_url), db, "extraction", CONVERSATION)
    assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-model"]) == ("small", "gpt-5.4-nano")
    [request] = fake.requests
    assert request.body["messages"] == [
        *CONVERSATION[:3],
        {"role": "user", "content": f"It fixed retries.\n\n{SMALL_TERSE}"},
    ]
    [row] = rows(db)
    assert (row["task"], row["tier"], row["prompt_variant"]) == ("extraction", "small", "small-terse")


async def test_the_title_generation_variant_on_small_is_a_system_message(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    await run(start_proxy, shipped_registry(upstream_url), db, "title_generation", CONVERSATION, stream=True)
    [request] = fake.requests
    # the task's variant for the tier beats the tier's own: nothing appended to the user message
    assert request.body["messages"] == [{"role": "system", "content": TITLE_SMALL}, *CONVERSATION]
    [row] = rows(db)
    assert (row["task"], row["tier"], row["stream"], row["prompt_variant"]) == (
        "title_generation",
        "small",
        1,
        "title-small",
    )


SMALL_WORDINGS = {
    "title_generation": [{"role": "system", "content": TITLE_SMALL}, *CONVERSATION],
    "extraction": [*CONVERSATION[:3], {"role": "user", "content": f"It fixed retries.\n\n{SMALL_TERSE}"}],
}


@pytest.mark.parametrize("task", list(SMALL_WORDINGS))
async def test_a_fallback_into_mid_sends_the_clients_own_messages(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path, task: str
) -> None:
    # small: openai answers 503 and anthropic is unreachable (the shipped test registry's CLOSED_URL)
    fake._choose = lambda body: Behavior(status=503) if body["model"] == "gpt-5.4-nano" else None  # noqa: SLF001
    db = tmp_path / "ledger.db"
    raw = await run(start_proxy, shipped_registry(upstream_url), db, task, CONVERSATION)
    assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-model"]) == ("mid", "gpt-5.4-mini")
    assert raw.headers["x-tiergate-fallback"] == "true"
    small, mid = fake.requests
    assert (small.body["model"], small.body["messages"]) == ("gpt-5.4-nano", SMALL_WORDINGS[task])
    assert (mid.body["model"], mid.body["messages"]) == ("gpt-5.4-mini", CONVERSATION)  # mid has no variant
    [row] = rows(db)
    assert (row["tier"], row["model"], row["prompt_variant"], row["fallback"]) == ("mid", "gpt-5.4-mini", None, 1)
    attempts = rows(db, "attempts")
    assert [(a["tier"], a["provider"], a["status"], a["error_type"]) for a in attempts] == [
        ("small", "openai", 503, "server_error"),
        ("small", "anthropic", None, "upstream_unreachable"),
        ("mid", "openai", 200, None),
    ]


def chain_registry(upstream_url: str) -> Registry:
    """small -> mid -> big, each worded its own way: a tier variant, another, and a task variant."""
    openai = {"type": "openai", "base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY}
    return build(
        {
            "providers": {"openai": openai},
            "tiers": {
                "small": {
                    "targets": ["openai::small-model"],
                    "fallback_tier": "mid",
                    "prompt": {"name": "small-v", "append_to_last_user": "One line."},
                },
                "mid": {
                    "targets": ["openai::mid-model"],
                    "fallback_tier": "big",
                    "prompt": {"name": "mid-v", "system": "Mid rules.\n{original}", "system_mode": "wrap"},
                },
                "big": {"targets": ["openai::big-model"], "prompt": {"name": "big-tier-v", "system": "unused"}},
            },
            "tasks": {
                "chat": {
                    "tier": "small",
                    "prompts": {"big": {"name": "chat-big", "system": "Big.", "system_mode": "replace"}},
                }
            },
            "policy": {"retries": 0},
        }
    )


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_each_hop_gets_its_own_tiers_variant(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path, stream: bool
) -> None:
    fake._choose = lambda body: Behavior(status=503) if body["model"] != "big-model" else None  # noqa: SLF001
    db = tmp_path / "ledger.db"
    raw = await run(start_proxy, chain_registry(upstream_url), db, "chat", CONVERSATION, stream=stream)
    assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-attempts"]) == ("big", "3")
    sent = {r.body["model"]: r.body["messages"] for r in fake.requests}
    assert sent == {
        "small-model": [*CONVERSATION[:3], {"role": "user", "content": "It fixed retries.\n\nOne line."}],
        "mid-model": [{"role": "system", "content": "Mid rules.\nYou are helpful."}, *CONVERSATION[1:]],
        "big-model": [{"role": "system", "content": "Big."}, *CONVERSATION[1:]],  # the task's, not big's own
    }
    [row] = rows(db)
    assert (row["tier"], row["model"], row["prompt_variant"], row["stream"]) == ("big", "big-model", "chat-big", stream)
    assert [(a["tier"], a["status"]) for a in rows(db, "attempts")] == [("small", 503), ("mid", 503), ("big", 200)]


@pytest.mark.parametrize(
    "extra",
    [{"response_format": SCHEMA_FORMAT}, {"response_format": {"type": "json_object"}}, {"tools": [TOOL]}],
    ids=["json_schema", "json_object", "tools"],
)
async def test_the_shipped_small_variant_leaves_structured_and_tool_calls_alone(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path, extra: dict[str, Any]
) -> None:
    db = tmp_path / "ledger.db"
    raw = await run(start_proxy, shipped_registry(upstream_url), db, "extraction", CONVERSATION, **extra)
    assert raw.headers["x-tiergate-tier"] == "small"
    [request] = fake.requests
    assert request.body["messages"] == CONVERSATION  # as the client sent them: no "Answer with only..."
    [row] = rows(db)
    assert (row["task"], row["tier"], row["prompt_variant"]) == ("extraction", "small", None)
