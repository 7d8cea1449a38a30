"""pydantic-ai Agents on OpenAIChatModel (chat completions) and OpenAIResponsesModel against tiergate."""

from __future__ import annotations

import asyncio

from common import ASK, BASE, KEY, Ticket, expect, fake_text, headers, run
from openai import AsyncOpenAI
from pydantic_ai import Agent, Embedder
from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider


def provider(task: str) -> OpenAIProvider:
    return OpenAIProvider(openai_client=AsyncOpenAI(base_url=BASE, api_key=KEY, default_headers=headers(task)))


def model(task: str, responses: bool, name: str = "auto") -> OpenAIChatModel | OpenAIResponsesModel:
    kind = OpenAIResponsesModel if responses else OpenAIChatModel
    return kind(name, provider=provider(task))


def plain(responses: bool) -> None:
    fake_text(Agent(model("summary", responses)).run_sync(ASK).output, "gpt-5.4-mini")


def stream(responses: bool) -> None:
    async def go() -> list[str]:
        async with Agent(model("summary", responses)).run_stream(ASK) as result:
            return [delta async for delta in result.stream_text(delta=True, debounce_by=None)]

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


def embeddings() -> None:
    embedder = Embedder(OpenAIEmbeddingModel("auto", provider=provider("retrieval")))
    result = asyncio.run(embedder.embed_documents(["moving cron jobs", "a queue"]))
    expect(len(result.embeddings) == 2 and len(result.embeddings[0]) == 1536, "not 2 vectors of 1536")


def responses_anthropic() -> None:
    output = Agent(model("agent", True, "claude-opus-5-5")).run_sync(ASK).output
    fake_text(output, "Fake Claude reply from claude-opus-5-5")


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
        ("embeddings", embeddings),
        ("resp-anthropic", responses_anthropic),
    ],
)
