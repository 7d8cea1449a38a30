"""``POST /v1/responses`` in the ledger, and streams that end badly: SDK -> tiergate -> fakes, row by row.

Usage arrives only in a Responses stream's terminal event; the ledger keeps it in its usual columns
(``input_tokens`` -> ``prompt_tokens``, ``cached_tokens``, ``output_tokens`` -> ``completion_tokens``,
``reasoning_tokens``). A stream cut before that event is estimated (``usage_source`` 'estimated'), as a
chat stream cut before its usage chunk is. Each test runs its own tiergate, whose ledger is flushed when
it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from proxy.fakes.anthropic import FakeAnthropic, count_input_tokens
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.fakes.responses import input_tokens
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from tests.conftest import CLIENT_KEY, ProxyFactory, sdk
from tests.responses_spec import assert_event, sse_events
from tests.test_ledger import rows

GPT = "gpt-5.4-mini"
CLAUDE = "claude-sonnet-5-5"
QUESTION = "Name this chat about moving cron jobs to a queue"


def registry(openai_url: str, anthropic_url: str) -> Registry:
    return build(
        {
            "providers": {
                "openai": {"type": "openai", "base_url": openai_url + "/v1", "api_key": "sk-up"},
                "anthropic": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant"},
            },
            "tiers": {"gpt": {"targets": [f"openai::{GPT}"]}, "claude": {"targets": [f"anthropic::{CLAUDE}"]}},
            "tasks": {"summary": {"tier": "gpt"}, "narrative": {"tier": "claude"}},
            "default_task": "summary",
            "policy": {"retries": 0},
        }
    )


@asynccontextmanager
async def tiergate(
    start_proxy: ProxyFactory, fake: FakeOpenAI, claude: FakeAnthropic, db: Path, **overrides: Any
) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client of tiergate (``overrides`` for ``start_proxy``) in front of both fakes."""
    async with serve(fake) as gpt_url, serve(claude) as claude_url:
        async with start_proxy(registry(gpt_url, claude_url), db=str(db), **overrides) as url:
            client = sdk(url)
            yield client
            await client.close()


def sse(*events: dict[str, Any]) -> bytes:
    """A verbatim Responses stream body: each event with its ``event:`` line and the next sequence number."""
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps({**e, "sequence_number": i}) + b"\n\n"
        for i, e in enumerate(events)
    )


def opening(response_id: str = "resp_up_1") -> dict[str, Any]:
    response = {
        "id": response_id, "object": "response", "created_at": 1, "status": "in_progress", "error": None,
        "incomplete_details": None, "instructions": None, "model": GPT, "output": [], "parallel_tool_calls": True,
        "metadata": {}, "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0,
    }  # fmt: skip
    return {"type": "response.created", "response": response}


async def test_usage_of_every_kind_of_call_is_in_the_ledger(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    claude = FakeAnthropic()
    db = tmp_path / "ledger.db"
    async with tiergate(start_proxy, fake, claude, db) as client:
        plain = await client.responses.create(model="auto", input=QUESTION, extra_headers={"X-Task-Type": "summary"})
        native_in = input_tokens(fake.requests[-1].body)
        streamed = await client.responses.create(
            model="auto", input=QUESTION, stream=True, extra_headers={"X-Task-Type": "summary"}
        )
        events = [e async for e in streamed]
        translated = await client.responses.create(
            model="auto", input=QUESTION, extra_headers={"X-Task-Type": "narrative"}
        )
        claude_in = count_input_tokens(claude.requests[-1].body)
        async with client.responses.stream(
            model="auto", input=QUESTION, extra_headers={"X-Task-Type": "narrative"}
        ) as helper:
            final = await helper.get_final_response()
    assert events[-1].type == "response.completed"
    ledger = rows(db)
    assert [(r["task"], r["provider"], r["model"], r["stream"]) for r in ledger] == [
        ("summary", "openai", GPT, 0),
        ("summary", "openai", GPT, 1),
        ("narrative", "anthropic", CLAUDE, 0),
        ("narrative", "anthropic", CLAUDE, 1),
    ]
    gpt_out = len(f"Fake reply from {GPT}: {QUESTION}".split())
    claude_out = len(f"Fake Claude reply from {CLAUDE}: {QUESTION}".split())
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in ledger] == [
        (native_in, gpt_out),
        (native_in, gpt_out),
        (claude_in, claude_out),
        (claude_in, claude_out),
    ]
    for row in ledger:
        assert (row["status"], row["error_type"], row["usage_source"], row["requested_model"]) == (
            200,
            None,
            "upstream",
            "auto",
        )
        assert row["cost_usd"] > 0 and row["attempts"] == 1 and row["request_id"]
    assert plain.usage is not None and translated.usage is not None and final.usage is not None
    assert ledger[1]["ttft_ms"] is not None and ledger[3]["ttft_ms"] is not None


async def test_cached_and_reasoning_tokens_are_mapped(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    usage = {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 0},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 250},
        "total_tokens": 1500,
    }
    completed = opening()["response"] | {"status": "completed", "usage": usage}
    fake.push(
        Behavior(body=orjson.dumps(completed)),
        Behavior(body=sse(opening(), {"type": "response.completed", "response": completed})),
    )
    db = tmp_path / "ledger.db"
    async with tiergate(start_proxy, fake, FakeAnthropic(), db) as client:
        response = await client.responses.create(model="auto", input=QUESTION)
        stream = await client.responses.create(model="auto", input=QUESTION, stream=True)
        assert [e.type async for e in stream] == ["response.created", "response.completed"]
    assert response.id == "resp_up_1"  # the upstream's own id, unchanged
    for row in rows(db):
        assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"], row["reasoning_tokens"]) == (
            1200,
            1000,
            300,
            250,
        )
        assert row["usage_source"] == "upstream"


@pytest.mark.parametrize("task", ["summary", "narrative"], ids=["native", "translated"])
async def test_a_stream_cut_before_completed_is_estimated(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path, task: str
) -> None:
    claude = FakeAnthropic()
    (fake if task == "summary" else claude).push(Behavior(reset_after_chunks=6))
    db = tmp_path / "ledger.db"
    async with tiergate(start_proxy, fake, claude, db) as client:
        stream = await client.responses.create(
            model="auto", input=QUESTION, stream=True, extra_headers={"X-Task-Type": task}
        )
        seen = []
        with pytest.raises(openai.APIError) as caught:
            async for event in stream:
                seen.append(event)
    assert "closed the connection" in caught.value.message
    assert any(e.type == "response.output_text.delta" for e in seen)
    assert all(e.type != "response.completed" for e in seen)
    (row,) = rows(db)
    assert (row["status"], row["error_type"], row["usage_source"]) == (200, "upstream_unreachable", "estimated")
    assert row["completion_tokens"] >= 1 and row["prompt_tokens"] >= 1 and row["cost_usd"] > 0


async def test_an_upstream_error_event_ends_the_stream_with_an_error_event(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "delta": "Hel", "logprobs": []}  # fmt: skip
    # OpenAI's own spelling: the error inside the event, not at its top as the spec draws it.
    error = {"type": "error", "error": {"type": "server_error", "code": "server_is_overloaded",
                                        "message": "The server is overloaded.", "param": None}}  # fmt: skip
    fake.push(Behavior(body=sse(opening(), delta, error)))
    db = tmp_path / "ledger.db"
    async with serve(fake) as gpt_url, start_proxy(registry(gpt_url, "http://127.0.0.1:1"), db=str(db)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as http:
            r = await http.post("/v1/responses", json={"model": "auto", "input": QUESTION, "stream": True})
        events = sse_events(r.text)
        client = sdk(url)
        fake.push(Behavior(body=sse(opening(), delta, error)))
        stream = await client.responses.create(model="auto", input=QUESTION, stream=True)
        with pytest.raises(openai.APIError) as caught:
            _ = [e async for e in stream]
        await client.close()
    assert [e["type"] for e in events] == ["response.created", "response.output_text.delta", "error"]
    last = assert_event(events[-1])
    assert (last.code, last.message, last.sequence_number) == ("server_is_overloaded", "The server is overloaded.", 2)
    assert events[-1]["error"]["code"] == "server_is_overloaded"
    assert caught.value.message == "The server is overloaded."
    assert [(r["status"], r["error_type"], r["usage_source"]) for r in rows(db)] == [
        (200, "server_is_overloaded", "estimated")
    ] * 2


async def test_a_failed_response_is_relayed_and_recorded(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    failed = opening()["response"] | {
        "status": "failed",
        "error": {"code": "server_error", "message": "Something went wrong."},
    }
    fake.push(Behavior(body=sse(opening(), {"type": "response.failed", "response": failed})))
    db = tmp_path / "ledger.db"
    async with serve(fake) as gpt_url, start_proxy(registry(gpt_url, "http://127.0.0.1:1"), db=str(db)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as http:
            r = await http.post("/v1/responses", json={"model": "auto", "input": QUESTION, "stream": True})
    events = sse_events(r.text)
    assert [e["type"] for e in events] == ["response.created", "response.failed"]
    for event in events:
        assert_event(event)
    ((status, error),) = [(row["status"], row["error_type"]) for row in rows(db)]
    assert (status, error) == (200, "server_error")


async def test_a_stream_that_ends_without_a_terminal_event_is_an_error(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "delta": "Hel", "logprobs": []}  # fmt: skip
    fake.push(Behavior(body=sse(opening(), delta)))
    db = tmp_path / "ledger.db"
    async with serve(fake) as gpt_url, start_proxy(registry(gpt_url, "http://127.0.0.1:1"), db=str(db)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as http:
            r = await http.post("/v1/responses", json={"model": "auto", "input": QUESTION, "stream": True})
    events = sse_events(r.text)
    assert [e["type"] for e in events] == ["response.created", "response.output_text.delta", "error"]
    assert events[-1]["code"] == "upstream_unreachable" and events[-1]["sequence_number"] == 2
    ((error, source),) = [(row["error_type"], row["usage_source"]) for row in rows(db)]
    assert (error, source) == ("upstream_unreachable", "estimated")
