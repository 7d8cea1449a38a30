"""The router and the body rewrite are pure functions over the registry: tested without any I/O."""

from __future__ import annotations

import pytest

from proxy import rewrite
from proxy.errors import InvalidRequest, UnknownTaskType
from proxy.router import resolve
from proxy.rules import load
from tests.conftest import RULES

REGISTRY = load(RULES, environ={})


def test_header_picks_the_task_and_its_tier() -> None:
    route = resolve("title_generation", "gpt-4o", REGISTRY)
    assert (route.task.name, route.task_source, route.tier.name, route.reason) == (
        "title_generation",
        "header",
        "small",
        "task",
    )
    assert [(h.tier, h.target.key) for h in route.hops] == [
        ("small", "openai::gpt-5.4-nano"),
        ("small", "anthropic::claude-haiku-5-5"),
        ("mid", "openai::gpt-5.4-mini"),  # small's fallback_tier
        ("mid", "anthropic::claude-sonnet-5-5"),
    ]
    # each hop runs under its own tier's timeouts: small fails over after 30 s, mid waits 60 s
    assert [h.policy.first_byte_s for h in route.hops] == [30.0, 30.0, 60.0, 60.0]


def test_missing_header_is_the_default_task_never_a_downgrade() -> None:
    route = resolve(None, "gpt-4o-mini", REGISTRY)
    assert (route.task.name, route.task_source, route.tier.name) == ("agent", "default", "frontier")
    assert resolve("", "auto", REGISTRY).task_source == "default"


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(UnknownTaskType) as err:
        resolve("sumary", "auto", REGISTRY)
    assert err.value.status == 400 and "summary" in err.value.message


def test_selectors() -> None:
    assert resolve("summary", "tier:frontier", REGISTRY).tier.name == "frontier"
    allowed = resolve("agent", "claude-opus-5-5", REGISTRY)
    assert allowed.reason == "allowed_model" and [h.target.key for h in allowed.hops] == ["anthropic::claude-opus-5-5"]
    assert resolve("summary", "claude-opus-5-5", REGISTRY).tier.name == "mid"  # not allowed for summary
    with pytest.raises(InvalidRequest):
        resolve(None, "tier:huge", REGISTRY)


def test_rewrite_precedence_and_cap() -> None:
    task = REGISTRY.tasks["title_generation"]
    target = REGISTRY.tiers["small"].targets[0]
    body = {"model": "auto", "messages": [], "max_tokens": 5000, "top_p": 0.3}
    out = rewrite.for_target(body, task, target)
    assert out["model"] == "gpt-5.4-nano"
    assert out["max_tokens"] == 64  # the task's cap beats the client's 5000
    assert out["temperature"] == 0.2 and out["top_p"] == 0.3 and out["reasoning_effort"] == "none"
    assert body["model"] == "auto" and body["max_tokens"] == 5000  # the client's body is untouched
    assert rewrite.for_target({"model": "a", "messages": []}, task, target)["max_tokens"] == 32


def test_rewrite_injects_usage_for_streams_only() -> None:
    task, target = REGISTRY.tasks["summary"], REGISTRY.tiers["mid"].targets[0]
    streamed = rewrite.for_target({"model": "a", "messages": [], "stream": True}, task, target)
    assert streamed["stream_options"] == {"include_usage": True}
    assert "stream_options" not in rewrite.for_target({"model": "a", "messages": []}, task, target)
    assert rewrite.client_wants_usage({"stream_options": {"include_usage": True}})
    assert not rewrite.client_wants_usage({"stream": True})
