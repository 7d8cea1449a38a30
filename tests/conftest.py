"""Shared fixtures: a fake upstream and tiergate, each on a real uvicorn server on 127.0.0.1.

Clients are the official SDKs with their own retries off, so what a test sees is tiergate's behaviour.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from proxy import registry as registry_mod
from proxy.app import create_app
from proxy.fake_upstream import FakeOpenAI
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules.yaml"
UPSTREAM_KEY = "sk-upstream-secret-0000"
CLIENT_KEY = "sk-client-secret-1111"


def shipped_registry(upstream_url: str, **env: str) -> Registry:
    """The repo's rules.yaml, pointed at a fake upstream."""
    environ = {"OPENAI_BASE_URL": upstream_url + "/v1", "OPENAI_API_KEY": UPSTREAM_KEY, **env}
    return registry_mod.load(RULES, environ=environ)


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
async def upstream_url(fake: FakeOpenAI) -> AsyncIterator[str]:
    async with serve(fake) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(config=str(RULES), db=str(tmp_path / "ledger.db"), read_timeout=5.0)


ProxyFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def start_proxy(settings: Settings) -> ProxyFactory:
    """``async with start_proxy(registry, **settings_overrides) as url`` serves tiergate on loopback."""

    @asynccontextmanager
    async def start(registry: Registry, **overrides: Any) -> AsyncIterator[str]:
        merged = Settings(**{**settings.__dict__, **overrides})
        async with serve(create_app(merged, registry)) as url:
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
