"""The drop-in proxy end to end: official openai SDK -> tiergate (uvicorn) -> fake upstream (uvicorn)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from proxy.fakes.openai import Behavior, FakeOpenAI, count_prompt_tokens
from proxy.loopback import serve
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, ProxyFactory, sdk, shipped_registry

USER = [{"role": "user", "content": "Name this chat about moving cron jobs to a queue"}]


async def test_tagged_call_runs_on_its_tier_with_route_headers(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=USER,
        extra_headers={"X-Task-Type": "title_generation"},  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["x-tiergate-task"] == "title_generation"
    assert raw.headers["x-tiergate-tier"] == "small"
    assert raw.headers["x-tiergate-model"] == "gpt-5.4-nano"
    assert raw.headers["x-tiergate-provider"] == "openai"
    assert raw.headers["x-request-id"] == "req_fake_1"  # the upstream's id is passed on
    assert completion.model == "gpt-5.4-nano"
    assert completion.choices[0].message.content.startswith("Fake reply from gpt-5.4-nano: Name this chat")
    sent = fake.requests[-1].body
    # the task's prompt variant for the small tier reworded the request; usage is the upstream's
    assert sent["messages"][0] == {
        "role": "system",
        "content": "You write conversation titles: 3 to 8 words, no quotes, no final period.",
    }
    assert completion.usage is not None and completion.usage.prompt_tokens == count_prompt_tokens(sent["messages"])
    assert sent["model"] == "gpt-5.4-nano"
    # task params win over target params; the task's max_tokens becomes OpenAI's current field name
    assert sent["max_completion_tokens"] == 32 and "max_tokens" not in sent
    assert sent["temperature"] == 0.2 and sent["reasoning_effort"] == "none"


async def test_untagged_call_runs_as_default_task(client: AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)  # type: ignore[arg-type]
    assert raw.headers["x-tiergate-task"] == "agent"
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert raw.headers["x-tiergate-model"] == "gpt-5.5"


async def test_unknown_task_type_is_a_400_listing_known_tasks(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="auto",
            messages=USER,
            extra_headers={"X-Task-Type": "titel_generation"},  # type: ignore[arg-type]
        )
    assert err.value.code == "unknown_task_type"
    assert "title_generation" in err.value.message and "summary" in err.value.message
    assert fake.requests == []


async def test_tier_selector_and_allowed_model(client: AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="tier:small",
        messages=USER,
        extra_headers={"X-Task-Type": "summary"},  # type: ignore[arg-type]
    )
    assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-model"]) == ("small", "gpt-5.4-nano")
    assert raw.headers["x-tiergate-task"] == "summary"
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="tier:nope", messages=USER)  # type: ignore[arg-type]
    assert err.value.param == "model"
    # `agent` allows gpt-5.5 as a user-facing model choice; a model not in the list is re-routed.
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-5.5",
        messages=USER,
        extra_headers={"X-Task-Type": "agent"},  # type: ignore[arg-type]
    )
    assert raw.headers["x-tiergate-model"] == "gpt-5.5"
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-5.5",
        messages=USER,
        extra_headers={"X-Task-Type": "summary"},  # type: ignore[arg-type]
    )
    assert raw.headers["x-tiergate-model"] == "gpt-5.4-mini"


async def test_other_fields_are_forwarded_untouched(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    completion = await client.chat.completions.create(
        model="auto",
        messages=USER,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        n=1,
        seed=7,
        temperature=0.5,
        max_tokens=4000,
        extra_body={"metadata_custom": {"a": 1}},
        extra_headers={"X-Task-Type": "classification"},
    )
    sent = fake.requests[-1].body
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}
    assert sent["seed"] == 7 and sent["n"] == 1 and sent["metadata_custom"] == {"a": 1}
    assert sent["temperature"] == 0.5  # the client's value beats the registry default
    assert sent["max_completion_tokens"] == 1024  # capped by the small tier's max_tokens_cap
    assert completion.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index]


async def test_client_key_never_goes_upstream_and_hop_by_hop_headers_are_stripped(
    proxy_url: str, fake: FakeOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": USER},
            headers={
                "authorization": f"Bearer {CLIENT_KEY}",
                "x-api-key": CLIENT_KEY,
                "te": "trailers",
                "upgrade": "h2c",
                "proxy-authorization": "Basic secret",
                "x-custom-trace": "abc",
                "x-task-type": "summary",
                # a client must not choose which organisation or project the shared key bills
                "openai-organization": "org-someone-else",
                "openai-project": "proj_someone_else",
                "x-goog-api-key": "AIzaSyClientOwnGoogleKey000000000000",
                "api-key": "azure-client-key",
                "cookie": "session=abc",
                "user-agent": "AsyncOpenAI/Python 3.57.0",
                "x-stainless-lang": "python",
            },
        )
    assert response.status_code == 200
    sent = fake.requests[-1].headers
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in (
        "x-api-key", "te", "upgrade", "proxy-authorization", "x-task-type", "x-custom-trace",
        "openai-organization", "openai-project", "x-goog-api-key", "api-key", "cookie",
    ):  # fmt: skip
        assert name not in sent, name
    assert CLIENT_KEY not in str(sent)
    # forwarded by allow-list: what identifies the client software, nothing else
    assert (sent["user-agent"], sent["x-stainless-lang"]) == ("AsyncOpenAI/Python 3.57.0", "python")
    assert UPSTREAM_KEY not in response.text and UPSTREAM_KEY not in str(response.headers)


async def test_stream_relays_chunks_and_hides_injected_usage(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="auto",
        messages=USER,
        stream=True,
        extra_headers={"X-Task-Type": "narrative"},  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}  # injected upstream
    assert all(c.choices for c in chunks)  # the usage-only chunk was dropped for this client
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("Fake reply from gpt-5.4-mini: Name this chat")
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_keeps_usage_chunk_when_client_asks(client: AsyncOpenAI) -> None:
    async with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Task-Type": "summary"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-tiergate-tier"] == "mid"
        chunks = [c async for c in await response.parse()]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == count_prompt_tokens(USER)


async def test_stream_ends_with_done(proxy_url: str) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER, "stream": True})
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


async def test_the_first_chunk_reaches_the_client_while_the_upstream_is_still_generating(
    client: AsyncOpenAI, fake: FakeOpenAI
) -> None:
    # The upstream sends its opening chunk, then waits for `rest` before every word: a relay that
    # buffered anything would deliver nothing while it waits.
    rest = asyncio.Event()
    fake.push(Behavior(text="one two three four five six", chunk_delay=rest))
    stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
    chunks = aiter(stream)
    first = await asyncio.wait_for(anext(chunks), timeout=30)  # a hang guard, not a margin
    assert not rest.is_set() and first.choices[0].delta.role == "assistant"
    rest.set()
    words = [c.choices[0].delta.content async for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(words) == "one two three four five six" and len(words) == 6


async def test_client_disconnect_cancels_the_upstream_request(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(text=" ".join(["word"] * 50), chunk_delay=0.1))
    stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
    seen = 0
    async for _chunk in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    for _ in range(50):
        if fake.disconnects:
            break
        await asyncio.sleep(0.05)
    assert fake.disconnects == 1


async def test_models_endpoint_lists_auto_tiers_and_tasks(client: AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert ids[:6] == ["auto", "tier:frontier", "tier:mid", "tier:small", "tier:embedding", "tier:rules"]
    assert "title_generation" in ids
    model = await client.models.retrieve("tier:mid")
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-unknown")


async def test_health_and_readiness(proxy_url: str) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "auto"}', "messages"),
        (b'{"model": "auto", "messages": "hello"}', "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "auto", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "auto", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": -1}', "max_tokens"),
    ],
)
async def test_bad_requests_get_openai_shaped_400(proxy_url: str, body: bytes, param: str | None) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert "Traceback" not in response.text


async def test_unknown_route_and_method_are_openai_shaped(proxy_url: str) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        missing = await http.post("/v1/nope", json={})
        wrong = await http.get("/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_4xx_is_passed_on_with_its_error(client: AsyncOpenAI, fake: FakeOpenAI, stream: bool) -> None:
    upstream_error = b'{"error": {"message": "This model\'s maximum context length is 8192 tokens.", '
    upstream_error += b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}'
    fake.push(Behavior(status=400, body=upstream_error))
    with pytest.raises(openai.BadRequestError) as err:
        result = await client.chat.completions.create(model="auto", messages=USER, stream=stream)  # type: ignore[call-overload]
        if stream:
            [c async for c in result]
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    assert "maximum context length" in err.value.message


async def test_upstream_429_keeps_retry_after(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(status=429, headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0"}))
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_upstream_unreachable_is_502(start_proxy: ProxyFactory) -> None:
    async with serve(FakeOpenAI()) as url:
        registry = shipped_registry(url)
    # the server above is gone: its port refuses connections now
    async with start_proxy(registry) as proxy_url:
        c = sdk(proxy_url)
        with pytest.raises(openai.InternalServerError) as err:
            await c.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await c.close()
    assert err.value.status_code == 502
    assert err.value.code == "upstream_unreachable"
    assert "127.0.0.1" not in err.value.message


async def test_upstream_timeout_is_504(start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI) -> None:
    fake.push(Behavior(delay_headers=2.0))
    registry = shipped_registry(upstream_url, policy={"retries": 0, "timeouts": {"first_byte_s": 0.3}})
    async with start_proxy(registry) as proxy_url:
        c = sdk(proxy_url)
        with pytest.raises(openai.InternalServerError) as err:
            await c.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await c.close()
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"


async def test_upstream_non_json_body_is_502(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(body=b"<html>gateway hiccup</html>"))
    with pytest.raises(openai.InternalServerError) as err:
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
    assert err.value.status_code == 502 and err.value.code == "upstream_bad_response"


async def test_broken_upstream_stream_ends_with_an_error_event(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.push(Behavior(text="a b c d e f g h", reset_after_chunks=2))
    stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
    received = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            received.append(chunk)
    assert received, "chunks before the break were relayed"
    assert "closed the connection" in err.value.message


async def test_client_keys_are_enforced_when_configured(start_proxy: ProxyFactory, upstream_url: str) -> None:
    async with start_proxy(shipped_registry(upstream_url), api_keys=(CLIENT_KEY,)) as proxy_url:
        good, bad = sdk(proxy_url), AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-wrong", max_retries=0)
        assert (await good.chat.completions.create(model="auto", messages=USER)).choices  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await good.close()
        await bad.close()


@pytest.mark.parametrize("status", [401, 403, 500])
async def test_upstream_errors_never_carry_the_provider_key(
    client: AsyncOpenAI, fake: FakeOpenAI, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    leak = f"Incorrect API key provided: {UPSTREAM_KEY[:7]}****{UPSTREAM_KEY[-4:]}. Key: {UPSTREAM_KEY}"
    body = b'{"error": {"message": "' + leak.encode() + b'", "type": "invalid_request_error", "code": "x"}}'
    fake.push(Behavior(status=status, body=body))  # one try: a 500 falls over to the (closed) Anthropic target
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
    assert err.value.status_code == status
    shown = err.value.response.text + str(err.value.response.headers)
    assert UPSTREAM_KEY not in shown and UPSTREAM_KEY[-4:] not in shown
    assert UPSTREAM_KEY not in caplog.text
