"""The edges of the request path: routes that do not exist, a crash, usage an upstream gets wrong.

Each test drives real HTTP (the official SDK or httpx) through tiergate on loopback to a fake upstream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from types import MappingProxyType

import httpx
import openai
import orjson
import pytest

from proxy.app import create_app
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord, new_id
from proxy.pricing import Pricer
from proxy.registry import Target
from proxy.settings import Settings
from proxy.usage import Usage
from tests.conftest import CLIENT_KEY, RULES, ProxyFactory, sdk, shipped_registry
from tests.test_ledger import rows

USER = [{"role": "user", "content": "Title for: the cron moved to a queue"}]


async def test_405_keeps_the_allow_header(proxy_url: str) -> None:
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["x-request-id"].startswith("req_")


async def test_a_crash_is_a_generic_500_whose_request_id_is_its_ledger_rows(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = shipped_registry(upstream_url)
    # A bug's stand-in: params validation would refuse these, and the rewrite trips over them.
    task = dataclasses.replace(
        registry.tasks["title_generation"], params=MappingProxyType({"max_tokens": "x"}), max_tokens_cap=9
    )
    broken = dataclasses.replace(registry, tasks=MappingProxyType({**registry.tasks, "title_generation": task}))
    with caplog.at_level(logging.ERROR, logger="tiergate"):
        async with start_proxy(broken, db=str(tmp_path / "crash.db")) as url:
            client = sdk(url, {"X-Task-Type": "title_generation"})
            with pytest.raises(openai.InternalServerError) as err:
                await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
            await client.close()
    body = err.value.response.json()
    assert body == {
        "error": {
            "message": "tiergate hit an internal error; it has been logged.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    request_id = err.value.response.headers["x-request-id"]
    [row] = rows(tmp_path / "crash.db")
    assert (row["request_id"], row["status"], row["error_type"]) == (request_id, 500, "internal_error")
    assert request_id in caplog.text and "TypeError" in caplog.text  # the details went to the log


async def test_cached_tokens_above_prompt_tokens_never_price_below_zero(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        # a misbehaving gateway: cached tokens of the whole conversation, more than the prompt
        "usage": {"prompt_tokens": 100, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1000}},
    }
    fake.push(Behavior(body=orjson.dumps(body)))
    async with start_proxy(shipped_registry(upstream_url), db=str(tmp_path / "l.db")) as url:
        client = sdk(url, {"X-Task-Type": "summary"})
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    [row] = rows(tmp_path / "l.db")
    assert (row["prompt_tokens"], row["cached_tokens"], row["usage_source"]) == (100, 100, "clamped")
    assert row["cost_usd"] > 0 and row["baseline_cost_usd"] > 0


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (Usage(prompt_tokens=100, cached_tokens=1000), (100, 0, False)),
        (Usage(prompt_tokens=100, cached_tokens=60, cache_write_tokens=60), (60, 40, False)),
        (Usage(prompt_tokens=100, cached_tokens=40, cache_write_tokens=60), (40, 60, True)),
    ],
)
def test_usage_parts_never_exceed_the_whole(given: Usage, kept: tuple[int, int, bool]) -> None:
    cached, written, intact = kept
    assert (given.cached_tokens, given.cache_write_tokens, given.clamped) == (cached, written, not intact)


def test_both_pricing_paths_agree_on_clamped_usage() -> None:
    usage = Usage.from_openai({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1000}})
    assert usage is not None and usage.clamped
    library = Pricer({}, {"openai": "openai"}).cost(Target("openai", "gpt-4o", {}), usage)
    assert library is not None and library.usd >= 0
    # gpt-4o: $1.25 per 1M cached input tokens; all 100 prompt tokens are cached
    assert library.usd == pytest.approx(100 * 1.25 / 1e6)


async def test_unauthorized_without_the_client_key(start_proxy: ProxyFactory, upstream_url: str) -> None:
    async with start_proxy(shipped_registry(upstream_url), api_keys=(CLIENT_KEY, "sk-other-2222")) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            for auth in ({}, {"authorization": "Bearer sk-client-secret-111"}, {"api-key": "nope"}):
                response = await http.post("/v1/chat/completions", headers=auth, json={"model": "auto"})
                assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            ok = await http.get("/v1/models", headers={"api-key": "sk-other-2222"})
            assert ok.status_code == 200


async def test_a_teardown_cancelled_while_the_ledger_drains_still_closes_the_upstream_pool(
    upstream_url: str, tmp_path: Path
) -> None:
    # The ledger cannot write (its folder does not exist), so on shutdown close() waits for its row;
    # the teardown is cancelled meanwhile, as a forced exit does. The upstream pool must still close.
    settings = Settings(config=str(RULES), db=str(tmp_path / "missing" / "l.db"))
    app = create_app(settings, shipped_registry(upstream_url))
    leaving = asyncio.Event()
    gateways: list[Gateway] = []

    async def serve_then_stop() -> None:
        async with app.router.lifespan_context(app) as state:
            gateway: Gateway = state["gateway"]
            gateways.append(gateway)
            assert gateway.ledger is not None
            gateway.ledger.submit(RequestRecord(new_id(), time.time(), "t", "header", None, None, False, 200, 1.0))
            while gateway.ledger.health()["error"] is None:  # it tried, and could not open the file
                await asyncio.sleep(0.01)
            leaving.set()  # the teardown starts now and waits inside ledger.close()

    task = asyncio.create_task(serve_then_stop())
    await leaving.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [gateway] = gateways
    assert gateway.http.closed
