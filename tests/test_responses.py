"""``POST /v1/responses`` end to end: the official openai SDK -> tiergate (uvicorn) -> fake upstreams (uvicorn).

One OpenAI-type target speaks the Responses API natively (``FakeOpenAI``'s ``/v1/responses``); one
Anthropic target is served by translation to chat and back (``FakeAnthropic``). Every body and event the
client got is checked against OpenAI's published spec and parsed by the SDK's own models
(``tests/responses_spec.py``); the assertions read both ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from pydantic import BaseModel

from proxy.app import create_app
from proxy.fakes.anthropic import FakeAnthropic, count_input_tokens
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.fakes.responses import input_tokens
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from proxy.settings import Settings
from tests.conftest import CLIENT_KEY, RULES, clean, sdk
from tests.responses_spec import assert_event, assert_response, assert_valid, sse_events

# One pair of fakes and one tiergate serve the module (stopping a uvicorn server costs ~0.3 s); the tests
# share the module's event loop with them. Fixtures are named for the module, not after conftest's.
pytestmark = pytest.mark.asyncio(loop_scope="module")

GPT = "gpt-5.4-mini"
CLAUDE = "claude-sonnet-5-5"
QUESTION = "Name this chat about moving cron jobs to a queue"
GPT_REPLY = f"Fake reply from {GPT}: {QUESTION}"
CLAUDE_REPLY = f"Fake Claude reply from {CLAUDE}: {QUESTION}"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}
# task -> its tier's targets; every tier falls over openai -> anthropic unless its name says otherwise
TIERS = {
    "mixed": [f"openai::{GPT}", f"anthropic::{CLAUDE}"],
    "claude": [f"anthropic::{CLAUDE}"],
    "two_openai": [f"openai::{GPT}", f"anthropic::{CLAUDE}", "openai::gpt-5.5"],
}


def registry(openai_url: str, anthropic_url: str) -> Registry:
    return build(
        {
            "providers": {
                "openai": {"type": "openai", "base_url": openai_url + "/v1", "api_key": "sk-up"},
                "anthropic": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant"},
            },
            "tiers": {
                name: {
                    "targets": [
                        {
                            "provider": t.split("::")[0],
                            "model": t.split("::")[1],
                            "params": {"max_tokens": 512, "temperature": 0.2},
                        }
                        for t in targets
                    ]
                }
                for name, targets in TIERS.items()
            },  # fmt: skip
            "tasks": {name: {"tier": name} for name in TIERS},
            "default_task": "mixed",
            "policy": {"retries": 0},  # a scripted fault is what the client sees
        }
    )


@pytest.fixture(scope="module")
def gpt_fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture(scope="module")
def claude_fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def responses_urls(gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic) -> AsyncIterator[tuple[str, str]]:
    async with serve(gpt_fake) as gpt_url, serve(claude_fake) as claude_url:
        yield gpt_url, claude_url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def responses_proxy_url(
    responses_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    settings = Settings(config=str(RULES), db=str(tmp_path_factory.mktemp("responses") / "ledger.db"))
    async with serve(create_app(settings, registry(*responses_urls))) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_fakes(gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic) -> Iterator[None]:
    """Each test starts with no script and no recorded requests, and must consume what it pushes."""
    with clean(gpt_fake), clean(claude_fake):
        yield


@pytest_asyncio.fixture(loop_scope="module")
async def client(responses_proxy_url: str) -> AsyncIterator[AsyncOpenAI]:
    c = sdk(responses_proxy_url)
    yield c
    await c.close()


def task(name: str) -> dict[str, str]:
    return {"X-Task-Type": name}


def received(fake: FakeOpenAI) -> dict[str, Any]:
    """The body of the last request ``fake`` received."""
    body: dict[str, Any] = fake.requests[-1].body
    return body


async def post_events(url: str, body: dict[str, Any], **headers: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Stream a Responses call over plain HTTP; the response and its events, decoded from the raw SSE."""
    client = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10.0)
    async with (
        client as http,
        http.stream("POST", "/v1/responses", json={**body, "stream": True}, headers=headers) as r,
    ):
        text = (await r.aread()).decode()
    assert r.status_code == 200, text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r, sse_events(text)


def assert_stream(events: list[dict[str, Any]]) -> None:
    """Every event spec-valid and SDK-parsed, numbered 0, 1, 2...; created first, a terminal event last."""
    for event in events:
        assert_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")


# --- plain calls --------------------------------------------------------------------------------------------


async def test_plain_call_goes_natively_to_an_openai_target(client: AsyncOpenAI, gpt_fake: FakeOpenAI) -> None:
    raw = await client.responses.with_raw_response.create(
        model="auto", input=QUESTION, instructions="Be brief.", metadata={"app": "inbox"}, extra_headers=task("mixed")
    )
    body = raw.http_response.json()
    response = assert_response(body)
    assert response.output_text == GPT_REPLY and response.status == "completed"
    assert (response.id, response.model, response.metadata) == ("resp_fake_1", GPT, {"app": "inbox"})
    assert raw.headers["x-tiergate-provider"] == "openai" and raw.headers["x-tiergate-model"] == GPT
    assert raw.headers["x-tiergate-task"] == "mixed" and raw.headers["x-tiergate-fallback"] == "false"
    assert raw.headers["x-request-id"] == "req_fake_1"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        input_tokens(received(gpt_fake)),
        len(GPT_REPLY.split()),
    )

    request = gpt_fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/responses")
    # The model and the tier's params (under their Responses names); everything else untouched.
    assert request.body == {
        "model": GPT,
        "input": QUESTION,
        "instructions": "Be brief.",
        "metadata": {"app": "inbox"},
        "max_output_tokens": 512,
        "temperature": 0.2,
    }
    assert_valid("CreateResponse", request.body)
    assert request.headers["authorization"] == "Bearer sk-up" and CLIENT_KEY not in str(request.headers)


async def test_plain_call_is_translated_for_an_anthropic_target(
    client: AsyncOpenAI, claude_fake: FakeAnthropic
) -> None:
    raw = await client.responses.with_raw_response.create(
        model="auto", input=QUESTION, instructions="Be brief.", metadata={"app": "inbox"}, extra_headers=task("claude")
    )
    body = raw.http_response.json()
    response = assert_response(body)
    assert response.output_text == CLAUDE_REPLY and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == CLAUDE and response.metadata == {"app": "inbox"}
    assert (body["max_output_tokens"], body["temperature"], body["store"]) == (512, 0.2, False)
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert raw.headers["x-tiergate-provider"] == "anthropic" and raw.headers["x-request-id"] == "req_fake_1"
    sent = received(claude_fake)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        count_input_tokens(sent),
        len(CLAUDE_REPLY.split()),
    )
    assert claude_fake.requests[-1].path == "/v1/messages"
    assert sent == {
        "model": CLAUDE,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": QUESTION}],
        "system": "Be brief.",
        "temperature": 0.2,
        "stream": False,
    }


async def test_input_items_are_translated_to_messages(client: AsyncOpenAI, claude_fake: FakeAnthropic) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    items: Any = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": "Bonjour"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{png}", "detail": "low"},
            ],
        },
    ]
    response = await client.responses.create(model="auto", input=items, extra_headers=task("claude"))
    assert response.output_text == f"Fake Claude reply from {CLAUDE}: What is this?"
    sent = received(claude_fake)
    assert sent["system"] == "Answer in French."
    assert sent["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            ],
        },
    ]


# --- streams ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "reply"), [("mixed", GPT_REPLY), ("claude", CLAUDE_REPLY)], ids=["native", "translated"]
)
async def test_stream_events_are_spec_valid_and_end_without_done(
    responses_proxy_url: str, tier: str, reply: str
) -> None:
    r, events = await post_events(responses_proxy_url, {"model": "auto", "input": QUESTION}, **task(tier))
    assert_stream(events)
    assert r.headers["x-tiergate-tier"] == tier
    kinds = [e["type"] for e in events]
    assert kinds[2:5] == ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == reply
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == reply
    assert done["usage"]["output_tokens"] == len(reply.split()) and done["usage"]["input_tokens"] > 0
    # One id for the response and its items across the stream.
    assert {events[0]["response"]["id"], done["id"]} == {done["id"]}
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {done["output"][0]["id"]}


@pytest.mark.parametrize(
    ("tier", "reply"), [("mixed", GPT_REPLY), ("claude", CLAUDE_REPLY)], ids=["native", "translated"]
)
async def test_sdk_streams_create_and_stream_helper(client: AsyncOpenAI, tier: str, reply: str) -> None:
    stream = await client.responses.create(model="auto", input=QUESTION, stream=True, extra_headers=task(tier))
    seen = [event async for event in stream]
    assert "".join(e.delta for e in seen if e.type == "response.output_text.delta") == reply
    assert seen[-1].type == "response.completed"

    async with client.responses.stream(model="auto", input=QUESTION, extra_headers=task(tier)) as helper:
        texts = [event.delta async for event in helper if event.type == "response.output_text.delta"]
        final = await helper.get_final_response()
    assert "".join(texts) == reply and final.output_text == reply
    assert final.usage is not None and final.usage.output_tokens == len(reply.split())


# --- function tools -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["mixed", "claude"], ids=["native", "translated"])
async def test_function_call_round_trip(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic, tier: str
) -> None:
    question = {"role": "user", "content": "Weather in Paris for two days?"}
    raw = await client.responses.with_raw_response.create(
        model="auto", input=[question], tools=[WEATHER], tool_choice="auto", extra_headers=task(tier)
    )
    first = assert_response(raw.http_response.json())
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.status == "completed"
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int) and arguments["days"] >= 1

    second = await client.responses.create(
        model="auto",
        input=[
            question,
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"forecast": "sunny"}'},
        ],
        tools=[WEATHER],
        extra_headers=task(tier),
    )
    assert second.output_text.startswith("Fake") and not [i for i in second.output if i.type == "function_call"]
    if tier == "mixed":
        sent = received(gpt_fake)
        assert sent["input"][1]["call_id"] == call.call_id and sent["tools"] == [WEATHER]
        assert_valid("CreateResponse", sent)
    else:
        sent = received(claude_fake)
        assert sent["tools"] == [
            {"name": "get_weather", "input_schema": WEATHER["parameters"], "description": WEATHER["description"]}
        ]
        assert sent["messages"][1:] == [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call.call_id, "name": "get_weather",
                                               "input": arguments}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.call_id,
                                          "content": '{"forecast": "sunny"}'}]},
        ]  # fmt: skip


@pytest.mark.parametrize("tier", ["mixed", "claude"], ids=["native", "translated"])
async def test_streamed_function_call_arguments(responses_proxy_url: str, tier: str) -> None:
    body = {"model": "auto", "input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"}
    _r, events = await post_events(responses_proxy_url, body, **task(tier))
    assert_stream(events)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done["arguments"] == deltas and done["name"] == "get_weather"
    assert set(json.loads(deltas)) == {"city", "days"}
    (item,) = events[-1]["response"]["output"]
    assert item["type"] == "function_call" and item["arguments"] == deltas


# --- structured output --------------------------------------------------------------------------------------


class Weather(BaseModel):
    city: str
    days: int
    sunny: bool
    note: str | None


@pytest.mark.parametrize("tier", ["mixed", "claude"], ids=["native", "translated"])
async def test_parse_with_a_pydantic_model(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic, tier: str
) -> None:
    if tier == "claude":
        # The Anthropic fake writes prose; the answer a model following output_config.format would give.
        claude_fake.push(Behavior(text='{"city": "Paris", "days": 2, "sunny": true, "note": null}'))
    parsed = await client.responses.parse(
        model="auto", input="Weather in Paris?", text_format=Weather, extra_headers=task(tier)
    )
    weather = parsed.output_parsed
    assert isinstance(weather, Weather)
    if tier == "mixed":
        fmt = received(gpt_fake)["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["name"] == "Weather" and fmt["strict"] is True
    else:
        assert weather == Weather(city="Paris", days=2, sunny=True, note=None)
        output_config = received(claude_fake)["output_config"]
        assert output_config["format"]["type"] == "json_schema"
        assert set(output_config["format"]["schema"]["properties"]) == {"city", "days", "sunny", "note"}


# --- fallback and provider-bound state ------------------------------------------------------------------------


async def test_a_stateless_request_falls_over_to_another_provider(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic
) -> None:
    gpt_fake.push(Behavior(status=503))
    raw = await client.responses.with_raw_response.create(model="auto", input=QUESTION, extra_headers=task("mixed"))
    assert raw.parse().output_text == CLAUDE_REPLY
    assert raw.headers["x-tiergate-fallback"] == "true" and raw.headers["x-tiergate-attempts"] == "2"
    assert raw.headers["x-tiergate-provider"] == "anthropic"
    assert len(gpt_fake.requests) == 1 and len(claude_fake.requests) == 1


async def test_previous_response_id_never_falls_over_to_another_provider(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic
) -> None:
    first = await client.responses.create(model="auto", input=QUESTION, extra_headers=task("mixed"))
    follow_up = await client.responses.create(
        model="auto", input="And a shorter one?", previous_response_id=first.id, extra_headers=task("mixed")
    )
    assert follow_up.previous_response_id == first.id  # resolved where it was made

    gpt_fake.push(Behavior(status=503))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.responses.create(
            model="auto", input="Once more?", previous_response_id=first.id, extra_headers=task("mixed")
        )
    assert caught.value.status_code == 503  # the provider's own error, not an answer without the history
    assert caught.value.response.headers["x-tiergate-attempts"] == "1"
    assert claude_fake.requests == []


async def test_a_provider_bound_request_still_tries_that_providers_other_targets(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic
) -> None:
    first = await client.responses.create(model="auto", input=QUESTION, extra_headers=task("two_openai"))
    gpt_fake.push(Behavior(status=503))
    raw = await client.responses.with_raw_response.create(
        model="auto", input="Again?", previous_response_id=first.id, extra_headers=task("two_openai")
    )
    assert raw.headers["x-tiergate-model"] == "gpt-5.5" and raw.headers["x-tiergate-fallback"] == "true"
    assert [r.body["model"] for r in gpt_fake.requests] == [GPT, GPT, "gpt-5.5"]
    assert claude_fake.requests == []


@pytest.mark.parametrize(
    "extra",
    [{"tools": [{"type": "web_search"}]}, {"store": True}, {"background": True}, {"conversation": "conv_123"}],
    ids=["built-in-tool", "store", "background", "conversation"],
)
async def test_state_bound_requests_are_never_failed_over(
    client: AsyncOpenAI, gpt_fake: FakeOpenAI, claude_fake: FakeAnthropic, extra: dict[str, Any]
) -> None:
    gpt_fake.push(Behavior(status=503))
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model="auto", input=QUESTION, extra_headers=task("mixed"), extra_body=extra)
    assert claude_fake.requests == []


# --- what a translated target cannot honour -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": {"id": "conv_123"}}, "conversation"),
        ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1]"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_123"}}, "prompt"),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary"),
        ({"truncation": "auto"}, "truncation"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0]"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
            "input[0].content[0]",
        ),
        ({"frobnicate": 1}, "frobnicate"),
    ],  # fmt: skip
)
async def test_a_field_a_translated_target_cannot_honour_is_a_400_naming_it(
    responses_proxy_url: str, claude_fake: FakeAnthropic, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "auto", "input": QUESTION, **extra}
    async with httpx.AsyncClient(base_url=responses_proxy_url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as h:
        r = await h.post("/v1/responses", json=body, headers=task("claude"))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["type"], error["code"]) == (param, "invalid_request_error", "unsupported_parameter")
    assert f"'{param}'" in error["message"] and "anthropic::" + CLAUDE in error["message"]
    assert claude_fake.requests == []


async def test_the_sdk_raises_bad_request_naming_the_field(client: AsyncOpenAI, claude_fake: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="auto", input=QUESTION, tools=[{"type": "web_search"}], extra_headers=task("claude")
        )
    assert caught.value.param == "tools[0]" and caught.value.code == "unsupported_parameter"
    assert caught.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": QUESTION}, "model", "missing_required_parameter"),
        ({"model": "", "input": QUESTION}, "model", "invalid_type"),
        ({"model": "auto", "input": 42}, "input", "invalid_type"),
        ({"model": "auto", "input": [42]}, "input[0]", "invalid_type"),
        ({"model": "auto", "input": [{"role": "user", "content": 7}]}, "input[0].content", "invalid_type"),
        (
            {"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
        ({"model": "auto", "input": "x", "max_output_tokens": 5}, "max_output_tokens", "invalid_value"),
        ({"model": "auto", "input": "x", "max_output_tokens": True}, "max_output_tokens", "invalid_value"),
        ({"model": "auto", "input": "x", "tools": {"type": "function"}}, "tools", "invalid_type"),
        (
            {"model": "auto", "input": "x", "tools": [{"type": "function"}]},
            "tools[0].name",
            "missing_required_parameter",
        ),
        ({"model": "auto", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
        ({"model": "auto", "input": "x", "temperature": True}, "temperature", "invalid_type"),
        ({"model": "auto", "input": "x", "text": "json"}, "text", "invalid_type"),
    ],  # fmt: skip
)
async def test_bad_bodies_are_openai_shaped_400s(
    responses_proxy_url: str, body: dict[str, Any], param: str, code: str
) -> None:
    async with httpx.AsyncClient(base_url=responses_proxy_url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as h:
        r = await h.post("/v1/responses", json=body, headers=task("mixed"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == code


async def test_malformed_json_and_unknown_task_are_400s(responses_proxy_url: str) -> None:
    async with httpx.AsyncClient(base_url=responses_proxy_url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as h:
        broken = await h.post("/v1/responses", content=b'{"model": "auto", "input": ', headers=task("mixed"))
        unknown = await h.post("/v1/responses", json={"model": "auto", "input": "x"}, headers=task("nope"))
        listed = await h.post("/v1/responses", json=[1, 2], headers=task("mixed"))
    assert broken.status_code == unknown.status_code == listed.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_task_type"
