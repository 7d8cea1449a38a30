"""instructor (response_model) on the openai SDK against tiergate: tool mode, JSON-schema mode, partial streams."""

from __future__ import annotations

import instructor
from common import ASK, BASE, KEY, Ticket, expect, headers, run
from openai import OpenAI

MESSAGES = [{"role": "user", "content": ASK}]


def structured(mode: instructor.Mode) -> None:
    client = instructor.from_openai(OpenAI(base_url=BASE, api_key=KEY, max_retries=0), mode=mode)
    ticket = client.chat.completions.create(
        model="auto", messages=MESSAGES, response_model=Ticket, max_retries=0, extra_headers=headers("extraction")
    )
    expect(isinstance(ticket, Ticket), f"answer {ticket!r}")


def both_modes() -> None:
    structured(instructor.Mode.TOOLS)  # the default: response_model answered as a forced tool call
    structured(instructor.Mode.JSON_SCHEMA)  # as response_format json_schema


def partial_stream() -> None:
    client = instructor.from_openai(OpenAI(base_url=BASE, api_key=KEY, max_retries=0))
    parts = list(
        client.chat.completions.create_partial(
            model="auto", messages=MESSAGES, response_model=Ticket, extra_headers=headers("extraction")
        )
    )
    expect(len(parts) > 1, f"{len(parts)} partials")
    Ticket.model_validate(parts[-1].model_dump())


def responses_structured() -> None:
    client = instructor.from_openai(
        OpenAI(base_url=BASE, api_key=KEY, max_retries=0), mode=instructor.Mode.RESPONSES_TOOLS
    )
    ticket = client.responses.create(
        model="auto", input=ASK, response_model=Ticket, max_retries=0, extra_headers=headers("extraction")
    )
    expect(isinstance(ticket, Ticket), f"answer {ticket!r}")


run(
    "instructor",
    [
        ("chat-structured", both_modes),
        ("chat-stream", partial_stream),  # create_partial: a streamed response_model
        ("resp-structured", responses_structured),  # Mode.RESPONSES_TOOLS: response_model on the Responses API
    ],
)
