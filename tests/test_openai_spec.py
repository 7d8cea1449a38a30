"""tiergate's wire output checked against OpenAI's published OpenAPI spec, with jsonschema.

Every body validated here was produced by tiergate over HTTP (fake upstream -> tiergate on uvicorn ->
httpx), never written by hand: completions, every SSE chunk exactly as sent, the models endpoints,
the error bodies tiergate renders itself, and the request bodies it forwards upstream. Request shapes
come from the spec too: its own examples must be served, bodies it rejects must get a 400.

The spec (tests/fixtures/openai-openapi, see its README) declares OpenAPI 3.1 but still marks 21 schemas
with OpenAPI 3.0's ``nullable: true``, which 3.1 (JSON Schema 2020-12) dropped. Read literally, it rejects
``finish_reason: null`` on every chunk of OpenAI's own streaming example. ``_nullable_as_31`` applies the
standard 3.0 -> 3.1 reading (``{"anyOf": [schema, {"type": "null"}]}``) to a copy of the document;
``test_spec_nullable_nit`` pins that reading, so nothing here passes by loosening anything else.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from proxy.app import create_app
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.settings import Settings
from tests.conftest import CLIENT_KEY, RULES, ProxyFactory, clean, shipped_registry

# One fake upstream and one tiergate serve the whole module (`spec_fake`, `spec_upstream_url`,
# `spec_proxy_url`: named for the module, not after conftest's per-test fixtures), because stopping a
# uvicorn server costs ~0.3 s and this module makes ~40 calls. Async tests share the module's event
# loop with them (`module_loop`).
module_loop = pytest.mark.asyncio(loop_scope="module")

SPEC = Path(__file__).resolve().parent / "fixtures" / "openai-openapi" / "chat-completions.yaml"
SPEC_URI = "urn:openai-openapi:chat-completions"
USER = [{"role": "user", "content": "Name this chat about moving cron jobs to a queue"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        },
    }
]


# --- the spec, as a validator --------------------------------------------------------------------


@functools.cache
def _raw_doc() -> dict[str, Any]:
    with SPEC.open("rb") as f:
        doc: dict[str, Any] = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return doc


def _nullable_as_31(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` read as 3.1 does: the schema, or null."""
    if isinstance(node, list):
        return [_nullable_as_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_as_31(value) for key, value in node.items() if not (key == "nullable" and value is True)}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@functools.cache
def _validator(name: str, *, literal: bool = False) -> Draft202012Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<name>``, refs resolved in the document."""
    doc = _raw_doc() if literal else _nullable_as_31(copy.deepcopy(_raw_doc()))
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, Resource.from_contents(doc, DRAFT202012))
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(name: str, instance: Any) -> None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "\n".join(f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])
        raise AssertionError(f"not a valid {name}:\n{detail}\ninstance: {json.dumps(instance)[:2000]}")


def is_valid(name: str, instance: Any) -> bool:
    return _validator(name).is_valid(instance)


def _spec_examples() -> list[dict[str, Any]]:
    """The ``POST /chat/completions`` examples from the spec's x-oaiMeta."""
    examples: list[dict[str, Any]] = _raw_doc()["paths"]["/chat/completions"]["post"]["x-oaiMeta"]["examples"]
    return examples


def _curl_body(example: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of an example's ``curl ... -d '{...}'``."""
    match = re.search(r"-d '(\{.*\})'\s*$", example["request"]["curl"], re.DOTALL)
    assert match, example["title"]
    body: dict[str, Any] = json.loads(match.group(1))
    return body


SPEC_REQUESTS = {e["title"]: _curl_body(e) for e in _spec_examples()}


@pytest.fixture(scope="module")
def spec_fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spec_upstream_url(spec_fake: FakeOpenAI) -> AsyncIterator[str]:
    async with serve(spec_fake) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spec_proxy_url(spec_upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    settings = Settings(config=str(RULES), db=str(tmp_path_factory.mktemp("spec") / "ledger.db"))
    async with serve(create_app(settings, shipped_registry(spec_upstream_url))) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_spec_fake(spec_fake: FakeOpenAI) -> Iterator[None]:
    """Each test starts with no script and no recorded requests, and must consume what it pushes."""
    with clean(spec_fake):
        yield


# --- talking to tiergate ---------------------------------------------------------------------------


def _http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10.0)


def sse_payloads(text: str) -> Iterator[str]:
    """The ``data`` of each SSE event, up to ``[DONE]``; every event must be a single ``data:`` line."""
    assert text.endswith("\n\n"), text[-200:]
    events = text.split("\n\n")
    assert events.pop() == ""
    for i, event in enumerate(events):
        assert event.startswith("data: ") and "\n" not in event, event
        data = event[len("data: ") :]
        if data == "[DONE]":
            assert i == len(events) - 1, "events after [DONE]"
            return
        yield data
    raise AssertionError("the stream did not end with data: [DONE]")


async def post_stream(url: str, body: dict[str, Any], **headers: str) -> list[Any]:
    """Stream a chat completion; return every chunk before ``[DONE]``, decoded from the raw SSE text."""
    async with _http(url) as http, http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = (await r.aread()).decode()
    return [json.loads(data) for data in sse_payloads(text)]


# --- the validator is live ---------------------------------------------------------------------------


def test_validator_rejects_what_the_spec_rejects() -> None:
    completion = json.loads(_spec_examples()[0]["response"])
    assert_valid("CreateChatCompletionResponse", completion)
    assert not is_valid("CreateChatCompletionResponse", {**completion, "object": "wrong"})
    assert not is_valid("CreateChatCompletionResponse", {k: v for k, v in completion.items() if k != "choices"})
    assert not is_valid("CreateChatCompletionResponse", {**completion, "created": "yesterday"})
    choice = completion["choices"][0]
    assert not is_valid("CreateChatCompletionResponse", {**completion, "choices": [{**choice, "finish_reason": None}]})
    assert not is_valid("CreateChatCompletionResponse", {**completion, "choices": [{**choice, "message": {}}]})
    chunk = json.loads(_spec_examples()[2]["response"].split("\n\n")[0])
    assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert not is_valid("CreateChatCompletionStreamResponse", {**chunk, "object": "chat.completion"})
    assert not is_valid("CreateChatCompletionStreamResponse", {**chunk, "usage": {"prompt_tokens": 1}})
    assert not is_valid("Model", {"id": "m", "object": "model", "created": 0})
    assert not is_valid("ListModelsResponse", {"object": "list", "data": [{"id": "m"}]})
    assert not is_valid("ErrorResponse", {"error": {"message": "m", "type": "t"}})  # param and code are required
    assert not is_valid("ErrorResponse", {"message": "m", "type": "t", "param": None, "code": None})
    assert not is_valid("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "robot", "content": "x"}]})


def test_spec_nullable_nit() -> None:
    """The literal 2020-12 reading of the spec rejects its own examples: 3.0's ``nullable`` is ignored."""
    chunks = [json.loads(c) for c in _spec_examples()[2]["response"].split("\n\n") if c.startswith("{")]
    literal = _validator("CreateChatCompletionStreamResponse", literal=True)
    assert not literal.is_valid(chunks[0])  # "finish_reason": null, "logprobs": null
    paths = {tuple(e.absolute_path) for e in literal.iter_errors(chunks[0])}
    assert paths == {("choices", 0, "logprobs"), ("choices", 0, "finish_reason")}
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    # The reading adds null and nothing else.
    assert not is_valid("CreateChatCompletionStreamResponse", {**chunks[0], "usage": "none"})
    bad_finish = [{**chunks[0]["choices"][0], "finish_reason": "done"}]
    assert not is_valid("CreateChatCompletionStreamResponse", {**chunks[0], "choices": bad_finish})


# --- responses tiergate relays --------------------------------------------------------------------


@module_loop
async def test_completion_is_a_create_chat_completion_response(spec_proxy_url: str) -> None:
    async with _http(spec_proxy_url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    completion = r.json()
    assert_valid("CreateChatCompletionResponse", completion)
    assert completion["choices"][0]["message"]["content"].startswith("Fake reply from gpt-5.5")


@module_loop
async def test_tool_call_completion_is_a_create_chat_completion_response(spec_proxy_url: str) -> None:
    body = {"model": "auto", "messages": USER, "tools": TOOLS, "tool_choice": "auto"}
    assert_valid("CreateChatCompletionRequest", body)
    async with _http(spec_proxy_url) as http:
        r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    completion = r.json()
    assert_valid("CreateChatCompletionResponse", completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"][0]["type"] == "function"


@module_loop
@pytest.mark.parametrize("include_usage", [None, False, True], ids=["no-options", "usage-false", "usage-true"])
async def test_every_stream_chunk_is_a_create_chat_completion_stream_response(
    spec_proxy_url: str, include_usage: bool | None
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": USER, "stream": True}
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    assert_valid("CreateChatCompletionRequest", body)
    chunks = await post_stream(spec_proxy_url, body, **{"x-task-type": "summary"})
    assert len(chunks) > 3
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    if include_usage:
        *content, last = chunks
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    else:
        content = chunks
        assert all(c["choices"] for c in chunks), "the usage-only chunk the client did not ask for is dropped"
    # The spec: `usage` is only present when the client set include_usage (then null on every chunk
    # but the last). tiergate asks upstream for usage itself, so it must hide the key again.
    if include_usage:
        assert all("usage" in c and c["usage"] is None for c in content)
    else:
        assert all("usage" not in c for c in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"


@module_loop
async def test_tool_call_stream_chunks_are_valid(spec_proxy_url: str) -> None:
    body = {
        "model": "auto",
        "messages": USER,
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = await post_stream(spec_proxy_url, body)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-1]["choices"] == []


# --- the models endpoints -------------------------------------------------------------------------


@module_loop
async def test_models_list_and_retrieve_match_the_spec(spec_proxy_url: str) -> None:
    async with _http(spec_proxy_url) as http:
        listed = await http.get("/v1/models")
        assert listed.status_code == 200
        assert_valid("ListModelsResponse", listed.json())
        ids = [m["id"] for m in listed.json()["data"]]
        assert "auto" in ids and "tier:mid" in ids
        for model_id in ("auto", "tier:mid", "title_generation"):
            one = await http.get(f"/v1/models/{model_id}")
            assert one.status_code == 200
            assert_valid("Model", one.json())
            assert one.json()["id"] == model_id


# --- errors tiergate renders itself ---------------------------------------------------------------


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_valid("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


@module_loop
async def test_error_bodies_tiergate_renders_are_error_responses(spec_proxy_url: str, spec_fake: FakeOpenAI) -> None:
    async with _http(spec_proxy_url) as http:
        bad_json = await http.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        unknown_task = await http.post(
            "/v1/chat/completions", json={"model": "auto", "messages": USER}, headers={"x-task-type": "titel"}
        )
        unknown_route = await http.post("/v1/nope", json={})
        wrong_method = await http.get("/v1/chat/completions")
        unknown_model = await http.get("/v1/models/gpt-unknown")
    assert _assert_error(bad_json, 400)["type"] == "invalid_request_error"
    _assert_error(unknown_task, 400, "unknown_task_type")
    _assert_error(unknown_route, 404, "unknown_url")
    _assert_error(wrong_method, 405, "method_not_allowed")
    _assert_error(unknown_model, 404, "model_not_found")
    assert spec_fake.requests == []


@module_loop
async def test_unauthorized_is_an_error_response(start_proxy: ProxyFactory, spec_upstream_url: str) -> None:
    async with start_proxy(shipped_registry(spec_upstream_url), api_keys=("sk-other",)) as url, _http(url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    _assert_error(r, 401, "invalid_api_key")


@module_loop
async def test_upstream_unreachable_is_an_error_response(start_proxy: ProxyFactory) -> None:
    async with serve(FakeOpenAI()) as gone:
        registry = shipped_registry(gone)
    async with start_proxy(registry) as url, _http(url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    _assert_error(r, 502, "upstream_unreachable")


@module_loop
@pytest.mark.parametrize("status", [400, 429])
async def test_upstream_errors_passed_on_are_error_responses(
    spec_proxy_url: str, spec_fake: FakeOpenAI, status: int
) -> None:
    spec_fake.push(Behavior(status=status))
    async with _http(spec_proxy_url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    _assert_error(r, status)


@module_loop
async def test_mid_stream_error_event_is_an_error_response(spec_proxy_url: str, spec_fake: FakeOpenAI) -> None:
    spec_fake.push(Behavior(text="a b c d e f", reset_after_chunks=2))
    async with _http(spec_proxy_url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER, "stream": True})
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert "[DONE]" not in events  # a broken stream must not look complete
    *chunks, last = (json.loads(e) for e in events)
    assert chunks
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert_valid("ErrorResponse", last)
    assert not is_valid("CreateChatCompletionStreamResponse", last)


# --- request shapes from the spec -------------------------------------------------------------------

VALID_REQUESTS: dict[str, dict[str, Any]] = {
    **{f"spec example: {title}": body for title, body in SPEC_REQUESTS.items()},
    "tool round trip": {
        "model": "tier:mid",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Define queue"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"word":"q"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a line of waiting things"},
        ],
        "tools": TOOLS,
        "parallel_tool_calls": False,
    },
    "sampling and format params": {
        "model": "gpt-5.5",
        "messages": USER,
        "temperature": 0.3,
        "top_p": 0.9,
        "n": 1,
        "seed": 7,
        "stop": ["\n\n"],
        "max_completion_tokens": 64,
        "response_format": {"type": "json_object"},
        "user": "user-1",
        "metadata": {"team": "search"},
        "store": False,
    },
    "stream with usage": {"model": "auto", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
}


def test_spec_examples_were_found() -> None:
    assert set(SPEC_REQUESTS) == {"Default", "Image input", "Streaming", "Functions", "Logprobs"}


@module_loop
@pytest.mark.parametrize("body", list(VALID_REQUESTS.values()), ids=list(VALID_REQUESTS))
async def test_requests_the_spec_accepts_are_served(
    spec_proxy_url: str, spec_fake: FakeOpenAI, body: dict[str, Any]
) -> None:
    assert_valid("CreateChatCompletionRequest", body)
    if body.get("stream"):
        for chunk in await post_stream(spec_proxy_url, body):
            assert_valid("CreateChatCompletionStreamResponse", chunk)
    else:
        async with _http(spec_proxy_url) as http:
            r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert_valid("CreateChatCompletionResponse", r.json())
    # What tiergate sent upstream (model, params and max-tokens rewritten) is a valid request too.
    (forwarded,) = [req.body for req in spec_fake.requests]
    assert_valid("CreateChatCompletionRequest", forwarded)
    assert forwarded["messages"] == body["messages"]


MESSAGE = {"role": "user", "content": "x"}
INVALID_REQUESTS: dict[str, tuple[Any, str | None]] = {
    "not an object": ([{"model": "auto", "messages": [MESSAGE]}], None),
    "missing model": ({"messages": [MESSAGE]}, "model"),
    "model not a string": ({"model": 5, "messages": [MESSAGE]}, "model"),
    "missing messages": ({"model": "auto"}, "messages"),
    "messages not an array": ({"model": "auto", "messages": "hello"}, "messages"),
    "messages an object": ({"model": "auto", "messages": MESSAGE}, "messages"),
    "messages empty": ({"model": "auto", "messages": []}, "messages"),
    "message not an object": ({"model": "auto", "messages": ["hello"]}, "messages[0]"),
    "unknown role": ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    "stream not a boolean": ({"model": "auto", "messages": [MESSAGE], "stream": "yes"}, "stream"),
    "stream_options not an object": (
        {"model": "auto", "messages": [MESSAGE], "stream": True, "stream_options": True},
        "stream_options",
    ),
    "max_completion_tokens not an integer": (
        {"model": "auto", "messages": [MESSAGE], "max_completion_tokens": "64"},
        "max_completion_tokens",
    ),
}


@module_loop
@pytest.mark.parametrize(("body", "param"), list(INVALID_REQUESTS.values()), ids=list(INVALID_REQUESTS))
async def test_requests_the_spec_rejects_get_an_openai_shaped_400(
    spec_proxy_url: str, spec_fake: FakeOpenAI, body: Any, param: str | None
) -> None:
    assert not is_valid("CreateChatCompletionRequest", body)
    async with _http(spec_proxy_url) as http:
        r = await http.post("/v1/chat/completions", json=body)
    error = _assert_error(r, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert spec_fake.requests == []
