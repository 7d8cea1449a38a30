"""Our fake Anthropic upstream, checked with the official anthropic SDK: if the SDK reads it, the
adapter tests that run against it test the real wire format."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import anthropic
import pytest
import pytest_asyncio
from pydantic import BaseModel, Field

from proxy.fakes.anthropic import ClaudeBehavior, FakeAnthropic
from proxy.fakes.openai import Behavior
from proxy.loopback import serve
from tests.test_fake_schema import assert_valid

pytestmark = pytest.mark.asyncio(loop_scope="module")
ASK = [{"role": "user", "content": "Name three queue brokers please"}]


@pytest.fixture(scope="module")
def claude() -> FakeAnthropic:
    return FakeAnthropic()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sdk(claude: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with serve(claude) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
        yield client
        await client.close()


async def test_message_parses_with_usage_and_cache_fields(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic) -> None:
    claude.push(ClaudeBehavior(cache_read_tokens=7, cache_creation_tokens=3))
    message = await sdk.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=ASK)  # type: ignore[arg-type]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text.startswith("Fake Claude reply")
    assert message.stop_reason == "end_turn"
    assert message.usage.cache_read_input_tokens == 7 and message.usage.cache_creation_input_tokens == 3
    assert claude.requests[-1].headers["anthropic-version"]  # the SDK pins its version


async def test_stream_events_parse_and_accumulate(sdk: anthropic.AsyncAnthropic) -> None:
    async with sdk.messages.stream(model="claude-sonnet-5-5", max_tokens=64, messages=ASK) as stream:  # type: ignore[arg-type]
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == final.content[0].text and text.startswith("Fake Claude reply")  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


async def test_tool_use_parses(sdk: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}]
    message = await sdk.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=ASK, tools=tools)  # type: ignore[arg-type]
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content if b.type == "tool_use"] == ["tool_use"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, anthropic.BadRequestError), (429, anthropic.RateLimitError), (529, anthropic.InternalServerError)],
)
async def test_errors_map_to_the_sdk_exceptions(
    sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, status: int, error: type[Exception]
) -> None:
    claude.push(Behavior(status=status))
    with pytest.raises(error) as caught:
        await sdk.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=ASK)  # type: ignore[arg-type]
    assert caught.value.status_code == status  # type: ignore[attr-defined]


async def test_mid_stream_error_event_raises(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic) -> None:
    claude.push(ClaudeBehavior(error_after_events=2))
    with pytest.raises(anthropic.APIStatusError):
        async with sdk.messages.stream(model="claude-sonnet-5-5", max_tokens=64, messages=ASK) as stream:  # type: ignore[arg-type]
            async for _ in stream:
                pass


# --- structured output and tool inputs ------------------------------------------------------------------


class Ticket(BaseModel):
    title: str
    labels: list[Literal["bug", "billing", "feature"]]
    priority: Annotated[int, Field(ge=1, le=5)]
    due: dt.date | None


async def test_output_format_parses_into_the_model(sdk: anthropic.AsyncAnthropic) -> None:
    message = await sdk.messages.parse(
        model="claude-sonnet-5-5",
        max_tokens=256,
        messages=ASK,
        output_format=Ticket,  # type: ignore[arg-type]
    )
    assert isinstance(message.parsed_output, Ticket)
    assert message.parsed_output.labels and 1 <= message.parsed_output.priority <= 5


async def test_tool_use_input_is_valid_against_the_input_schema(sdk: anthropic.AsyncAnthropic) -> None:
    schema = Ticket.model_json_schema()
    message = await sdk.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=256,
        messages=ASK,  # type: ignore[arg-type]
        tools=[{"name": "file_ticket", "input_schema": schema}],  # type: ignore[typeddict-item]
    )
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "file_ticket"
    assert_valid(schema, block.input)
    Ticket.model_validate(block.input)


async def test_a_system_prompt_asking_for_a_json_object_gets_one(sdk: anthropic.AsyncAnthropic) -> None:
    message = await sdk.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=256,
        messages=ASK,
        system="Reply with a JSON object.",  # type: ignore[arg-type]
    )
    block = message.content[0]
    assert block.type == "text" and isinstance(json.loads(block.text), dict)
