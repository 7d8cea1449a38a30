"""pydantic-ai Agents on OpenAIChatModel (chat completions) and OpenAIResponsesModel against tiergate."""

from __future__ import annotations

from common import ASK, BASE, KEY, Ticket, expect, fake_text, headers, run
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider


def provider(task: str) -> OpenAIProvider:
    return OpenAIProvider(openai_client=AsyncOpenAI(base_url=BASE, api_key=KEY, default_headers=headers(task)))


def model(task: str, responses: bool) -> OpenAIChatModel | OpenAIResponsesModel:
    kind = OpenAIResponsesModel if responses else OpenAIChatModel
    return kind("auto", provider=provider(task))


def plain(responses: bool) -> None:
    fake_text(Agent(model("summary", responses)).run_sync(ASK).output, "gpt-5.4-mini")


def stream(responses: bool) -> None:
    async def go() -> list[str]:
        async with Agent(model("summary", responses)).run_stream(ASK) as result:
            return [delta async for delta in result.stream_text(delta=True)]

    import asyncio

    deltas = asyncio.run(go())
    expect(len(deltas) > 1, f"{len(deltas)} deltas")
    fake_text("".join(deltas), "gpt-5.4-mini")


def tools(responses: bool) -> None:
    called: list[str] = []
    agent = Agent(model("agent", responses))

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return "sunny"

    output = agent.run_sync(ASK).output  # the fake calls the tool, then answers text after its result
    expect(len(called) == 1, f"tool called {len(called)} times")
    fake_text(output, "gpt-5.5")


def structured(responses: bool) -> None:
    output = Agent(model("extraction", responses), output_type=Ticket).run_sync(ASK).output
    expect(isinstance(output, Ticket), f"output {output!r}")


run(
    "pydantic-ai",
    [
        ("chat", lambda: plain(False)),
        ("chat-stream", lambda: stream(False)),
        ("chat-tools", lambda: tools(False)),
        ("chat-structured", lambda: structured(False)),
        ("resp", lambda: plain(True)),
        ("resp-stream", lambda: stream(True)),
        ("resp-tools", lambda: tools(True)),
        ("resp-structured", lambda: structured(True)),
    ],
)
