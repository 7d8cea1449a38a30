"""``type: local`` end to end: a Python handler answers, declines (the next target answers) or fails.

The shipped ``classification`` task runs on the ``rules`` tier, whose only target is the keyword table
``proxy.handlers.ticket_labels:classify``, with ``fallback_tier: small``. The other tests use handlers
from ``tests.handlers_for_tests`` behind one module-wide tiergate. A handler's crash must reach the
client as an OpenAI-shaped error without its internals, or not at all when another target can answer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
import yaml

from proxy import cli
from proxy.app import create_app
from proxy.errors import ConfigError
from proxy.fakes.openai import FakeOpenAI
from proxy.handlers import ticket_labels
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from proxy.settings import Settings
from tests.conftest import RULES, UPSTREAM_KEY, ProxyFactory, clean, sdk, shipped_registry
from tests.handlers_for_tests import SECRET
from tests.test_ledger import rows
from tests.test_openai_spec import assert_valid

# One fake upstream (`local_fake`) and one tiergate over the test handlers (`local_proxy_url`) serve the
# module, named for it rather than after conftest's per-test fixtures; async tests share its event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")

CLASSIFY = "proxy.handlers.ticket_labels:classify"
LABELLED = "I was charged twice, please refund"  # the table: billing
AMBIGUOUS = "the invoice PDF is blank"  # the table: billing 1, bug 1 -> declined
SMALL_TERSE = "Answer with only what was asked: no preamble, no explanation."
H = "tests.handlers_for_tests:"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def local_fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_upstream_url(local_fake: FakeOpenAI) -> AsyncIterator[str]:
    async with serve(local_fake) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_local_fake(local_fake: FakeOpenAI) -> Iterator[None]:
    """Each test starts with no script and no recorded requests, and must consume what it pushes."""
    with clean(local_fake):
        yield


# --- the shipped table, through the shipped rules.yaml ------------------------------------------------


@module_loop
async def test_a_ticket_the_table_labels_is_answered_locally_at_zero_cost(
    start_proxy: ProxyFactory, local_upstream_url: str, local_fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    headers = {"X-Task-Type": "classification"}
    async with start_proxy(shipped_registry(local_upstream_url, policy=None), db=str(db)) as url:
        client = sdk(url, headers)
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=user(LABELLED))
        assert_valid("CreateChatCompletionResponse", raw.http_response.json())
        stream = await client.chat.completions.with_raw_response.create(
            model="auto", messages=user(LABELLED), stream=True
        )
        chunks = [c async for c in stream.parse()]
        await client.close()

    for response in (raw, stream):
        assert response.headers["x-tiergate-provider"] == "local"
        assert response.headers["x-tiergate-model"] == CLASSIFY
        assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-fallback"]) == ("rules", "false")
    completion = raw.parse()
    assert completion.model == CLASSIFY and completion.choices[0].message.content == "billing"
    assert completion.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "billing"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.model == CLASSIFY for c in chunks)
    assert local_fake.requests == []  # no model was called

    got = rows(db)
    assert [r["stream"] for r in got] == [0, 1]
    for row in got:
        assert (row["task"], row["tier"]) == ("classification", "rules")
        assert (row["provider"], row["model"]) == ("local", CLASSIFY)
        assert (row["status"], row["error_type"], row["attempts"], row["fallback"]) == (200, None, 1, 0)
        assert row["cost_usd"] == 0.0 and row["price_source"] == "local"  # priced, at zero: not NULL
        assert row["usage_source"] == "upstream" and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    attempts = rows(db, "attempts")
    served = ("rules", "local", CLASSIFY, 200)
    assert [(a["tier"], a["provider"], a["model"], a["status"]) for a in attempts] == [served, served]


@module_loop
async def test_an_ambiguous_ticket_is_declined_and_answered_by_the_small_tier(
    start_proxy: ProxyFactory, local_upstream_url: str, local_fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    # policy=None: the file's own policies, whose retries must not be spent on a handler that declined
    async with start_proxy(shipped_registry(local_upstream_url, policy=None), db=str(db)) as url:
        client = sdk(url, {"X-Task-Type": "classification"})
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=user(AMBIGUOUS))
        await client.close()

    assert raw.headers["x-tiergate-tier"] == "small" and raw.headers["x-tiergate-fallback"] == "true"
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-model"]) == ("openai", "gpt-5.4-nano")
    assert raw.headers["x-tiergate-attempts"] == "2"  # a decline is not retried on the same handler
    assert str(raw.parse().choices[0].message.content).startswith("Fake reply from gpt-5.4-nano: ")
    [sent] = [r.body for r in local_fake.requests]
    assert sent["messages"] == user(f"{AMBIGUOUS}\n\n{SMALL_TERSE}")  # the small tier's own wording

    [row] = rows(db)
    assert (row["tier"], row["provider"], row["model"], row["fallback"], row["attempts"]) == (
        "small",
        "openai",
        "gpt-5.4-nano",
        1,
        2,
    )
    assert row["prompt_variant"] == "small-terse"
    attempts = rows(db, "attempts")
    assert [(a["n"], a["tier"], a["provider"], a["model"], a["status"], a["error_type"]) for a in attempts] == [
        (1, "rules", "local", CLASSIFY, None, "handler_declined"),
        (2, "small", "openai", "gpt-5.4-nano", 200, None),
    ]


# --- test handlers behind one tiergate -------------------------------------------------------------


def local_registry(upstream_url: str) -> Registry:
    def local(name: str) -> dict[str, Any]:
        return {"provider": "local", "handler": H + name}

    tiers = {
        "raises_then_model": [local("raises"), "openai::gpt-4o-mini"],
        "raises": [local("raises")],
        "declines": [local("declines")],
        "async": [local("answer_async")],
        "tool_message": [local("tool_message")],
        "number": [local("returns_number")],
        "list": [local("returns_list")],
        "tool_calls_only": [local("tool_calls_only")],
        "bad_content": [local("bad_content")],
        "slow_then_model": [local("sleeps"), "openai::gpt-4o-mini"],
    }
    policies = {"slow_then_model": {"timeouts": {"first_byte_s": 0.3}}}
    return build(
        {
            "providers": {
                "local": {"type": "local"},
                "openai": {"type": "openai", "base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY},
            },
            "tiers": {name: {"targets": targets, "policy": policies.get(name, {})} for name, targets in tiers.items()},
            "tasks": {name: name for name in tiers},
            "policy": {"retries": 0},
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_proxy_url(local_upstream_url: str) -> AsyncIterator[str]:
    settings = Settings(config=str(RULES), ledger=False)
    async with serve(create_app(settings, local_registry(local_upstream_url))) as url:
        yield url


async def call(url: str, task: str, **kwargs: Any) -> Any:
    client = sdk(url, {"X-Task-Type": task})
    try:
        return await client.chat.completions.with_raw_response.create(model="auto", messages=user("hello"), **kwargs)
    finally:
        await client.close()


async def failure(url: str, task: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        await call(url, task)
    return caught.value


def assert_clean_error(error: openai.APIStatusError, status: int, code: str) -> dict[str, Any]:
    """An OpenAI-shaped error with nothing of the handler's internals in it."""
    assert error.status_code == status
    body: dict[str, Any] = error.response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    text = error.response.text
    for leak in ("Traceback", SECRET, "RuntimeError", "handlers_for_tests.py", "Internal Server Error"):
        assert leak not in text
    return body["error"]


@module_loop
async def test_a_handler_that_raises_falls_back_to_the_next_target(
    local_proxy_url: str, local_fake: FakeOpenAI
) -> None:
    raw = await call(local_proxy_url, "raises_then_model")
    assert raw.headers["x-tiergate-provider"] == "openai" and raw.headers["x-tiergate-fallback"] == "true"
    assert raw.headers["x-tiergate-attempts"] == "2"
    assert raw.parse().choices[0].message.content == "Fake reply from gpt-4o-mini: hello"
    assert len(local_fake.requests) == 1


@module_loop
async def test_a_handler_that_raises_with_no_next_target_is_a_clean_502(
    local_proxy_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tiergate.providers.local"):
        error = await failure(local_proxy_url, "raises")
    assert isinstance(error, openai.InternalServerError)
    body = assert_clean_error(error, 502, "handler_failed")
    assert body["message"] == f"The local handler for {H}raises failed."
    assert error.response.headers["x-tiergate-attempts"] == "1"
    assert SECRET in caplog.text  # the details go to the log instead


@module_loop
async def test_a_decline_with_no_next_target_is_a_clean_502(local_proxy_url: str) -> None:
    assert_clean_error(await failure(local_proxy_url, "declines"), 502, "handler_declined")


@module_loop
async def test_an_async_handler_is_awaited(local_proxy_url: str) -> None:
    raw = await call(local_proxy_url, "async")
    assert raw.parse().choices[0].message.content == "async: hello"
    stream = await call(local_proxy_url, "async", stream=True)
    chunks = [c async for c in stream.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "async: hello"


@module_loop
async def test_a_handler_may_return_a_full_message_with_tool_calls(local_proxy_url: str) -> None:
    raw = await call(local_proxy_url, "tool_message")
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [tool_call] = choice.message.tool_calls
    assert (tool_call.id, tool_call.function.name, json.loads(tool_call.function.arguments)) == (
        "call_weather",
        "weather",
        {"city": "Oslo"},
    )

    stream = await call(local_proxy_url, "tool_message", stream=True)
    chunks = [c async for c in stream.parse()]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [(tc.index, tc.id, tc.function.name, tc.function.arguments) for tc in calls] == [  # type: ignore[union-attr]
        (0, "call_weather", "weather", '{"city":"Oslo"}')
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@module_loop
@pytest.mark.parametrize("task", ["number", "list"])
async def test_a_handler_returning_neither_text_nor_a_message_is_a_clean_502(local_proxy_url: str, task: str) -> None:
    body = assert_clean_error(await failure(local_proxy_url, task), 502, "handler_failed")
    assert "returned an invalid answer" in body["message"]


@module_loop
async def test_a_handler_slower_than_first_byte_s_times_out_and_falls_back(local_proxy_url: str) -> None:
    raw = await call(local_proxy_url, "slow_then_model")
    assert raw.headers["x-tiergate-provider"] == "openai" and raw.headers["x-tiergate-fallback"] == "true"
    assert raw.headers["x-tiergate-attempts"] == "2"  # the handler's timed-out try, then the model's
    assert raw.parse().choices[0].message.content == "Fake reply from gpt-4o-mini: hello"


@module_loop
async def test_a_message_without_content_gets_content_null(local_proxy_url: str) -> None:
    raw = await call(local_proxy_url, "tool_calls_only")
    body = raw.http_response.json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert_valid("CreateChatCompletionResponse", body)


@module_loop
async def test_a_message_with_non_text_content_is_a_clean_502(local_proxy_url: str) -> None:
    assert_clean_error(await failure(local_proxy_url, "bad_content"), 502, "handler_failed")


# --- configuration --------------------------------------------------------------------------------------


def one_tier(target: Any) -> dict[str, Any]:
    return {
        "providers": {"local": {"type": "local"}, "openai": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
        "tiers": {"rules": {"targets": [target]}},
        "tasks": {"classification": "rules"},
    }


def check_fails(tmp_path: Path, doc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    """``tiergate check`` on ``doc``: exit 2 and one line on stderr; returns that line."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n") and err.count("\n") == 1, err
    return err.removeprefix("tiergate: ").rstrip("\n")


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        ("nope.module:fn", "No module named 'nope'"),
        ("proxy.handlers.ticket_labels:missing", "has no attribute 'missing'"),
        ("no_colon", "expected 'package.module:function'"),
        (":fn", "expected 'package.module:function'"),
        ("proxy.handlers.ticket_labels:", "expected 'package.module:function'"),
        (H + "NOT_CALLABLE", "is not callable"),
    ],
)
def test_a_bad_handler_is_one_line_naming_its_path(
    handler: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = one_tier({"provider": "local", "handler": handler})
    with pytest.raises(ConfigError) as caught:
        build(doc)
    message = str(caught.value)
    assert message.startswith("tiers.rules.targets[0].handler: ") and why in message and "\n" not in message
    assert check_fails(tmp_path, doc, capsys) == message


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("handler_with_a_syntax_error", "def broken(:\n"),
        ("handler_that_raises_on_import", "raise RuntimeError('no database at import')\n"),
    ],
)
def test_a_handler_module_that_fails_to_import_is_one_line(
    name: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    doc = one_tier({"provider": "local", "handler": f"{name}:fn"})
    line = check_fails(tmp_path, doc, capsys)
    assert line.startswith("tiers.rules.targets[0].handler: importing it failed: ")
    assert ("SyntaxError" if "syntax" in name else "RuntimeError: no database at import") in line


@pytest.mark.parametrize(
    ("target", "path", "why"),
    [
        (
            {"provider": "openai", "model": "gpt-4o-mini", "handler": CLASSIFY},
            "tiers.rules.targets[0].handler",
            "only targets on a 'local' provider take a handler",
        ),
        ({"provider": "local"}, "tiers.rules.targets[0].handler", "is required for a target on a 'local' provider"),
        ({"provider": "local", "model": "table"}, "tiers.rules.targets[0].handler", "is required"),
        ("local::table", "tiers.rules.targets[0].handler", "is required"),
    ],
)
def test_handler_and_provider_type_must_agree(
    target: Any, path: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = one_tier(target)
    with pytest.raises(ConfigError) as caught:
        build(doc)
    assert str(caught.value).startswith(f"{path}: ") and why in str(caught.value)
    assert check_fails(tmp_path, doc, capsys) == str(caught.value)


def test_the_shipped_rules_yaml_checks_with_its_handler(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(RULES)]) == 0
    assert "ok" in capsys.readouterr().out


def test_a_local_target_is_named_by_its_handler() -> None:
    registry = build(one_tier({"provider": "local", "handler": CLASSIFY}))
    [target] = registry.tiers["rules"].targets
    assert (target.model, target.handler, target.key) == (CLASSIFY, CLASSIFY, f"local::{CLASSIFY}")


# --- the shipped table ---------------------------------------------------------------------------------


def classify(*messages: dict[str, Any]) -> str | None:
    return ticket_labels.classify({"messages": list(messages)})


@pytest.mark.parametrize(
    ("ticket", "label"),
    [
        ("I was charged twice, please refund", "billing"),
        ("Where is my RECEIPT for the subscription?", "billing"),
        ("The app crashes on start, it's broken", "bug"),
        ("Export doesn't work since Monday", "bug"),
        ("Please add dark mode, it would be nice", "feature"),
        ("Could you add support for SSO?", "feature"),
    ],
)
def test_classify_labels_a_ticket(ticket: str, label: str) -> None:
    assert classify({"role": "user", "content": ticket}) == label


@pytest.mark.parametrize(
    "ticket",
    [
        "the invoice PDF is blank",  # billing 1, bug 1
        "refund the crash, add a feature",  # one each
        "hello there",  # nothing matches
        "my charger was discharged",  # whole words only: not 'charge' / 'charged'
        "",
    ],
)
def test_classify_declines_ties_and_unknowns(ticket: str) -> None:
    assert classify({"role": "user", "content": ticket}) is None


def test_classify_reads_the_last_user_message_only() -> None:
    assert (
        classify(
            {"role": "system", "content": "Labels: bug, billing, feature. The refund policy is strict."},
            {"role": "user", "content": "The app crashes"},
            {"role": "assistant", "content": "Is it a refund question?"},
            {"role": "user", "content": "No, the invoice page"},
        )
        == "billing"
    )
    assert classify({"role": "assistant", "content": "refund"}) is None
    assert ticket_labels.classify({}) is None


def test_classify_joins_list_of_parts_content() -> None:
    parts = [
        {"type": "text", "text": "Screenshot attached:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "the export crashes with an error"},
    ]
    assert classify({"role": "user", "content": parts}) == "bug"
    assert classify({"role": "user", "content": None}) is None
