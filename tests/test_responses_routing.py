"""Responses calls on the shipped rules.yaml: classification, tier params, prompt variants, local handlers.

SDK -> tiergate -> FakeOpenAI (native ``/v1/responses``); Anthropic points at a closed port, as in the
chat tests. What the registry says for a chat call holds for a Responses call, in Responses terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from proxy.errors import ConfigError
from proxy.fakes.openai import FakeOpenAI
from proxy.rules import build
from tests.conftest import ProxyFactory, sdk
from tests.test_ledger import rows
from tests.test_responses import WEATHER


def last(fake: FakeOpenAI) -> dict[str, Any]:
    request = fake.requests[-1]
    assert request.path == "/v1/responses"
    body: dict[str, Any] = request.body
    return body


async def test_untagged_calls_are_classified_from_their_shape(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    raw = await client.responses.with_raw_response.create(model="auto", input="Weather in Paris?", tools=[WEATHER])
    assert (raw.headers["x-tiergate-task"], raw.headers["x-tiergate-task-source"]) == ("agent", "rule:tools")

    class Fields(BaseModel):
        name: str

    raw = await client.responses.with_raw_response.create(
        model="auto",
        input="Extract the name from: Ada wrote to us.",
        text={"format": {"type": "json_schema", "name": "Fields", "schema": Fields.model_json_schema()}},
    )
    assert (raw.headers["x-tiergate-task"], raw.headers["x-tiergate-task-source"]) == (
        "extraction",
        "rule:structured-output",
    )
    raw = await client.responses.with_raw_response.create(
        model="auto", instructions="You write conversation titles.", input="cron jobs to a queue"
    )
    assert raw.headers["x-tiergate-task"] == "title_generation"
    raw = await client.responses.with_raw_response.create(model="auto", input="Tell me a story.")
    assert (raw.headers["x-tiergate-task"], raw.headers["x-tiergate-task-source"]) == ("agent", "default")


async def test_tier_params_are_sent_under_their_responses_names(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    # relevance: small tier (max_tokens 512, temperature 0.2, reasoning_effort none), task max_tokens 8.
    await client.responses.create(model="auto", input="Is this relevant?", extra_headers={"X-Task-Type": "relevance"})
    sent = last(fake)
    assert sent["model"] == "gpt-5.4-nano"
    assert sent["max_output_tokens"] == 16  # the task's 8, raised to the Responses API's minimum
    assert sent["temperature"] == 0  # the task's param beats the tier's
    assert sent["reasoning"] == {"effort": "none"}
    assert "max_tokens" not in sent and "reasoning_effort" not in sent and "stream_options" not in sent

    # The client's own values win; the task's cap still applies (title_generation: cap 64).
    await client.responses.create(
        model="auto",
        input="Title?",
        max_output_tokens=500,
        reasoning={"effort": "low"},
        extra_headers={"X-Task-Type": "title_generation"},
    )
    sent = last(fake)
    assert (sent["max_output_tokens"], sent["reasoning"]) == (64, {"effort": "low"})


async def test_prompt_variants_rewrite_instructions_and_the_last_user_input(
    client: AsyncOpenAI, fake: FakeOpenAI
) -> None:
    # title_generation on small has its own variant (a system text, prepended); the small tier's own one
    # (relevance gets it) appends to the last user message.
    await client.responses.create(
        model="auto",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "cron jobs to a queue"}]}],
        extra_headers={"X-Task-Type": "title_generation"},
    )
    sent = last(fake)
    assert (
        sent["instructions"] == "You write conversation titles: 3 to 8 words, no quotes, no final period.\n\nBe brief."
    )
    assert sent["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "cron jobs to a queue"}]}]
    await client.responses.create(model="auto", input="Is it?", extra_headers={"X-Task-Type": "relevance"})
    assert last(fake)["input"] == "Is it?\n\nAnswer with only what was asked: no preamble, no explanation."
    await client.responses.create(
        model="auto",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Is it?"}]}],
        extra_headers={"X-Task-Type": "relevance"},
    )
    assert last(fake)["input"][-1]["content"] == [
        {"type": "input_text", "text": "Is it?"},
        {"type": "input_text", "text": "Answer with only what was asked: no preamble, no explanation."},
    ]


@pytest.mark.parametrize("responses", ["native", "chat"])
async def test_a_variant_rewords_only_the_request_shapes_it_applies_to(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path, responses: str
) -> None:
    # A Responses request's shape is its chat view's: function tools (unless tool_choice is none), else
    # text.format; natively and translated alike, and the ledger names the variant only where it applied.
    provider = {"type": "openai", "base_url": upstream_url + "/v1", "options": {"responses": responses}}
    prompt = {"name": "terse", "append_to_last_user": "Be terse.", "applies_to": ["text"]}
    registry = build(
        {
            "providers": {"p": provider},
            "tiers": {"t": {"targets": ["p::m"], "prompt": prompt}},
            "tasks": {"x": {"tier": "t"}},
        }
    )

    class Fields(BaseModel):
        name: str

    schema = {"format": {"type": "json_schema", "name": "Fields", "schema": Fields.model_json_schema()}}
    db = tmp_path / "ledger.db"
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url)
        await client.responses.create(model="auto", input="Hi")
        parsed = await client.responses.parse(model="auto", input="Hi", text_format=Fields)
        await client.responses.create(model="auto", input="Hi", text=schema)  # type: ignore[arg-type]
        await client.responses.create(model="auto", input="Hi", tools=[WEATHER])
        await client.responses.create(model="auto", input="Hi", tools=[WEATHER], tool_choice="none")
        await client.close()
    assert isinstance(parsed.output_parsed, Fields)  # the fake's answer is valid against the schema
    if responses == "native":
        texts = [r.body["input"] for r in fake.requests]
    else:
        texts = [r.body["messages"][-1]["content"] for r in fake.requests]
    assert texts == ["Hi\n\nBe terse.", "Hi", "Hi", "Hi", "Hi\n\nBe terse."]
    assert [row["prompt_variant"] for row in rows(db)] == ["terse", None, None, None, "terse"]


@pytest.mark.parametrize(
    ("ticket", "provider", "answer"),
    [
        ("I was charged twice, please refund the invoice", "local", "billing"),
        ("Hello there", "openai", None),  # the table declines: the small tier answers, natively
    ],
    ids=["labelled-locally", "declined-then-native"],
)
async def test_a_local_handler_answers_through_translation_and_falls_over_to_a_native_target(
    client: AsyncOpenAI, fake: FakeOpenAI, ticket: str, provider: str, answer: str | None
) -> None:
    raw = await client.responses.with_raw_response.create(
        model="auto", input=ticket, extra_headers={"X-Task-Type": "classification"}
    )
    response = raw.parse()
    assert raw.headers["x-tiergate-provider"] == provider
    if answer is not None:
        assert response.output_text == answer and fake.requests == []
        assert response.usage is not None and response.usage.output_tokens >= 1
    else:
        assert response.output_text.startswith("Fake reply from gpt-5.4-nano")
        assert raw.headers["x-tiergate-fallback"] == "true" and last(fake)["max_output_tokens"] == 16

    stream = await client.responses.create(
        model="auto", input=ticket, stream=True, extra_headers={"X-Task-Type": "classification"}
    )
    texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    assert ("".join(texts) == answer) if answer is not None else "".join(texts).startswith("Fake reply")


async def test_an_openai_compatible_server_without_responses_is_served_through_its_chat_completions(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    provider = {"type": "openai", "base_url": upstream_url + "/v1", "options": {"responses": "chat"}}
    registry = build(
        {"providers": {"vllm": provider}, "tiers": {"t": {"targets": ["vllm::llama"]}}, "tasks": {"x": {"tier": "t"}}}
    )
    async with start_proxy(registry) as url:
        client = sdk(url)
        response = await client.responses.create(model="auto", input="Hi there", instructions="Be brief.")
        stream = await client.responses.create(model="auto", input="Hi there", stream=True)
        events = [e async for e in stream]
        await client.close()
    assert response.output_text == "Fake reply from llama: Hi there" and response.usage is not None
    assert events[-1].type == "response.completed"
    chat, streamed = fake.requests
    assert chat.path == streamed.path == "/v1/chat/completions"
    assert chat.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    assert streamed.body["stream_options"] == {"include_usage": True}  # usage for the ledger, as for chat


def test_the_responses_option_is_checked_at_load() -> None:
    provider = {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "options": {"responses": "sometimes"}}
    with pytest.raises(ConfigError, match=r"^providers\.p\.options\.responses: expected native or chat"):
        build({"providers": {"p": provider}, "tiers": {"t": {"targets": ["p::m"]}}, "tasks": {"x": {"tier": "t"}}})
