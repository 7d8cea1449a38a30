"""tiergate's ``/v1/responses`` held to OpenAI's published spec: its own examples, served or refused.

The spec's request examples (``x-oaiMeta``) go through tiergate to a native target and to a translated
one: every answer and event is valid against the spec and parsed by the SDK, every body forwarded to
the native upstream is a valid ``CreateResponse``, and what a translated target cannot honour (a file by
URL, built-in tools) is a 400 naming the field whose body is a valid ``ErrorResponse``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from proxy.app import create_app
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI
from proxy.loopback import serve
from proxy.settings import Settings
from tests.conftest import CLIENT_KEY, RULES, clean
from tests.responses_spec import assert_event, assert_response, assert_valid, doc, is_valid, validator
from tests.test_responses import post_events, registry

# The async tests share the module's event loop with its fakes and tiergate.
module_loop = pytest.mark.asyncio(loop_scope="module")


def _examples() -> dict[str, dict[str, Any]]:
    """The ``POST /responses`` examples' request bodies (from each ``curl ... -d '{...}'``), by title."""
    out = {}
    for example in doc()["paths"]["/responses"]["post"]["x-oaiMeta"]["examples"]:
        match = re.search(r"-d '(\{.*\})'\s*$", example["request"]["curl"], re.DOTALL)
        assert match, example["title"]
        out[example["title"]] = json.loads(match.group(1))
    return out


EXAMPLES = _examples()
# What a translated target refuses of the examples: the field each 400 names.
REFUSED = {"File input": "input[0].content[1]", "Web search": "tools[0]", "File search": "tools[0]"}


@pytest.fixture(scope="module")
def spec_gpt() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture(scope="module")
def spec_claude() -> FakeAnthropic:
    return FakeAnthropic()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spec_proxy_url(
    spec_gpt: FakeOpenAI, spec_claude: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    settings = Settings(config=str(RULES), db=str(tmp_path_factory.mktemp("responses-spec") / "ledger.db"))
    async with serve(spec_gpt) as gpt_url, serve(spec_claude) as claude_url:
        async with serve(create_app(settings, registry(gpt_url, claude_url))) as url:
            yield url


@pytest.fixture(autouse=True)
def _clean_spec_fakes(spec_gpt: FakeOpenAI, spec_claude: FakeAnthropic) -> Iterator[None]:
    with clean(spec_gpt), clean(spec_claude):
        yield


async def _post(url: str, body: dict[str, Any], tier: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10) as h:
        return await h.post("/v1/responses", json=body, headers={"X-Task-Type": tier})


# --- the validator is live ---------------------------------------------------------------------------------


def _text_example() -> dict[str, Any]:
    """The spec's first example response, with the two nits that make it invalid against its own schemas
    fixed (``user: null``, and ``output_text`` parts without their required ``logprobs``)."""
    text: dict[str, Any] = json.loads(doc()["paths"]["/responses"]["post"]["x-oaiMeta"]["examples"][0]["response"])
    text.pop("user")
    for part in text["output"][0]["content"]:
        part["logprobs"] = []
    return text


def test_the_specs_example_response_predates_its_schemas_by_two_nits() -> None:
    """The examples are older than the schemas: read literally they fail, only at the two nits
    ``_text_example`` fixes (so nothing here passes by loosening the validator)."""
    literal = json.loads(doc()["paths"]["/responses"]["post"]["x-oaiMeta"]["examples"][0]["response"])
    assert {tuple(e.absolute_path) for e in validator("Response").iter_errors(literal)} == {("user",), ("output", 0)}
    assert_valid("Response", _text_example())
    # Some request examples too: an input_image without its required detail, a function tool without strict.
    assert not is_valid("CreateResponse", EXAMPLES["Image input"])
    assert not is_valid("CreateResponse", EXAMPLES["Functions"])
    assert is_valid("CreateResponse", EXAMPLES["Text input"]) and is_valid("CreateResponse", EXAMPLES["Streaming"])


def test_the_validator_rejects_what_the_spec_rejects() -> None:
    text = _text_example()
    assert not is_valid("Response", {**text, "object": "chat.completion"})
    assert not is_valid("Response", {k: v for k, v in text.items() if k != "output"})
    assert not is_valid("Response", {**text, "usage": None})
    usage = {**text["usage"], "input_tokens_details": {"cached_tokens": 0}}
    assert not is_valid("Response", {**text, "usage": usage})  # cache_write_tokens is required
    opening = {k: v for k, v in text.items() if k != "usage"} | {"status": "in_progress", "output": []}
    created = {"type": "response.created", "response": opening, "sequence_number": 0}
    assert_valid("ResponseCreatedEvent", created)
    assert not is_valid("ResponseCreatedEvent", {k: v for k, v in created.items() if k != "sequence_number"})
    delta = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0,
             "delta": "x", "logprobs": [], "sequence_number": 3}  # fmt: skip
    assert_valid("ResponseTextDeltaEvent", delta)
    assert not is_valid("ResponseTextDeltaEvent", {k: v for k, v in delta.items() if k != "logprobs"})
    error = {"type": "error", "code": None, "message": "m", "param": None, "sequence_number": 1}
    assert_valid("ResponseErrorEvent", error)
    assert not is_valid("ResponseErrorEvent", {**error, "message": None})
    assert not is_valid("CreateResponse", {"model": "m", "max_output_tokens": 8})


# --- the examples, through tiergate -----------------------------------------------------------------------


@module_loop
@pytest.mark.parametrize("title", list(EXAMPLES))
async def test_every_example_is_served_natively(spec_proxy_url: str, spec_gpt: FakeOpenAI, title: str) -> None:
    body = EXAMPLES[title]
    if body.get("stream"):
        _r, events = await post_events(spec_proxy_url, body, **{"X-Task-Type": "mixed"})
        for event in events:
            assert_event(event)
        assert events[-1]["type"] == "response.completed"
    else:
        r = await _post(spec_proxy_url, body, "mixed")
        assert r.status_code == 200, r.text
        assert_response(r.json())
    forwarded = spec_gpt.requests[-1].body
    assert forwarded == {**body, "model": "gpt-5.4-mini", "max_output_tokens": 512, "temperature": 0.2}
    if is_valid("CreateResponse", body):  # what tiergate adds keeps a valid body valid
        assert_valid("CreateResponse", forwarded)


@module_loop
@pytest.mark.parametrize("title", list(EXAMPLES))
async def test_every_example_is_translated_or_refused_naming_the_field(
    spec_proxy_url: str, spec_claude: FakeAnthropic, title: str
) -> None:
    body = EXAMPLES[title]
    if title in REFUSED:
        r = await _post(spec_proxy_url, body, "claude")
        assert r.status_code == 400, r.text
        assert_valid("ErrorResponse", r.json())
        assert r.json()["error"]["param"] == REFUSED[title]
        assert spec_claude.requests == []
        return
    if body.get("stream"):
        _r, events = await post_events(spec_proxy_url, body, **{"X-Task-Type": "claude"})
        for event in events:
            assert_event(event)
        assert events[-1]["type"] == "response.completed"
    else:
        r = await _post(spec_proxy_url, body, "claude")
        assert r.status_code == 200, r.text
        assert_response(r.json())
    assert spec_claude.requests[-1].path == "/v1/messages"


@module_loop
async def test_errors_tiergate_renders_are_error_responses(spec_proxy_url: str) -> None:
    for body in ({"input": "no model"}, {"model": "auto", "input": 1}, {"model": "auto", "max_output_tokens": 1}):
        r = await _post(spec_proxy_url, body, "mixed")
        assert r.status_code == 400
        assert_valid("ErrorResponse", r.json())
