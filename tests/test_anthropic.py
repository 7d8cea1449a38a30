"""``type: anthropic`` end to end: official openai SDK -> tiergate (uvicorn) -> FakeAnthropic (uvicorn).

Clients speak OpenAI chat; the assertions read both ends: what the SDK got back (validated against
OpenAI's spec where the raw body is at hand) and the Messages body and headers the fake received.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from openai import AsyncOpenAI

from proxy.app import create_app
from proxy.errors import UpstreamStatus
from proxy.fakes.anthropic import ClaudeBehavior, FakeAnthropic, count_input_tokens
from proxy.fakes.openai import Behavior
from proxy.loopback import serve
from proxy.providers.anthropic.stream import ChunkTranslator
from proxy.redact import Redactor
from proxy.registry import Registry
from proxy.rules import build
from proxy.settings import Settings
from tests.conftest import CLIENT_KEY, RULES, ProxyFactory, clean, sdk
from tests.test_openai_spec import assert_valid, post_stream

# One fake and one tiergate serve the module (stopping a uvicorn server costs ~0.3 s); the tests share
# the module's event loop with them. The fixtures are named for the module, not after conftest's.
pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "claude-sonnet-5-5"
API_KEY = "sk-ant-test"
USER: list[Any] = [{"role": "user", "content": "Name this chat about moving cron jobs to a queue"}]
EXPECTED = f"Fake Claude reply from {MODEL}: Name this chat about moving cron jobs to a queue"
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}
OTHER: Any = {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCg=="
PART = "messages[0].content[0]"
# What ``response_format: json_object`` becomes (the Messages API has no schema-less JSON mode).
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."


def registry(url: str) -> Registry:
    def provider(version: str, **options: str) -> dict[str, Any]:
        return {
            "type": "anthropic",
            "base_url": url,
            "api_key": API_KEY,
            "options": {"anthropic_version": version, **options},
        }

    return build(
        {
            "providers": {
                "anthropic": provider("2023-06-01"),
                "anthropic_next": provider("2026-10-21", anthropic_beta="fake-beta-2026"),
            },
            "tiers": {
                "claude": {"targets": [f"anthropic::{MODEL}"]},
                "claude_next": {"targets": [f"anthropic_next::{MODEL}"]},
            },
            "tasks": {"chat": {"tier": "claude"}},
            "policy": {"retries": 0},  # a scripted fault is what the client sees
        }
    )


@pytest.fixture(scope="module")
def anthropic_fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def anthropic_upstream_url(anthropic_fake: FakeAnthropic) -> AsyncIterator[str]:
    async with serve(anthropic_fake) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def anthropic_proxy_url(
    anthropic_upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    db = tmp_path_factory.mktemp("anthropic") / "ledger.db"
    settings = Settings(config=str(RULES), db=str(db))
    async with serve(create_app(settings, registry(anthropic_upstream_url))) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_anthropic_fake(anthropic_fake: FakeAnthropic) -> Iterator[None]:
    """Each test starts with no script and no recorded requests, and must consume what it pushes."""
    with clean(anthropic_fake):
        yield


@pytest_asyncio.fixture(loop_scope="module")
async def anthropic_client(anthropic_proxy_url: str) -> AsyncIterator[AsyncOpenAI]:
    c = sdk(anthropic_proxy_url, organization="org-client")
    yield c
    await c.close()


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    body: dict[str, Any] = fake.requests[-1].body
    return body


# --- plain calls ---------------------------------------------------------------------------------------


async def test_plain_text_call(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    raw = await anthropic_client.chat.completions.with_raw_response.create(model="auto", messages=USER)
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    completion = raw.parse()
    assert raw.headers["x-request-id"] == "req_fake_1"  # Anthropic's request-id header
    assert raw.headers["x-tiergate-provider"] == "anthropic" and raw.headers["x-tiergate-model"] == MODEL
    assert (completion.id, completion.object, completion.model) == ("msg_fake_1", "chat.completion", MODEL)
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.message.content) == (0, "stop", EXPECTED)
    assert choice.message.tool_calls is None and choice.message.refusal is None
    body = sent(anthropic_fake)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_input_tokens(body)
    assert completion.usage.completion_tokens == len(EXPECTED.split())

    request = anthropic_fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert body == {
        "model": MODEL,
        "max_tokens": 4096,  # required by Anthropic: the provider default when nobody set one
        "messages": [{"role": "user", "content": USER[0]["content"]}],
        "stream": False,
    }
    headers = request.headers
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers and "anthropic-beta" not in headers
    assert "openai-organization" not in headers  # an OpenAI account id means nothing to Anthropic
    assert CLIENT_KEY not in str(headers)


async def test_system_and_developer_messages_are_hoisted_and_same_role_turns_merged(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "assistant", "content": "Encore"},
        {"role": "user", "content": "Name three queues"},
    ]
    completion = await anthropic_client.chat.completions.create(model="auto", messages=messages, max_tokens=300)
    assert completion.choices[0].message.content == f"Fake Claude reply from {MODEL}: Name three queues"
    body = sent(anthropic_fake)
    assert body["system"] == "Be brief.\nAnswer in French."
    assert body["max_tokens"] == 300
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}, {"type": "text", "text": "Encore"}]},
        {"role": "user", "content": "Name three queues"},
    ]


async def test_images_and_pdf_become_blocks(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    content: list[Any] = [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "spec.pdf"}},
    ]
    await anthropic_client.chat.completions.create(model="auto", messages=[{"role": "user", "content": content}])
    assert sent(anthropic_fake)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "spec.pdf",
        },
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}, f"{PART}.image_url.url"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,abc"}}, f"{PART}.image_url.url"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, f"{PART}.file"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, PART),
    ],
)
async def test_content_anthropic_cannot_take_is_a_400_naming_the_part(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic, part: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        messages: Any = [{"role": "user", "content": [part]}]
        await anthropic_client.chat.completions.create(model="auto", messages=messages)
    assert err.value.param == param
    assert anthropic_fake.requests == []


# --- tools ---------------------------------------------------------------------------------------------


async def test_tool_round_trip(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.push(ClaudeBehavior(tool_calls=2))
    first = await anthropic_client.chat.completions.create(model="auto", messages=USER, tools=[LOOKUP, OTHER])
    assert sent(anthropic_fake)["tools"] == [
        {"name": "lookup", "input_schema": LOOKUP["function"]["parameters"], "description": "Look a word up"},
        {"name": "other", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent(anthropic_fake)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_fake_1", "function", "lookup", '{"word":"fake"}'),
        ("toolu_fake_2", "function", "lookup", '{"word":"fake 2"}'),  # parallel calls, distinct inputs
    ]

    history: list[Any] = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "toolu_fake_1", "content": "a queue is a line"},
        {"role": "tool", "tool_call_id": "toolu_fake_2", "content": [{"type": "text", "text": "FIFO"}]},
    ]
    second = await anthropic_client.chat.completions.create(model="auto", messages=history, tools=[LOOKUP])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == EXPECTED  # the tool answered: text from the last user text
    assert sent(anthropic_fake)["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_fake_1", "name": "lookup", "input": {"word": "fake"}},
                {"type": "tool_use", "id": "toolu_fake_2", "name": "lookup", "input": {"word": "fake 2"}},
            ],
        },
        {
            "role": "user",  # consecutive tool results: one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_fake_1", "content": "a queue is a line"},
                {"type": "tool_result", "tool_use_id": "toolu_fake_2", "content": [{"type": "text", "text": "FIFO"}]},
            ],
        },
    ]


async def test_tool_call_arguments_that_are_not_json_are_a_400(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{word: fake"}}
    history: list[Any] = [*USER, {"role": "assistant", "tool_calls": [call]}]
    with pytest.raises(openai.BadRequestError) as err:
        await anthropic_client.chat.completions.create(model="auto", messages=history, tools=[LOOKUP])
    assert err.value.param == "messages[1].tool_calls[0].function.arguments"
    assert anthropic_fake.requests == []


@pytest.mark.parametrize(
    ("choice", "parallel", "expected", "called"),
    [
        ("auto", None, {"type": "auto"}, "lookup"),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}, "lookup"),
        ("required", True, {"type": "any"}, "lookup"),
        ("none", None, {"type": "none"}, None),
        ({"type": "function", "function": {"name": "other"}}, False,
         {"type": "tool", "name": "other", "disable_parallel_tool_use": True}, "other"),
    ],
)  # fmt: skip
async def test_tool_choice_and_parallel_tool_calls(
    anthropic_client: AsyncOpenAI,
    anthropic_fake: FakeAnthropic,
    choice: Any,
    parallel: bool | None,
    expected: Any,
    called: str | None,
) -> None:
    anthropic_fake.push(ClaudeBehavior(tool_calls=2))
    extra: dict[str, Any] = {"tool_choice": choice} if choice is not None else {}
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    completion = await anthropic_client.chat.completions.create(
        model="auto", messages=USER, tools=[LOOKUP, OTHER], **extra
    )
    assert sent(anthropic_fake)["tool_choice"] == expected
    calls = completion.choices[0].message.tool_calls or []
    assert {c.function.name for c in calls} == ({called} if called else set())
    assert len(calls) == (0 if called is None else 1 if parallel is False else 2)


# --- request fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["cron", ["nothing-here", "cron"]])
async def test_stop_becomes_stop_sequences(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic, stop: Any
) -> None:
    completion = await anthropic_client.chat.completions.create(model="auto", messages=USER, stop=stop)
    assert sent(anthropic_fake)["stop_sequences"] == (stop if isinstance(stop, list) else [stop])
    assert completion.choices[0].message.content == f"Fake Claude reply from {MODEL}: Name this chat about moving "
    assert completion.choices[0].finish_reason == "stop"


async def test_fields_are_mapped_or_dropped(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    schema: Any = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    await anthropic_client.chat.completions.create(
        model="auto",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}},
        reasoning_effort="high",
        user="u-42",
        max_completion_tokens=77,
        seed=7,
        logprobs=True,
        top_logprobs=2,
        logit_bias={"50256": -100},
        frequency_penalty=0.5,
        presence_penalty=0.5,
        metadata={"team": "search"},
        service_tier="flex",
        store=True,
        n=1,
    )
    assert sent(anthropic_fake) == {
        "model": MODEL,
        "max_tokens": 77,
        "messages": [{"role": "user", "content": USER[0]["content"]}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "high"},
        "metadata": {"user_id": "u-42"},
        "stream": False,
    }


@pytest.mark.parametrize(
    ("system", "expected"),
    [(None, JSON_INSTRUCTION), ("Be brief.", f"Be brief.\n\n{JSON_INSTRUCTION}")],
    ids=["no-system", "after-the-system-text"],
)
async def test_json_object_becomes_an_instruction_in_system(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic, system: str | None, expected: str
) -> None:
    messages: list[Any] = [*([{"role": "system", "content": system}] if system else []), *USER]
    await anthropic_client.chat.completions.create(
        model="auto", messages=messages, response_format={"type": "json_object"}
    )
    body = sent(anthropic_fake)
    assert body["system"] == expected
    assert "response_format" not in body and "output_config" not in body  # no Messages field for it
    assert body["messages"] == [{"role": "user", "content": USER[0]["content"]}]


async def test_n_above_one_is_a_400(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await anthropic_client.chat.completions.create(model="auto", messages=USER, n=2)
    assert err.value.param == "n" and err.value.type == "invalid_request_error"
    assert anthropic_fake.requests == []


async def test_sampling_params_follow_the_api_version(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    params: dict[str, Any] = {"temperature": 1.5, "top_p": 0.9, "extra_body": {"top_k": 40}}
    await anthropic_client.chat.completions.create(model="auto", messages=USER, **params)
    body = sent(anthropic_fake)
    assert (body["temperature"], body["top_p"], body["top_k"]) == (1.0, 0.9, 40)  # clamped to Anthropic's range

    completion = await anthropic_client.chat.completions.create(model="tier:claude_next", messages=USER, **params)
    assert completion.choices[0].message.content == EXPECTED  # the fake 400s on sampling params here
    request = anthropic_fake.requests[-1]
    assert not {"temperature", "top_p", "top_k"} & set(request.body)
    assert request.headers["anthropic-version"] == "2026-10-21"
    assert request.headers["anthropic-beta"] == "fake-beta-2026"


# --- streaming ----------------------------------------------------------------------------------------


async def test_stream_text_without_usage(anthropic_proxy_url: str, anthropic_fake: FakeAnthropic) -> None:
    chunks = await post_stream(anthropic_proxy_url, {"model": "auto", "messages": USER, "stream": True})
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk and chunk["choices"]  # the usage chunk tiergate records is not sent
        assert (chunk["id"], chunk["model"]) == ("msg_fake_1", MODEL)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == EXPECTED
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert sent(anthropic_fake)["stream"] is True and "stream_options" not in sent(anthropic_fake)


async def test_stream_usage_chunk_maps_cache_tokens(anthropic_proxy_url: str, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.push(ClaudeBehavior(cache_read_tokens=1000, cache_creation_tokens=200))
    body = {"model": "auto", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await post_stream(anthropic_proxy_url, body)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    usage, fresh = chunks[-1]["usage"], count_input_tokens(sent(anthropic_fake))
    assert chunks[-1]["choices"] == [] and all("usage" not in c for c in chunks[:-1])
    assert usage == {
        "prompt_tokens": fresh + 1200,
        "completion_tokens": len(EXPECTED.split()),
        "total_tokens": fresh + 1200 + len(EXPECTED.split()),
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_stream_tool_call_argument_deltas(anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic) -> None:
    # thinking first: its block index (0) shifts the tool blocks to 1 and 2, tool indexes stay 0 and 1
    anthropic_fake.push(ClaudeBehavior(thinking="Let me think.", tool_calls=2))
    stream = await anthropic_client.chat.completions.create(model="auto", messages=USER, tools=[LOOKUP], stream=True)
    calls: dict[int, dict[str, str]] = {}
    pieces: dict[int, int] = {}
    finish, text = None, ""
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or ():
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += (call.function and call.function.name) or ""
            entry["arguments"] += (call.function and call.function.arguments) or ""
            pieces[call.index] = pieces.get(call.index, 0) + 1
        finish = chunk.choices[0].finish_reason or finish
    assert calls == {
        0: {"id": "toolu_fake_1", "name": "lookup", "arguments": '{"word":"fake"}'},
        1: {"id": "toolu_fake_2", "name": "lookup", "arguments": '{"word":"fake 2"}'},
    }
    assert pieces == {0: 3, 1: 4}  # the opening delta, then the arguments in 8-character pieces
    assert finish == "tool_calls" and text == ""  # the thinking block is dropped


async def test_error_event_mid_stream_raises_api_error(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.push(ClaudeBehavior(error_after_events=4))
    stream = await anthropic_client.chat.completions.create(model="auto", messages=USER, stream=True)
    seen = 0
    with pytest.raises(openai.APIError) as err:
        async for _chunk in stream:
            seen += 1
    assert seen >= 2 and "Overloaded" in err.value.message
    assert err.value.code == "overloaded_error"


@pytest.mark.parametrize(
    "behavior",
    [
        Behavior(reset_after_chunks=3),
        # a clean end before message_stop is a cut stream too
        Behavior(body=b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_x","model":"m"}}\n\n'),
    ],
)
async def test_cut_stream_raises_api_error(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic, behavior: Behavior
) -> None:
    anthropic_fake.push(behavior)
    stream = await anthropic_client.chat.completions.create(model="auto", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as err:
        async for _chunk in stream:
            pass
    assert err.value.code == "upstream_unreachable"


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "exception", "client_status", "code"),
    [
        (400, {}, openai.BadRequestError, 400, "invalid_request_error"),
        (401, {}, openai.AuthenticationError, 401, "authentication_error"),
        (429, {"retry-after": "7"}, openai.RateLimitError, 429, "rate_limit_error"),
        (529, {"retry-after": "3"}, openai.InternalServerError, 503, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_are_mapped(
    anthropic_client: AsyncOpenAI,
    anthropic_fake: FakeAnthropic,
    status: int,
    headers: dict[str, str],
    exception: type[openai.APIStatusError],
    client_status: int,
    code: str,
    stream: bool,
) -> None:
    anthropic_fake.push(Behavior(status=status, headers=headers))
    with pytest.raises(exception) as err:
        await anthropic_client.chat.completions.create(model="auto", messages=USER, stream=stream)
    assert err.value.status_code == client_status
    assert (err.value.code, err.value.type) == (code, code)
    if status in (401, 403):  # about tiergate's provider key: its message is never passed on
        assert "refused tiergate's credentials" in err.value.body["message"]  # type: ignore[index]
    else:
        assert err.value.body["message"] == f"Fake Anthropic error {status}"  # type: ignore[index]
    for name, value in headers.items():
        assert err.value.response.headers[name] == value


async def test_prompt_too_long_gets_openai_context_length_code(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    error = {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}
    anthropic_fake.push(Behavior(status=400, body=json.dumps({"type": "error", "error": error}).encode()))
    with pytest.raises(openai.BadRequestError) as err:
        await anthropic_client.chat.completions.create(model="auto", messages=USER)
    assert (err.value.code, err.value.type) == ("context_length_exceeded", "invalid_request_error")


async def test_error_body_that_is_not_anthropic_json(
    anthropic_client: AsyncOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.push(Behavior(status=529, body=b"<html>overloaded</html>"))
    with pytest.raises(openai.InternalServerError) as err:
        await anthropic_client.chat.completions.create(model="auto", messages=USER)
    assert err.value.status_code == 503 and "<html>" not in err.value.message


# --- the ledger prices cache reads and writes -----------------------------------------------------------


async def test_ledger_row_prices_cache_tokens(
    start_proxy: ProxyFactory, anthropic_upstream_url: str, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    anthropic_fake.push(
        ClaudeBehavior(cache_read_tokens=3000, cache_creation_tokens=500),
        ClaudeBehavior(cache_read_tokens=2000, cache_creation_tokens=100),
    )
    async with start_proxy(registry(anthropic_upstream_url), db=str(db)) as url:
        client = sdk(url)
        await client.chat.completions.create(model="auto", messages=USER, user="plain")
        stream = await client.chat.completions.create(model="auto", messages=USER, user="stream", stream=True)
        async for _chunk in stream:
            pass
        await client.close()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {r["end_user"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    conn.close()
    fresh = count_input_tokens(anthropic_fake.requests[0].body)
    output = len(EXPECTED.split())
    for user, read, written in (("plain", 3000, 500), ("stream", 2000, 100)):
        row = rows[user]
        assert (row["provider"], row["model"], row["usage_source"]) == ("anthropic", MODEL, "upstream")
        assert row["prompt_tokens"] == fresh + read + written and row["completion_tokens"] == output
        assert (row["cached_tokens"], row["cache_write_tokens"]) == (read, written)
        total = fresh + read + written
        cached = PriceUsage(
            input_tokens=total, cache_read_tokens=read, cache_write_tokens=written, output_tokens=output
        )
        price = calc_price(cached, model_ref=MODEL, provider_id="anthropic").total_price
        assert row["cost_usd"] == pytest.approx(float(price), rel=1e-9)
        uncached = PriceUsage(input_tokens=total, output_tokens=output)
        assert price < calc_price(uncached, model_ref=MODEL, provider_id="anthropic").total_price  # a real discount


# --- the stream translator alone -------------------------------------------------------------------------


async def test_translator_takes_cumulative_usage_from_message_delta_and_ignores_unknown_events() -> None:
    translator = ChunkTranslator(Redactor())
    start = {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 10, "cache_read_input_tokens": 5}}
    assert len(translator.feed("message_start", {"message": start})) == 1
    assert translator.feed("brand_new_event", {"anything": 1}) == []
    assert translator.feed("content_block_delta", {"index": 0, "delta": {"type": "citations_delta"}}) == []
    usage = {"input_tokens": 12, "cache_read_input_tokens": None, "output_tokens": 9}
    [finish] = translator.feed("message_delta", {"delta": {"stop_reason": "refusal"}, "usage": usage})
    assert finish["choices"][0]["finish_reason"] == "content_filter"
    [last] = translator.feed("message_stop", {})
    assert translator.finished
    assert last["usage"]["prompt_tokens"] == 17 and last["usage"]["completion_tokens"] == 9
    with pytest.raises(UpstreamStatus) as err:
        ChunkTranslator(Redactor()).feed("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert (err.value.status, err.value.code, err.value.retryable) == (503, "overloaded_error", True)
