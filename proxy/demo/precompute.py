"""The demo's act on generation off the request path: a dashboard narrative precomputed when its data
lands, read at once, made stale by new data (the last good answer is served while one regeneration
runs), regenerated; then the exact cache answering a repeated summary.

The fake model takes ``SLOW_S`` to write each of these answers, as a real one would, so the difference
between generating in the request and serving a stored answer shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TextIO

import httpx

from proxy.fakes.openai import Behavior
from proxy.registry import CachePolicy, Registry

SLOW = "[slow]"  # a prompt starting with this meets a model that takes SLOW_S to answer
SLOW_S = 0.6
KEY = "dashboard:42:narrative"
STORY = f"{SLOW} Write this week's story of account 42: signups up 12%, two incidents, one churn risk"
SUMMARY = f"{SLOW} Summarise the release notes: faster search, dark mode, a fix for duplicate invoices"
CACHED_TASK, CACHE_TTL_S = "summary", 3600
# The ledger rows this act leaves: two background generations, three page loads, two summaries.
LEDGER_ROWS = 7


def slow_model(body: dict[str, Any]) -> Behavior | None:
    """The fake's behaviour for this act's prompts: answered after ``SLOW_S``."""
    last = body["messages"][-1].get("content") if body.get("messages") else None
    return Behavior(delay_headers=SLOW_S) if isinstance(last, str) and last.startswith(SLOW) else None


def with_exact_cache(registry: Registry) -> Registry:
    """``registry`` with ``cache: {ttl_s: 3600}`` on the summary task, as one line of rules.yaml would add."""
    task = registry.tasks[CACHED_TASK]
    tasks = {**registry.tasks, CACHED_TASK: replace(task, cache=CachePolicy(ttl_s=CACHE_TTL_S))}
    return replace(registry, tasks=MappingProxyType(tasks))


async def tour(proxy_url: str, out: TextIO) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
    http = httpx.AsyncClient(base_url=proxy_url, headers={"authorization": "Bearer sk-demo-client"}, timeout=30)
    board = {"X-Task-Type": "narrative", "X-Tiergate-Key": KEY}
    story = [{"role": "user", "content": STORY}]
    print(f"\nGeneration off the request path (the fake model takes {SLOW_S * 1000:.0f} ms per answer here):", file=out)

    def line(what: str, state: str, ms: float, note: str = "") -> None:
        print(f"  {what:<52} {state:<8} {ms:>7.1f} ms  {note}".rstrip(), file=out)

    async def page(version: str) -> tuple[str, float]:
        started = time.perf_counter()
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=story,  # type: ignore[arg-type]
            extra_headers={**board, "X-Tiergate-Version": version},
        )
        return raw.headers["x-tiergate-cache"], (time.perf_counter() - started) * 1000

    async def ready(version: str) -> float:
        started = time.perf_counter()
        for _ in range(1000):  # 20 s at most
            status = (await http.get(f"/v1/precompute/{KEY}")).json()
            if status["version"] == version and status["status"] in ("ready", "failed"):
                break
            await asyncio.sleep(0.02)
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    posted = await http.post(
        "/v1/precompute", json={"model": "auto", "messages": story}, headers={**board, "X-Tiergate-Version": "v1"}
    )
    line(f"POST /v1/precompute  {KEY} v1", f"{posted.status_code}", (time.perf_counter() - started) * 1000,
         posted.json()["status"])  # fmt: skip
    line("  ...generated in the background", "ready", await ready("v1"), f"GET /v1/precompute/{KEY}")
    state, ms = await page("v1")
    line("page load, data v1", state, ms, "no model call")
    state, ms = await page("v2")
    line("new data lands; page load, data v2", state, ms, "v1's answer at once; one regeneration started")
    line("  ...regenerated for v2", "ready", await ready("v2"))
    state, ms = await page("v2")
    line("page load, data v2", state, ms)

    for what in (f"{CACHED_TASK} (cache: {{ttl_s: {CACHE_TTL_S}}}), first asked", "the same request again"):
        started = time.perf_counter()
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": SUMMARY}],
            extra_headers={"X-Task-Type": CACHED_TASK},
        )
        line(what, raw.headers["x-tiergate-cache"], (time.perf_counter() - started) * 1000)
    await http.aclose()
    await client.close()
