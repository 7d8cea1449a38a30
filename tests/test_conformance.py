"""One SDK-level suite, run against every provider type tiergate speaks.

Each setup puts one provider behind tiergate, with a fake of ours speaking that provider's wire format
on 127.0.0.1: ``openai`` (FakeOpenAI), ``anthropic`` (FakeAnthropic), ``local`` (a Python handler,
``tests.handlers_for_tests:answer``) and ``demo`` (the shipped rules.yaml exactly as ``tiergate demo``
loads it, reached through the ``summary`` task). The first three are single-target tiers with no
retries, so each provider is tested alone.

The tests are the same for every setup: the official ``openai.AsyncOpenAI`` client (no retries of its
own) must get OpenAI shapes back, whatever answered. Where a fake is behind tiergate, the tests also
read what it received, in its own dialect. The fakes answer like JSON-mode models when (and only when)
the request reaches them asking for JSON in their dialect (they do that themselves: a value valid against
the schema, ``proxy.fakes.schema``), and fail on a marker in the prompt.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy import rules
from proxy.app import create_app
from proxy.fakes import anthropic as fake_anthropic
from proxy.fakes import openai as fake_upstream
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.providers.anthropic.request import JSON_OBJECT_INSTRUCTION
from proxy.registry import Registry
from proxy.rules import build
from proxy.settings import Settings
from tests.conftest import RULES, clean, sdk
from tests.handlers_for_tests import RAISE, SECRET
from tests.test_openai_spec import assert_valid

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Each target tried once, and quickly: a scripted fault is what the client sees.
POLICY: dict[str, Any] = {
    "retries": 0,
    "timeouts": {"connect_s": 2.0, "first_byte_s": 5.0, "idle_s": 5.0},
    "deadline_s": 10.0,
}
LOCAL_HANDLER = "tests.handlers_for_tests:answer"
FAIL_400, FAIL_429 = "[400]", "[429]"  # prompt markers the fakes fail on
MESSAGE_400 = "Invalid value for 'temperature': expected a number (conformance)."
MESSAGE_429 = "Rate limit reached for requests (conformance)."
RETRY_AFTER = "20"  # above the shipped retry_after_cap_s (10): no hop sleeps on it
FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}

PROMPT = "Name this chat about moving cron jobs to a queue"
SYSTEM = "You are terse."
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}
SCHEMA: Any = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "words": {"type": "integer"}, "final": {"type": "boolean"}},
    "required": ["title", "words", "final"],
    "additionalProperties": False,
}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "title", "schema": SCHEMA, "strict": True}}
JSON_OBJECT: Any = {"type": "json_object"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --- the fakes, answering like models of their dialect --------------------------------------------------


def _last_user_text(messages: list[Any]) -> str:
    """The text of the last user turn that has any (OpenAI parts and Anthropic blocks alike)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        if isinstance(content, str) and content.strip():
            return content
    return ""


def _failure(prompt: str, error_body: Callable[[int, str], bytes]) -> Behavior | None:
    """The scripted upstream errors, as the given fake's error body."""
    if FAIL_400 in prompt:
        return Behavior(status=400, body=error_body(400, MESSAGE_400))
    if FAIL_429 in prompt:
        return Behavior(status=429, headers={"retry-after": RETRY_AFTER}, body=error_body(429, MESSAGE_429))
    return None


def _openai_model(body: dict[str, Any]) -> Behavior | None:
    prompt = _last_user_text(body["messages"])
    return _failure(prompt, fake_upstream.error_body)


def _anthropic_model(body: dict[str, Any]) -> Behavior | None:
    prompt = _last_user_text(body["messages"])
    return _failure(prompt, fake_anthropic.error_body)


# --- the setups --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What a provider's failure must look like through the SDK."""

    prompt: str
    status: int
    error: type[openai.APIStatusError]
    message: str


@dataclass(frozen=True)
class Setup:
    kind: str
    url: str  # tiergate
    task: str  # the X-Task-Type that reaches the provider under test
    provider: str  # x-tiergate-provider of a served call
    model: str  # the model sent upstream (the handler spec for local)
    dialect: str | None  # the wire format the serving fake speaks; None for a handler
    serving: FakeOpenAI | None  # the fake that answers served calls
    failure: Failure
    hidden: tuple[str, ...]  # strings no client may ever see (upstream URLs, handler internals)

    def received(self) -> dict[str, Any]:
        """The body the serving fake received last."""
        assert self.serving is not None
        body: dict[str, Any] = self.serving.requests[-1].body
        return body


def _single(provider: dict[str, Any], target: Any) -> Registry:
    return build(
        {
            "providers": {provider.pop("name"): provider},
            "tiers": {"only": {"targets": [target]}},
            "tasks": {"conformance": "only"},
            "policy": POLICY,
        }
    )


def _http_failure(prompt: str = f"{FAIL_400} {PROMPT}") -> Failure:
    return Failure(prompt, 400, openai.BadRequestError, MESSAGE_400)


KINDS = ("openai", "anthropic", "local", "demo")
# The setups with an upstream that can answer 429: a local handler answers, declines or raises.
RATE_LIMITED = tuple(kind for kind in KINDS if kind != "local")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=KINDS)
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    kind: str = request.param
    settings = Settings(config=str(RULES), ledger=False)
    async with AsyncExitStack() as stack:
        if kind == "openai":
            fake = FakeOpenAI(choose=_openai_model)
            url = await stack.enter_async_context(serve(fake))
            provider = {"name": "openai", "type": "openai", "base_url": url + "/v1", "api_key": "sk-up"}
            registry = _single(provider, "openai::gpt-4o-mini")
            found = Setup(kind, "", "conformance", "openai", "gpt-4o-mini", "openai", fake, _http_failure(), (url,))
        elif kind == "anthropic":
            fake = FakeAnthropic(choose=_anthropic_model)
            url = await stack.enter_async_context(serve(fake))
            provider = {"name": "anthropic", "type": "anthropic", "base_url": url, "api_key": "sk-ant-up"}
            registry = _single(provider, "anthropic::claude-haiku-4-5")
            found = Setup(
                kind, "", "conformance", "anthropic", "claude-haiku-4-5", "anthropic", fake, _http_failure(), (url,)
            )
        elif kind == "local":
            registry = _single({"name": "local", "type": "local"}, {"provider": "local", "handler": LOCAL_HANDLER})
            failure = Failure(f"{RAISE} {PROMPT}", 502, openai.InternalServerError, "The local handler")
            found = Setup(kind, "", "conformance", "local", LOCAL_HANDLER, None, None, failure, (SECRET, "Runtime"))
        else:
            # As `tiergate demo` builds it (proxy/demo.py): the file as shipped, fakes for both providers.
            fake = FakeOpenAI(choose=_openai_model)
            url = await stack.enter_async_context(serve(fake))
            claude_url = await stack.enter_async_context(serve(FakeAnthropic(choose=_anthropic_model)))
            environ = {
                "OPENAI_BASE_URL": url + "/v1",
                "OPENAI_API_KEY": "sk-demo-upstream",
                "ANTHROPIC_BASE_URL": claude_url,
                "ANTHROPIC_API_KEY": "sk-ant-demo-upstream",
            }
            registry = rules.load(RULES, environ=environ)
            hidden = (url, claude_url)
            found = Setup(kind, "", "summary", "openai", "gpt-5.4-mini", "openai", fake, _http_failure(), hidden)
        proxy_url = await stack.enter_async_context(serve(create_app(settings, registry)))
        yield Setup(**{**found.__dict__, "url": proxy_url})


@pytest.fixture(autouse=True)
def _clean_serving_fake(setup: Setup) -> Iterator[None]:
    """Each test reads only the upstream requests it caused (and must consume what it pushes)."""
    with contextlib.ExitStack() as stack:
        if setup.serving is not None:
            stack.enter_context(clean(setup.serving))
        yield


@pytest_asyncio.fixture(loop_scope="module")
async def conformance_client(setup: Setup) -> AsyncIterator[AsyncOpenAI]:
    c = sdk(setup.url, headers={"X-Task-Type": setup.task})
    yield c
    await c.close()


# --- what every answer must look like ---------------------------------------------------------------------


async def create(setup: Setup, conformance_client: AsyncOpenAI, **kwargs: Any) -> ChatCompletion:
    """A non-streamed call, checked against OpenAI's spec and tiergate's routing headers."""
    raw = await conformance_client.chat.completions.with_raw_response.create(model="auto", **kwargs)
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-model"]) == (setup.provider, setup.model)
    assert raw.headers["x-tiergate-fallback"] == "false"
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id and completion.model == setup.model
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason in FINISH_REASONS
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    return completion


async def stream(setup: Setup, conformance_client: AsyncOpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    """A streamed call's chunks, each checked against OpenAI's spec and the chunk essentials."""
    raw = await conformance_client.chat.completions.with_raw_response.create(model="auto", stream=True, **kwargs)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-model"]) == (setup.provider, setup.model)
    chunks = [chunk async for chunk in raw.parse()]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
        assert chunk.object == "chat.completion.chunk" and chunk.model == setup.model
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion has its id"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices and all(len(c.choices) == 1 and c.choices[0].index == 0 for c in with_choices)
    assert with_choices[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] in FINISH_REASONS and set(finishes[:-1]) <= {None}
    return chunks


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- the suite -----------------------------------------------------------------------------------------


async def test_plain_completion(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    completion = await create(setup, conformance_client, messages=[user(PROMPT)])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content is not None and PROMPT in choice.message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    if setup.dialect is not None:
        assert setup.received()["model"] == setup.model


async def test_multi_turn(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    messages = [
        {"role": "system", "content": SYSTEM},
        user("What is a queue?"),
        {"role": "assistant", "content": "A list of jobs waiting their turn."},
        user(PROMPT),
    ]
    completion = await create(setup, conformance_client, messages=messages)
    content = completion.choices[0].message.content
    assert content is not None and PROMPT in content  # answered the last turn
    if setup.dialect == "openai":
        assert setup.received()["messages"] == messages
    elif setup.dialect == "anthropic":
        body = setup.received()
        assert body["system"] == SYSTEM
        assert body["messages"] == [
            user("What is a queue?"),
            {"role": "assistant", "content": "A list of jobs waiting their turn."},
            user(PROMPT),
        ]


async def test_tools_round_trip(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    asked = [user("Look up the word 'queue'")]
    first = await create(setup, conformance_client, messages=asked, tools=[LOOKUP])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "lookup"
    assert isinstance(json.loads(call.function.arguments), dict)
    if setup.dialect == "anthropic":
        assert setup.received()["tools"] == [
            {"name": "lookup", "description": "Look a word up", "input_schema": LOOKUP["function"]["parameters"]}
        ]

    result = {"role": "tool", "tool_call_id": call.id, "content": "a line of waiting jobs"}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]}
    second = await create(setup, conformance_client, messages=[*asked, assistant, result], tools=[LOOKUP])
    choice = second.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None and choice.message.content
    if setup.dialect == "openai":
        assert setup.received()["messages"][-1] == result
    elif setup.dialect == "anthropic":
        last = setup.received()["messages"][-1]
        assert last["role"] == "user"
        assert last["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": result["content"]}]


async def test_streamed_tool_call(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    chunks = await stream(setup, conformance_client, messages=[user("Look up the word 'queue'")], tools=[LOOKUP])
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert calls and {tc.index for tc in calls} == {0}
    assert calls[0].id and calls[0].type == "function" and calls[0].function is not None
    assert calls[0].function.name == "lookup"
    arguments = "".join((tc.function.arguments or "") if tc.function else "" for tc in calls)
    assert isinstance(json.loads(arguments), dict)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize("response_format", [JSON_SCHEMA, JSON_OBJECT], ids=["json_schema", "json_object"])
async def test_json_output(setup: Setup, conformance_client: AsyncOpenAI, response_format: dict[str, Any]) -> None:
    completion = await create(setup, conformance_client, messages=[user(PROMPT)], response_format=response_format)
    content = completion.choices[0].message.content
    assert content is not None
    parsed = json.loads(content)  # the provider's JSON came back intact
    if response_format is JSON_SCHEMA:
        assert set(parsed) == set(SCHEMA["required"])
    else:
        assert isinstance(parsed, dict)
    # ... because tiergate told the provider, in its dialect, that JSON was wanted
    if setup.dialect == "openai":
        assert setup.received()["response_format"] == response_format  # forwarded as is
    elif setup.dialect == "anthropic":
        received = setup.received()
        assert "response_format" not in received  # the Messages API would reject the field
        if response_format is JSON_SCHEMA:
            assert received["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
            assert "system" not in received
        else:  # no schema-less JSON mode: an instruction instead
            assert "output_config" not in received
            assert received["system"] == JSON_OBJECT_INSTRUCTION


async def test_stream_with_usage(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    whole = await create(setup, conformance_client, messages=[user(PROMPT)])
    chunks = await stream(setup, conformance_client, messages=[user(PROMPT)], stream_options={"include_usage": True})
    assert text_of(chunks) == whole.choices[0].message.content
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    if setup.dialect is not None:
        assert setup.received()["stream"] is True


async def test_stream_without_usage(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    whole = await create(setup, conformance_client, messages=[user(PROMPT)])
    chunks = await stream(setup, conformance_client, messages=[user(PROMPT)])
    assert text_of(chunks) == whole.choices[0].message.content
    assert all(c.choices for c in chunks), "no usage-only chunk for a client that did not ask"
    assert not [c for c in chunks if "usage" in c.model_fields_set], "no `usage` key in any chunk"


async def test_upstream_error(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    failure = setup.failure
    with pytest.raises(openai.APIStatusError) as caught:
        await conformance_client.chat.completions.create(model="auto", messages=[user(failure.prompt)])
    error = caught.value
    assert type(error) is failure.error and error.status_code == failure.status
    body = error.response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"].startswith(failure.message)
    text = error.response.text
    assert "Traceback" not in text and not any(secret in text for secret in setup.hidden)
    assert error.response.headers["x-should-retry"] == ("true" if failure.status >= 500 else "false")


@pytest.mark.parametrize("setup", RATE_LIMITED, indirect=True)
async def test_rate_limit_passes_retry_after_on(setup: Setup, conformance_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await conformance_client.chat.completions.create(model="auto", messages=[user(f"{FAIL_429} {PROMPT}")])
    error = caught.value
    assert error.status_code == 429 and error.response.headers["retry-after"] == RETRY_AFTER
    assert isinstance(error.body, dict) and error.body["message"] == MESSAGE_429
    assert error.response.headers["x-should-retry"] == "true"
