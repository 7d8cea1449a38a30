"""The dispatcher and its breakers in isolation: a scripted provider of ours, a clock we advance.

What dispatch reports (``Outcome``: attempts, the hop that served or last failed, ``fallback``) is its
own account; these tests read it directly. End-to-end behaviour over HTTP is in test_reliability.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from types import MappingProxyType
from typing import Any

import pytest

from proxy.breaker import Breakers
from proxy.dispatch import Dispatcher
from proxy.errors import UpstreamStatus, UpstreamUnreachable
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.registry import ProviderConfig, Registry
from proxy.router import Router
from proxy.rules import build


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Scripted(Provider):
    """Answers each call with the next scripted item: a Completion, or an exception to raise."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.script: deque[Completion | Exception] = deque()
        self.calls: list[str] = []

    async def complete(self, call: Call) -> Completion:
        self.calls.append(call.target.model)
        item = self.script.popleft() if self.script else Completion(body={"choices": []}, usage=None)
        if isinstance(item, Exception):
            raise item
        return item

    async def stream(self, call: Call) -> ChunkStream:
        raise NotImplementedError


def _registry(**policy: Any) -> Registry:
    return build(
        {
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
            "policy": {"retries": 0, "breaker": {"failures": 1, "cooldown_s": 30}, **policy},
            "tiers": {"small": {"targets": ["p::primary", "p::secondary"]}},
            "tasks": {"t": "small"},
        }
    )


def _dispatcher(registry: Registry, clock: Clock) -> tuple[Dispatcher, Scripted, Breakers]:
    provider = Scripted(registry.providers["p"])
    breakers = Breakers(clock)
    return Dispatcher({"p": provider}, breakers, sleep=clock.sleep, clock=clock), provider, breakers


def _503() -> UpstreamStatus:
    return UpstreamStatus(503, {"message": "overloaded"})


def _400() -> UpstreamStatus:
    return UpstreamStatus(400, {"message": "bad request"})


BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


async def test_fallback_has_one_meaning_served_or_last_failed_beyond_the_first_target() -> None:
    registry, clock = _registry(), Clock()
    dispatcher, provider, _ = _dispatcher(registry, clock)
    route = Router(registry).resolve("t", "auto")

    provider.script.extend([_503(), Completion(body={}, usage=None)])
    served = await dispatcher.complete(route, BODY, {})  # opens primary's breaker, secondary serves
    assert served.error is None and served.fallback and served.index == 1

    # primary is skipped (open); secondary is the only target tried, and fails: still a fallback,
    # like the success above (the old "distinct targets tried > 1" said no here).
    provider.script.append(_400())
    failed = await dispatcher.complete(route, BODY, {})
    assert [a.target.model for a in failed.attempts] == ["secondary"]
    assert isinstance(failed.error, UpstreamStatus) and failed.error.status == 400
    assert failed.fallback
    assert failed.error.headers["x-tiergate-fallback"] == "true"


async def test_a_single_target_failing_every_try_is_no_fallback() -> None:
    registry = build(
        {
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
            "policy": {"retries": 2, "backoff": {"initial_s": 0.1, "jitter": 0}},
            "tiers": {"small": {"targets": ["p::only"]}},
            "tasks": {"t": "small"},
        }
    )
    clock = Clock()
    dispatcher, provider, _ = _dispatcher(registry, clock)
    provider.script.extend([UpstreamUnreachable("down")] * 3)
    outcome = await dispatcher.complete(Router(registry).resolve("t", "auto"), BODY, {})
    assert [a.status for a in outcome.attempts] == [None, None, None]
    assert not outcome.fallback and outcome.error is not None
    assert clock.now == pytest.approx(1000.0 + 0.1 + 0.2)  # the backoffs were slept through the seam


async def test_a_rewrite_that_raises_gives_the_half_open_probe_back() -> None:
    registry, clock = _registry(), Clock()
    dispatcher, provider, breakers = _dispatcher(registry, clock)
    router = Router(registry)
    provider.script.extend([_503(), Completion(body={}, usage=None)])
    await dispatcher.complete(router.resolve("t", "auto"), BODY, {})  # primary opens
    clock.now += 31  # primary is half-open

    # A task whose params make the rewrite raise (a bug's stand-in: validation would refuse them).
    task = dataclasses.replace(registry.tasks["t"], params=MappingProxyType({"max_tokens": "x"}), max_tokens_cap=9)
    broken = dataclasses.replace(registry, tasks=MappingProxyType({"t": task}))
    with pytest.raises(TypeError):
        await dispatcher.complete(Router(broken).resolve("t", "auto"), BODY, {})

    # The probe the broken request claimed is free again: the next request probes primary.
    permit = breakers.acquire("p::primary")
    assert permit is not None and permit.probe


async def test_a_try_that_never_held_the_probe_cannot_release_it() -> None:
    clock = Clock()
    breakers = Breakers(clock)
    early = breakers.acquire("p::m")  # in flight while the target was still closed
    opener = breakers.acquire("p::m")
    assert early is not None and opener is not None
    breakers.failed(opener, threshold=1, cooldown=30)
    clock.now += 31
    probe = breakers.acquire("p::m")
    assert probe is not None and probe.probe
    assert breakers.acquire("p::m") is None  # one probe at a time

    breakers.release(early)  # the early request ends without a verdict (a client error, say)
    assert breakers.acquire("p::m") is None  # ... and that does not free the probe for a second one
    breakers.release(breakers.force("p::m"))
    assert breakers.acquire("p::m") is None

    breakers.succeeded(probe)
    breakers.succeeded(probe)  # settling twice is a no-op
    assert breakers.acquire("p::m") is not None  # closed


async def test_a_probe_that_fails_reopens_and_settling_it_again_changes_nothing() -> None:
    clock = Clock()
    breakers = Breakers(clock)
    first = breakers.acquire("k")
    assert first is not None
    breakers.failed(first, threshold=1, cooldown=10)
    clock.now += 11
    probe = breakers.acquire("k")
    assert probe is not None and probe.probe
    breakers.failed(probe, threshold=5, cooldown=10)  # a failed probe reopens at once, whatever the threshold
    assert breakers.acquire("k") is None and breakers.reopens_in("k") == pytest.approx(10)
    breakers.release(probe)
    clock.now += 11
    again = breakers.acquire("k")
    assert again is not None and again.probe
