"""LangChain's ChatOpenAI (chat completions and use_responses_api=True) and OpenAIEmbeddings against tiergate."""

from __future__ import annotations

from common import ASK, BASE, KEY, WEATHER_SCHEMA, Ticket, expect, fake_text, headers, run
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": WEATHER_SCHEMA}}


def model(task: str, *, responses: bool = False, name: str = "auto") -> ChatOpenAI:
    return ChatOpenAI(
        model=name,
        base_url=BASE,
        api_key=KEY,
        max_retries=0,
        default_headers=headers(task),
        use_responses_api=responses,
    )


def plain(responses: bool) -> None:
    fake_text(model("summary", responses=responses).invoke(ASK).text(), "gpt-5.4-mini")


def stream(responses: bool) -> None:
    chunks = [c.text() for c in model("summary", responses=responses).stream(ASK)]
    expect(len([c for c in chunks if c]) > 1, f"{len(chunks)} chunks")
    fake_text("".join(chunks), "gpt-5.4-mini")


def tools(responses: bool) -> None:
    reply = model("agent", responses=responses).bind_tools([TOOL]).invoke(ASK)
    calls = reply.tool_calls
    expect(len(calls) == 1 and calls[0]["name"] == "get_weather", f"tool calls {calls!r}")
    expect(isinstance(calls[0]["args"]["city"], str), "no city")


def structured(responses: bool) -> None:
    answer = model("extraction", responses=responses).with_structured_output(Ticket).invoke(ASK)
    expect(isinstance(answer, Ticket), f"answer {answer!r}")


def embeddings() -> None:
    # check_embedding_ctx_length=False: otherwise LangChain tokenizes with tiktoken, whose files it downloads.
    embedder = OpenAIEmbeddings(
        model="auto", base_url=BASE, api_key=KEY, check_embedding_ctx_length=False, default_headers=headers("retrieval")
    )
    vectors = embedder.embed_documents(["moving cron jobs", "a queue"])
    expect(len(vectors) == 2 and len(vectors[0]) == 1536, "not 2 vectors of 1536")
    expect(len(embedder.embed_query("a queue")) == 1536, "query vector not 1536")


def responses_anthropic() -> None:
    agent = model("agent", responses=True, name="claude-opus-5-5")
    fake_text(agent.invoke(ASK).text(), "Fake Claude reply from claude-opus-5-5")
    chunks = [c.text() for c in agent.stream(ASK)]
    expect(len([c for c in chunks if c]) > 1, f"{len(chunks)} chunks")
    fake_text("".join(chunks), "Fake Claude reply from claude-opus-5-5")


run(
    "langchain-openai",
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
