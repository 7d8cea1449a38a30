"""``response_format: json_object`` on an Anthropic target: an instruction in, a JSON check out.

The Messages API has no schema-less JSON mode, so tiergate asks for a JSON object in ``system`` and checks
the answer: a stray answer (prose, fenced JSON, an array) is a failed attempt (502 ``invalid_json_output``),
retried on the same target, then failed over (here to an OpenAI target, which has a native JSON mode); a
streamed one ends with an error event. The openai SDK is the client, the fakes are the providers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio

from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.providers.anthropic.json_object import INSTRUCTION
from proxy.registry import Registry
from proxy.rules import build
from tests.conftest import FakeClock, ProxyFactory, clean, sdk
from tests.test_ledger import rows

ASK: list[Any] = [{"role": "user", "content": "The billing export fails every Monday"}]
JSON_OBJECT: Any = {"type": "json_object"}
PROSE = 'Sure! Here is the JSON: {"issue": "billing export"}'


@pytest_asyncio.fixture
async def claude() -> AsyncIterator[tuple[FakeAnthropic, str]]:
    with clean(FakeAnthropic()) as fake:
        async with serve(fake) as url:
            yield fake, url


def registry(anthropic_url: str, openai_url: str) -> Registry:
    return build(
        {
            "providers": {
                "anthropic": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant-fake"},
                "openai": {"type": "openai", "base_url": openai_url + "/v1", "api_key": "sk-fake"},
            },
            "tiers": {
                "claude": {"targets": ["anthropic::claude-haiku-5-5"]},
                "claude_then_gpt": {"targets": ["anthropic::claude-haiku-5-5", "openai::gpt-5.4-nano"]},
            },
            "tasks": {"claude": "claude", "fallback": "claude_then_gpt"},
            "policy": {"retries": 1},
        }
    )


async def call(url: str, task: str, **kwargs: Any) -> Any:
    async with sdk(url, {"X-Task-Type": task}) as client:
        return await client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=JSON_OBJECT, **kwargs
        )


async def test_a_json_object_answer_passes(
    start_proxy: ProxyFactory, claude: tuple[FakeAnthropic, str], upstream_url: str
) -> None:
    fake, anthropic_url = claude
    async with start_proxy(registry(anthropic_url, upstream_url)) as url:
        raw = await call(url, "claude")
    assert raw.headers["x-tiergate-attempts"] == "1"
    assert isinstance(json.loads(raw.parse().choices[0].message.content), dict)
    assert fake.requests[0].body["system"] == INSTRUCTION


@pytest.mark.parametrize(
    "stray", [PROSE, '```json\n{"a": 1}\n```', "[1, 2]", ""], ids=["prose", "fenced", "array", "empty"]
)
async def test_a_stray_answer_is_retried_then_falls_over(
    start_proxy: ProxyFactory,
    claude: tuple[FakeAnthropic, str],
    fake: FakeOpenAI,
    upstream_url: str,
    tmp_path: Path,
    stray: str,
) -> None:
    claude_fake, anthropic_url = claude
    claude_fake.push(Behavior(text=stray), Behavior(text=stray))
    db = tmp_path / "ledger.db"
    async with start_proxy(registry(anthropic_url, upstream_url), clock=FakeClock(), db=str(db)) as url:
        raw = await call(url, "fallback")
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-attempts"]) == ("openai", "3")
    assert isinstance(json.loads(raw.parse().choices[0].message.content), dict)
    assert fake.requests[0].body["response_format"] == JSON_OBJECT  # OpenAI's own JSON mode
    attempts = [(a["provider"], a["status"], a["error_type"]) for a in rows(db, "attempts")]
    assert attempts == [("anthropic", 200, "invalid_json_output")] * 2 + [("openai", 200, None)]
    [row] = rows(db)
    assert (row["status"], row["provider"], row["fallback"]) == (200, "openai", 1)


async def test_when_every_try_strays_the_client_gets_a_clear_502(
    start_proxy: ProxyFactory, claude: tuple[FakeAnthropic, str], upstream_url: str, tmp_path: Path
) -> None:
    claude_fake, anthropic_url = claude
    claude_fake.push(Behavior(text=PROSE), Behavior(text=PROSE))
    db = tmp_path / "ledger.db"
    async with start_proxy(registry(anthropic_url, upstream_url), clock=FakeClock(), db=str(db)) as url:
        with pytest.raises(openai.InternalServerError) as caught:
            await call(url, "claude")
    error = caught.value
    assert error.status_code == 502 and error.code == "invalid_json_output"
    assert "JSON object" in error.message
    assert error.response.headers["x-tiergate-attempts"] == "2"
    [row] = rows(db)
    assert (row["status"], row["error_type"]) == (502, "invalid_json_output")


async def test_a_stray_stream_ends_with_an_error_event(
    start_proxy: ProxyFactory, claude: tuple[FakeAnthropic, str], upstream_url: str, tmp_path: Path
) -> None:
    claude_fake, anthropic_url = claude
    claude_fake.push(Behavior(text=PROSE))
    db = tmp_path / "ledger.db"
    async with start_proxy(registry(anthropic_url, upstream_url), db=str(db)) as url:
        async with sdk(url, {"X-Task-Type": "claude"}) as client:
            stream = await client.chat.completions.create(
                model="auto", messages=ASK, response_format=JSON_OBJECT, stream=True
            )
            text, finishes = "", []
            with pytest.raises(openai.APIError) as caught:
                async for chunk in stream:
                    text += "".join(c.delta.content or "" for c in chunk.choices)
                    finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    assert text == PROSE and finishes == []  # relayed as it came; no finish chunk after it
    assert "JSON object" in caught.value.message
    [row] = rows(db)
    assert (row["status"], row["error_type"], row["stream"]) == (200, "invalid_json_output", 1)


async def test_a_json_stream_finishes_cleanly(
    start_proxy: ProxyFactory, claude: tuple[FakeAnthropic, str], upstream_url: str
) -> None:
    _, anthropic_url = claude
    async with start_proxy(registry(anthropic_url, upstream_url)) as url:
        async with sdk(url, {"X-Task-Type": "claude"}) as client:
            stream = await client.chat.completions.create(
                model="auto", messages=ASK, response_format=JSON_OBJECT, stream=True
            )
            chunks = [c async for c in stream]
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert isinstance(json.loads(text), dict)
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == ["stop"]


async def test_cut_answers_and_tool_calls_are_not_checked(
    start_proxy: ProxyFactory, claude: tuple[FakeAnthropic, str], upstream_url: str
) -> None:
    claude_fake, anthropic_url = claude
    claude_fake.push(Behavior(text="one two three four"))
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    async with start_proxy(registry(anthropic_url, upstream_url)) as url:
        cut = (await call(url, "claude", max_tokens=2)).parse()
        called = (await call(url, "claude", tools=[tool])).parse()
    # As OpenAI's JSON mode: an answer cut by max_tokens is passed on with finish_reason length ...
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("one two", "length")
    # ... and a tool call is not an answer to check.
    assert called.choices[0].finish_reason == "tool_calls" and called.choices[0].message.content is None
