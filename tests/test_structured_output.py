"""Structured output end to end: the openai SDK's ``parse`` helpers -> tiergate -> each fake provider.

``client.chat.completions.parse(response_format=<pydantic model>)``, its streaming twin, and strict
function tools (``openai.pydantic_function_tool``) must hand the app a validated model, whichever
provider serves the tier: the OpenAI fake (json_schema forwarded as is) or the Anthropic fake behind the
Messages translation (``output_config.format``, ``tool_use`` input). The fakes answer values valid
against the schema (``proxy.fakes.schema``); what is tested here is that nothing on the way breaks them.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from proxy.app import create_app
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI
from proxy.loopback import serve
from proxy.rules import build
from proxy.settings import Settings
from tests.conftest import RULES, sdk

pytestmark = pytest.mark.asyncio(loop_scope="module")

TASKS = ["via_openai", "via_anthropic"]
ASK: list[Any] = [{"role": "user", "content": "File a ticket: the billing export has been failing since Monday"}]


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Contact(BaseModel):
    name: str
    email: str | None


class Ticket(BaseModel):
    title: Annotated[str, Field(min_length=3)]
    severity: Severity
    labels: list[Literal["bug", "billing", "feature"]]
    estimate_hours: float
    reporter: Contact
    watchers: list[Contact]
    due: dt.date | None


class Lookup(BaseModel):
    """Look a customer up by id."""

    customer_id: int
    include_invoices: bool


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncOpenAI]:
    async with serve(FakeOpenAI()) as openai_url, serve(FakeAnthropic()) as anthropic_url:
        registry = build(
            {
                "providers": {
                    "openai": {"type": "openai", "base_url": openai_url + "/v1", "api_key": "sk-fake"},
                    "anthropic": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant-fake"},
                },
                "tiers": {
                    "gpt": {"targets": ["openai::gpt-5.4-mini"]},
                    "claude": {"targets": ["anthropic::claude-sonnet-5-5"]},
                },
                "tasks": {"via_openai": "gpt", "via_anthropic": "claude"},
                "policy": {"retries": 0},
            }
        )
        settings = Settings(config=str(RULES), db=str(tmp_path_factory.mktemp("structured") / "ledger.db"))
        async with serve(create_app(settings, registry)) as url:
            async with sdk(url) as c:
                yield c


@pytest.mark.parametrize("task", TASKS)
async def test_parse_returns_the_pydantic_model(client: AsyncOpenAI, task: str) -> None:
    completion = await client.chat.completions.parse(
        model="auto", messages=ASK, response_format=Ticket, extra_headers={"X-Task-Type": task}
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Ticket) and message.refusal is None
    assert Ticket.model_validate_json(message.content or "") == message.parsed


@pytest.mark.parametrize("task", TASKS)
async def test_streamed_parse_returns_the_pydantic_model(client: AsyncOpenAI, task: str) -> None:
    async with client.chat.completions.stream(
        model="auto", messages=ASK, response_format=Ticket, extra_headers={"X-Task-Type": task}
    ) as stream:
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Ticket)


@pytest.mark.parametrize("task", TASKS)
async def test_strict_tools_parse_their_arguments(client: AsyncOpenAI, task: str) -> None:
    completion = await client.chat.completions.parse(
        model="auto",
        messages=ASK,
        tools=[openai.pydantic_function_tool(Lookup), openai.pydantic_function_tool(Ticket)],
        tool_choice={"type": "function", "function": {"name": "Ticket"}},
        extra_headers={"X-Task-Type": task},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "Ticket" and isinstance(call.function.parsed_arguments, Ticket)


@pytest.mark.parametrize("task", TASKS)
async def test_plain_tools_get_arguments_valid_for_their_schema(client: AsyncOpenAI, task: str) -> None:
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": Lookup.model_json_schema()}}
    completion = await client.chat.completions.create(
        model="auto", messages=ASK, tools=[tool], extra_headers={"X-Task-Type": task}
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    Lookup.model_validate_json(call.function.arguments)


@pytest.mark.parametrize("task", TASKS)
async def test_json_object_is_a_json_object(client: AsyncOpenAI, task: str) -> None:
    completion = await client.chat.completions.create(
        model="auto", messages=ASK, response_format={"type": "json_object"}, extra_headers={"X-Task-Type": task}
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


async def test_n_parsed_choices_on_openai(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.parse(
        model="auto", messages=ASK, response_format=Ticket, n=3, extra_headers={"X-Task-Type": "via_openai"}
    )
    parsed = [c.message.parsed for c in completion.choices]
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(isinstance(p, Ticket) for p in parsed) and len({p.model_dump_json() for p in parsed if p}) == 3
