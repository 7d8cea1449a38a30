"""The fake OpenAI upstream, spoken to over real HTTP on loopback by the official SDK."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.fakes.embeddings import count_tokens
from proxy.fakes.openai import Behavior, FakeOpenAI, count_prompt_tokens
from proxy.loopback import ServerStartError, serve
from tests.test_fake_schema import assert_valid

# One server for the module keeps the file fast; each test mounts a fresh fake on it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "one two three four five six seven eight nine ten eleven twelve thirteen"},
]
EXPECTED_TEXT = "Fake reply from fake-model: one two three four five six seven eight nine ten eleven twelve"
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}},
]


class Mount:
    """Forwards to whichever app the current test installed."""

    def __init__(self) -> None:
        self.app: ASGIApp = FakeOpenAI()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[tuple[Mount, str]]:
    mount = Mount()
    async with serve(mount) as url:
        yield mount, url


@pytest.fixture
def url(server: tuple[Mount, str]) -> str:
    return server[1]


@pytest.fixture
def fake(server: tuple[Mount, str]) -> FakeOpenAI:
    server[0].app = app = FakeOpenAI()
    return app


@pytest_asyncio.fixture(loop_scope="module")
async def client(url: str, fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


async def test_non_streaming_body_matches_openai_shape(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-request-id"] == "req_fake_1"
    assert completion.id == "chatcmpl-fake-1"
    assert completion.object == "chat.completion"
    assert completion.model == "fake-model"
    assert completion.system_fingerprint == "fp_fake"
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert (choice.message.role, choice.message.content, choice.message.refusal) == ("assistant", EXPECTED_TEXT, None)
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == count_prompt_tokens(MESSAGES) == sum(len(m["content"]) // 4 + 4 for m in MESSAGES)
    assert usage.completion_tokens == len(EXPECTED_TEXT.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0


async def test_streaming_sends_one_chunk_per_word_then_finish_then_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    opening, *content, finish, usage = chunks
    assert opening.choices[0].delta.role == "assistant" and opening.choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content for c in content]
    assert pieces == [w + " " for w in EXPECTED_TEXT.split()[:-1]] + [EXPECTED_TEXT.split()[-1]]
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == len(pieces)
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks[:-1])
    assert {c.id for c in chunks} == {"chatcmpl-fake-1"}


async def test_streaming_without_include_usage_has_no_usage_chunk(url: str, fake: FakeOpenAI) -> None:
    body = {"model": "fake-model", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient() as http:
        response = await http.post(url + "/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [httpx.Response(200, content=e.removeprefix("data: ")).json() for e in events[:-2]]
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_omit_usage_drops_usage_everywhere(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(omit_usage=True), Behavior(omit_usage=True))
    completion = await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert completion.usage is None
    stream = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_error_status_maps_to_sdk_exception(
    client: openai.AsyncOpenAI, fake: FakeOpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.push(Behavior(status=status, headers={"Retry-After": "2"}))
    with pytest.raises(error) as caught:
        await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=status % 2 == 0)
    assert caught.value.status_code == status
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.request_id == "req_fake_1"
    assert isinstance(caught.value.body, dict) and set(caught.value.body) == {"message", "type", "param", "code"}


async def test_body_override_is_sent_verbatim(url: str, fake: FakeOpenAI) -> None:
    fake.push(Behavior(body=b"not json"), Behavior(status=502, body=b"<html>bad gateway</html>"))
    async with httpx.AsyncClient(base_url=url) as http:
        first = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        second = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert (first.status_code, first.content) == (200, b"not json")
    assert (second.status_code, second.content) == (502, b"<html>bad gateway</html>")


async def test_reset_after_chunks_breaks_the_sdk_stream(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(reset_after_chunks=2))
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    received: list[str | None] = []
    # The SDK wraps httpx's "incomplete chunked read" RemoteProtocolError in APIConnectionError.
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Fake ", "reply "]


async def test_reset_past_the_last_chunk_still_withholds_done(url: str, fake: FakeOpenAI) -> None:
    fake.push(Behavior(reset_after_chunks=1000))
    body = {"model": "fake-model", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient() as http, http.stream("POST", url + "/chat/completions", json=body) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()


async def test_ttft_holds_the_first_chunk_not_the_headers(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    first = asyncio.Event()
    fake.push(Behavior(ttft=first))
    # the response (its headers) is there while the first chunk is still held back
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    assert not first.is_set()
    first.set()
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"


async def test_delay_headers_can_trip_the_client_timeout(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(delay_headers=0.5))
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.1).chat.completions.create(model="fake-model", messages=MESSAGES)


async def test_client_disconnect_mid_stream_is_counted(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(chunk_delay=0.05))
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    await stream.close()
    for _ in range(100):
        if fake.disconnects:
            break
        await asyncio.sleep(0.01)
    assert fake.disconnects == 1


async def test_scripted_behaviours_are_consumed_fifo_then_default(url: str, server: tuple[Mount, str]) -> None:
    fake = FakeOpenAI(default=Behavior(text="default"), script=[Behavior(text="first")])
    server[0].app = fake
    fake.push(Behavior(text="second"), Behavior(status=429))
    async with openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0) as sdk:
        texts = [(await sdk.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content]
        texts.append((await sdk.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content)
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model="m", messages=MESSAGES)
        texts.append((await sdk.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content)
    assert texts == ["first", "second", "default"]
    assert [r.path for r in fake.requests] == ["/chat/completions"] * 4


async def test_requests_are_recorded_with_headers_and_body(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, temperature=0, extra_headers={"X-Tiergate-Task": "summarize"}
    )
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-tiergate-task"] == "summarize"
    assert request.body == {"model": "fake-model", "messages": MESSAGES, "temperature": 0}


async def test_tools_get_one_call_to_the_first_tool(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id == "call_fake_1" and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("lookup", "{}")
    assert completion.usage is not None and completion.usage.completion_tokens == 1


async def test_tool_call_streams_as_fragments(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS, stream=True)
    deltas = [c.choices[0] async for c in stream]
    calls = [d.delta.tool_calls[0] for d in deltas if d.delta.tool_calls]
    assert calls[0].id == "call_fake_1" and calls[0].function is not None
    assert calls[0].function.name == "lookup"
    assert "".join(c.function.arguments or "" for c in calls if c.function) == "{}"
    assert deltas[-1].finish_reason == "tool_calls"


async def test_tool_results_or_tool_choice_none_get_text(client: openai.AsyncOpenAI) -> None:
    answered = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_fake_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "42"},
    ]
    after_tool = await client.chat.completions.create(model="fake-model", messages=answered, tools=TOOLS)
    declined = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, tools=TOOLS, tool_choice="none"
    )
    assert after_tool.choices[0].message.content == EXPECTED_TEXT
    assert declined.choices[0].finish_reason == "stop"
    assert after_tool.usage is not None and after_tool.usage.prompt_tokens == count_prompt_tokens(answered)


async def test_max_tokens_truncates_with_finish_length(client: openai.AsyncOpenAI) -> None:
    text_parts = [{"type": "text", "text": "alpha"}, {"type": "text", "text": "beta"}]
    parts: list[Any] = [{"role": "user", "content": text_parts}]
    completion = await client.chat.completions.create(model="m", messages=parts, max_completion_tokens=4)
    assert completion.choices[0].message.content == "Fake reply from m:"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert count_prompt_tokens(parts) == len("alpha beta") // 4 + 4


async def test_models_unknown_paths_and_malformed_json(url: str, fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        models = await http.get("/v1/models")
        missing = await http.post("/v1/completions", json={})
        malformed = await http.post("/v1/chat/completions", content=b"{not json")
        wrong_method = await http.get("/chat/completions")
    assert models.status_code == 200 and models.json()["data"][0]["object"] == "model"
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert malformed.status_code == 400 and set(malformed.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong_method.status_code == 405
    assert fake.requests[2].body is None


async def test_serve_reports_a_port_in_use_instead_of_hanging() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServerStartError):
            async with serve(FakeOpenAI(), port=taken.getsockname()[1]):
                pass


# --- structured output, tool arguments and n -----------------------------------------------------------

SCHEMA: Any = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "labels": {"type": "array", "items": {"enum": ["bug", "billing"]}, "minItems": 1},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "owner": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
    },
    "required": ["title", "labels", "priority", "owner"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


async def test_json_schema_answers_a_value_valid_against_the_schema(client: openai.AsyncOpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
    completion = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, response_format=response_format
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert_valid(SCHEMA, json.loads(content))
    assert completion.usage is not None and completion.usage.completion_tokens == len(content.split())
    stream = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, response_format=response_format, stream=True
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert streamed == content


async def test_json_object_answers_a_json_object(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {"reply": EXPECTED_TEXT}


async def test_tool_arguments_are_valid_against_the_tools_parameters(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, tools=[*TOOLS, WEATHER], tool_choice=_named("weather")
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "weather"
    assert json.loads(call.function.arguments) == {"city": "fake", "days": 1}
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, tools=[WEATHER], stream=True)
    deltas = [c.choices[0].delta async for c in stream if c.choices]
    pieces = [tc.function.arguments or "" for d in deltas for tc in d.tool_calls or () if tc.function]
    assert len(pieces) > 2 and "".join(pieces) == call.function.arguments  # streamed in fragments


def _named(name: str) -> Any:
    return {"type": "function", "function": {"name": name}}


async def test_n_choices_each_with_its_index(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="fake-model", messages=MESSAGES, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [c.message.content for c in completion.choices]
    assert texts[0] == EXPECTED_TEXT and texts[1] == EXPECTED_TEXT.replace(":", " (choice 2):", 1)
    assert len(set(texts)) == 3
    assert completion.usage is not None
    assert completion.usage.completion_tokens == sum(len((t or "").split()) for t in texts)

    stream = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, n=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    streamed: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert streamed == dict(enumerate(texts)) and finishes == {0: "stop", 1: "stop", 2: "stop"}
    indexes = [c.choices[0].index for c in chunks if c.choices]
    assert indexes[:3] == [0, 1, 2]  # interleaved, as OpenAI sends several choices
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


async def test_n_json_schema_choices_are_distinct_valid_values(client: openai.AsyncOpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}}
    completion = await client.chat.completions.create(
        model="fake-model", messages=MESSAGES, response_format=response_format, n=2
    )
    values = [json.loads(c.message.content or "") for c in completion.choices]
    for value in values:
        assert_valid(SCHEMA, value)
    assert values[0] != values[1]


async def test_bad_n_is_a_400(url: str, fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "n": 0})
    assert response.status_code == 400 and "'n'" in response.json()["error"]["message"]


# --- embeddings ------------------------------------------------------------------------------------------


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeddings_are_deterministic_unit_vectors_through_the_sdk(client: openai.AsyncOpenAI) -> None:
    texts = ["the billing queue is stuck", "billing queue stuck again", "a recipe for lemon cake"]
    # The SDK asks for base64 by default and decodes it itself.
    result = await client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert result.object == "list" and result.model == "text-embedding-3-small"
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2] and {len(v) for v in vectors} == {1536}
    assert all(math.isclose(_cosine(v, v), 1.0, rel_tol=1e-5) for v in vectors)
    assert _cosine(vectors[0], vectors[1]) > 0.3 > _cosine(vectors[0], vectors[2])  # shared words point alike
    again = await client.embeddings.create(model="text-embedding-3-small", input=texts[0], encoding_format="float")
    assert again.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)  # float32 on the base64 path
    assert result.usage.prompt_tokens == result.usage.total_tokens == sum(count_tokens(t) for t in texts)


async def test_embeddings_honour_dimensions_token_arrays_and_format(url: str, fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        floats = await http.post("/v1/embeddings", json={"model": "m", "input": "queue", "dimensions": 64})
        tokens = await http.post("/v1/embeddings", json={"model": "m", "input": [[1, 2, 3], [4]], "dimensions": 8})
        large = await http.post("/v1/embeddings", json={"model": "text-embedding-3-large", "input": [5, 6]})
        encoded = await http.post("/v1/embeddings", json={"model": "m", "input": "x", "encoding_format": "base64"})
    assert len(floats.json()["data"][0]["embedding"]) == 64
    assert [len(d["embedding"]) for d in tokens.json()["data"]] == [8, 8] and tokens.json()["usage"][
        "prompt_tokens"
    ] == 4
    assert len(large.json()["data"]) == 1 and len(large.json()["data"][0]["embedding"]) == 3072
    assert isinstance(encoded.json()["data"][0]["embedding"], str)
    assert fake.requests[0].path == "/v1/embeddings"


@pytest.mark.parametrize(
    "body",
    [
        {"input": "no model"},
        {"model": "m"},
        {"model": "m", "input": ""},
        {"model": "m", "input": []},
        {"model": "m", "input": ["text", 3]},
        {"model": "m", "input": [[1], []]},
        {"model": "m", "input": "x", "dimensions": 0},
        {"model": "m", "input": "x", "encoding_format": "int8"},
    ],
)
async def test_malformed_embeddings_requests_are_a_400(url: str, fake: FakeOpenAI, body: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(url + "/v1/embeddings", json=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


async def test_embeddings_follow_the_script(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(status=503), Behavior(omit_usage=True))
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="m", input="x")
    raw = await client.embeddings.with_raw_response.create(model="m", input="x", encoding_format="float")
    assert "usage" not in json.loads(raw.content)
