"""The openai Python SDK against tiergate: chat, Responses (create / stream / parse), embeddings."""

from __future__ import annotations

import json

from common import ASK, BASE, KEY, TICKET_SCHEMA, WEATHER_SCHEMA, Ticket, expect, fake_text, headers, run
from openai import OpenAI

client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=60)
MESSAGES = [{"role": "user", "content": ASK}]
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True}


def chat() -> None:
    reply = client.chat.completions.create(model="auto", messages=MESSAGES, extra_headers=headers("summary"))
    fake_text(reply.choices[0].message.content, "gpt-5.4-mini")


def chat_stream() -> None:
    stream = client.chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, extra_headers=headers("summary")
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    expect(len(pieces) > 1, f"{len(pieces)} chunks")
    fake_text("".join(pieces), "gpt-5.4-mini")


def chat_tools() -> None:
    reply = client.chat.completions.create(
        model="auto", messages=MESSAGES, tools=[CHAT_TOOL], extra_headers=headers("agent")
    )
    calls = reply.choices[0].message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "get_weather", f"tool calls {calls!r}")
    expect(isinstance(json.loads(calls[0].function.arguments)["city"], str), "no city")


def chat_structured() -> None:
    reply = client.chat.completions.parse(
        model="auto", messages=MESSAGES, response_format=Ticket, extra_headers=headers("extraction")
    )
    expect(isinstance(reply.choices[0].message.parsed, Ticket), f"parsed {reply.choices[0].message.parsed!r}")


def responses() -> None:
    response = client.responses.create(model="auto", input=ASK, extra_headers=headers("summary"))
    fake_text(response.output_text, "gpt-5.4-mini")


def responses_stream() -> None:
    with client.responses.stream(model="auto", input=ASK, extra_headers=headers("summary")) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    expect(len(deltas) > 1, f"{len(deltas)} deltas")
    fake_text("".join(deltas), "gpt-5.4-mini")
    expect(final.output_text == "".join(deltas), "final text differs from the deltas")


def responses_tools() -> None:
    response = client.responses.create(model="auto", input=ASK, tools=[RESPONSES_TOOL], extra_headers=headers("agent"))
    calls = [item for item in response.output if item.type == "function_call"]
    expect(len(calls) == 1 and calls[0].name == "get_weather", f"output {response.output!r}")
    expect(isinstance(json.loads(calls[0].arguments)["city"], str), "no city")


def responses_structured() -> None:
    response = client.responses.parse(model="auto", input=ASK, text_format=Ticket, extra_headers=headers("extraction"))
    expect(isinstance(response.output_parsed, Ticket), f"parsed {response.output_parsed!r}")
    raw = client.responses.create(
        model="auto",
        input=ASK,
        text={"format": {"type": "json_schema", "name": "ticket", "schema": TICKET_SCHEMA, "strict": True}},
        extra_headers=headers("extraction"),
    )
    Ticket.model_validate_json(raw.output_text)


def embeddings() -> None:
    vectors = client.embeddings.create(
        model="auto", input=["moving cron jobs", "a queue"], extra_headers=headers("retrieval")
    )
    expect(len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536, "not 2 vectors of 1536")


def responses_anthropic() -> None:
    # The agent task's second target is Anthropic: the model pins it, tiergate translates Responses <-> Messages.
    response = client.responses.with_raw_response.create(
        model="claude-opus-5-5", input=ASK, extra_headers=headers("agent")
    )
    expect(response.headers.get("x-tiergate-model") == "claude-opus-5-5", "not served by claude-opus-5-5")
    fake_text(response.parse().output_text, "Fake Claude reply from claude-opus-5-5")
    with client.responses.stream(model="claude-opus-5-5", input=ASK, extra_headers=headers("agent")) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    expect(len(deltas) > 1, f"{len(deltas)} streamed deltas")
    expect(final.output_text == "".join(deltas), "final text differs from the deltas")
    fake_text(final.output_text, "Fake Claude reply from claude-opus-5-5")
    tools = client.responses.create(
        model="claude-opus-5-5", input=ASK, tools=[RESPONSES_TOOL], extra_headers=headers("agent")
    )
    calls = [item for item in tools.output if item.type == "function_call"]
    expect(len(calls) == 1 and calls[0].name == "get_weather", f"translated tool output {tools.output!r}")


run(
    "openai-python",
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
