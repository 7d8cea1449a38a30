"""Shared fixtures: a fake upstream and tiergate, each on a real uvicorn server on 127.0.0.1.

Clients are the official SDKs with their own retries off, so what a test sees is tiergate's behaviour.

A module that shares one fake (and servers) across its tests names its fixtures after itself
(``spec_fake``, ``anthropic_proxy_url``, ...) instead of shadowing the ones here, and wraps each test
in `clean`: the fake starts with no script and no recorded requests, and a behaviour the test pushed
but no request consumed fails it. Time-driven behaviour (backoff, retry-after, breaker cooldowns) runs
on a `FakeClock` passed to ``start_proxy(..., clock=...)`` instead of on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import AsyncOpenAI

from proxy import rules
from proxy.app import create_app
from proxy.fakes.openai import FakeOpenAI
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.settings import Settings
from proxy.telemetry.config import TelemetryConfig

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules.yaml"
UPSTREAM_KEY = "sk-upstream-secret-0000"
CLIENT_KEY = "sk-client-secret-1111"


# A loopback port nothing listens on: connections are refused at once. Tests point every provider
# they do not serve here, so no test can ever reach a public endpoint.
CLOSED_URL = "http://127.0.0.1:1"


NO_RETRIES: dict[str, Any] = {"retries": 0}


def shipped_registry(upstream_url: str, policy: dict[str, Any] | None = NO_RETRIES, **env: str) -> Registry:
    """The repo's rules.yaml, pointed at a fake upstream, with ``policy`` as its only policy.

    ``policy`` replaces the file's global and per-tier policies. By default each target is tried once
    (fallback still applies), so a scripted upstream fault is what the client sees; the reliability
    tests set their own policies.
    """
    environ = {
        "OPENAI_BASE_URL": upstream_url + "/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_BASE_URL": CLOSED_URL,
        "ANTHROPIC_API_KEY": "sk-ant-unused",
        **env,
    }
    text = RULES.read_text()
    if policy is not None:
        doc = yaml.safe_load(text)
        doc["policy"] = policy
        for tier in doc["tiers"].values():
            tier.pop("policy", None)
        text = yaml.safe_dump(doc, sort_keys=False)
    return rules.loads(text, environ=environ, source=str(RULES))


class FakeClock:
    """Time for tiergate's ``clock``/``sleep`` seams: it moves only when a test or a ``sleep`` moves it.

    ``clock()`` is ``now``; ``advance(s)`` moves it; ``await sleep(s)`` records ``s`` in ``sleeps`` and
    advances instead of waiting, so a backoff or a retry-after is asserted as a number, not as elapsed time.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


@contextmanager
def clean(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """``fake`` reset for one test; fails the test if a behaviour it pushed was never consumed.

    A leftover behaviour means the test did not cause the requests it scripted for (and would answer
    the next test's request, were the fake shared).
    """
    fake.reset()
    yield fake
    try:
        assert_consumed(fake)
    finally:
        fake.reset()


def assert_consumed(fake: FakeOpenAI) -> None:
    """Fail the test if a behaviour pushed on ``fake`` was never consumed by a request."""
    left = fake.pending
    if left:
        pytest.fail(f"{len(left)} scripted behaviour(s) never consumed by a request: {list(left)}", pytrace=False)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with clean(FakeOpenAI()) as f:
        yield f


@pytest.fixture
async def upstream_url(fake: FakeOpenAI) -> AsyncIterator[str]:
    async with serve(fake) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(config=str(RULES), db=str(tmp_path / "ledger.db"))


ProxyFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def start_proxy(settings: Settings) -> ProxyFactory:
    """``async with start_proxy(registry, clock=None, wall=None, telemetry=None, **settings_overrides) as url``
    serves tiergate on loopback.

    With a `FakeClock` as ``clock``, tiergate's breakers, deadlines and backoff waits run on it instead of on
    real time; as ``wall``, the cache's epoch time does. ``telemetry`` (a ``TelemetryConfig``) replaces what
    the OTEL_* variables say.
    """

    @asynccontextmanager
    async def start(
        registry: Registry,
        *,
        clock: FakeClock | None = None,
        wall: FakeClock | None = None,
        telemetry: TelemetryConfig | None = None,
        **overrides: Any,
    ) -> AsyncIterator[str]:
        merged = Settings(**{**settings.__dict__, **overrides})
        seams: dict[str, Any] = {} if clock is None else {"clock": clock, "sleep": clock.sleep}
        if wall is not None:
            seams["wall_clock"] = wall  # the cache's epoch time: answers' age, TTLs, retry backoff
        if telemetry is not None:
            seams["telemetry"] = telemetry
        app = create_app(merged, registry, **seams)
        async with serve(app) as url:
            yield url

    return start


@pytest.fixture
async def proxy_url(start_proxy: ProxyFactory, upstream_url: str) -> AsyncIterator[str]:
    async with start_proxy(shipped_registry(upstream_url)) as url:
        yield url


def sdk(url: str, headers: Mapping[str, str] | None = None, **kwargs: Any) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, default_headers=dict(headers or {}), **kwargs
    )


@pytest.fixture
async def client(proxy_url: str) -> AsyncIterator[AsyncOpenAI]:
    c = sdk(proxy_url)
    yield c
    await c.close()
