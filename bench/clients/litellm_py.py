"""LiteLLM (completion, responses, embedding) with an openai/ model at tiergate's base URL."""

from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price map at import

import litellm  # noqa: E402
from common import ASK, BASE, KEY, TICKET_SCHEMA, WEATHER_SCHEMA, Ticket, expect, fake_text, headers, run  # noqa: E402

litellm.telemetry = False
MESSAGES = [{"role": "user", "content": ASK}]
AT = {"model": "openai/auto", "api_base": BASE, "api_key": KEY}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True}


def chat() -> None:
    reply = litellm.completion(messages=MESSAGES, extra_headers=headers("summary"), **AT)
    fake_text(reply.choices[0].message.content, "gpt-5.4-mini")


def chat_stream() -> None:
    stream = litellm.completion(messages=MESSAGES, stream=True, extra_headers=headers("summary"), **AT)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    expect(len([p for p in pieces if p]) > 1, f"{len(pieces)} chunks")
    fake_text("".join(pieces), "gpt-5.4-mini")


def chat_tools() -> None:
    reply = litellm.completion(messages=MESSAGES, tools=[CHAT_TOOL], extra_headers=headers("agent"), **AT)
    calls = reply.choices[0].message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "get_weather", f"tool calls {calls!r}")
    expect(isinstance(json.loads(calls[0].function.arguments)["city"], str), "no city")


def chat_structured() -> None:
    reply = litellm.completion(messages=MESSAGES, response_format=Ticket, extra_headers=headers("extraction"), **AT)
    Ticket.model_validate_json(reply.choices[0].message.content)


def responses() -> None:
    response = litellm.responses(input=ASK, extra_headers=headers("summary"), **AT)
    fake_text(response.output[0].content[0].text, "gpt-5.4-mini")


def responses_stream() -> None:
    stream = litellm.responses(input=ASK, stream=True, extra_headers=headers("summary"), **AT)
    deltas = [e.delta for e in stream if getattr(e, "type", "") == "response.output_text.delta"]
    expect(len(deltas) > 1, f"{len(deltas)} deltas")
    fake_text("".join(deltas), "gpt-5.4-mini")


def responses_tools() -> None:
    response = litellm.responses(input=ASK, tools=[RESPONSES_TOOL], extra_headers=headers("agent"), **AT)
    calls = [item for item in response.output if getattr(item, "type", "") == "function_call"]
    expect(len(calls) == 1 and calls[0].name == "get_weather", f"output {response.output!r}")
    expect(isinstance(json.loads(calls[0].arguments)["city"], str), "no city")


def responses_structured() -> None:
    text = {"format": {"type": "json_schema", "name": "ticket", "schema": TICKET_SCHEMA, "strict": True}}
    response = litellm.responses(input=ASK, text=text, extra_headers=headers("extraction"), **AT)
    Ticket.model_validate_json(response.output[0].content[0].text)


def embeddings() -> None:
    vectors = litellm.embedding(input=["moving cron jobs", "a queue"], extra_headers=headers("retrieval"), **AT)
    expect(len(vectors.data) == 2 and len(vectors.data[0]["embedding"]) == 1536, "not 2 vectors of 1536")


def responses_anthropic() -> None:
    at = {**AT, "model": "openai/claude-opus-5-5"}
    response = litellm.responses(input=ASK, extra_headers=headers("agent"), **at)
    fake_text(response.output[0].content[0].text, "Fake Claude reply from claude-opus-5-5")
    stream = litellm.responses(input=ASK, stream=True, extra_headers=headers("agent"), **at)
    deltas = [e.delta for e in stream if getattr(e, "type", "") == "response.output_text.delta"]
    expect(len(deltas) > 1, f"{len(deltas)} deltas")
    fake_text("".join(deltas), "Fake Claude reply from claude-opus-5-5")


run(
    "litellm",
    [
        ("chat", chat),
        ("chat-stream", chat_stream),
        ("chat-tools", chat_tools),
        ("chat-structured", chat_structured),
        ("resp", responses),
        ("resp-stream", responses_stream),
        ("resp-tools", responses_tools),
        ("resp-structured", responses_structured),
        ("embeddings", embeddings),
        ("resp-anthropic", responses_anthropic),
    ],
)
