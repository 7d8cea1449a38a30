"""The demo's last act: a generated workload (``proxy.demo.generator``) through tiergate, then its bill.

The calls go through the official ``openai`` SDK to tiergate on loopback, in front of fake OpenAI and
Anthropic upstreams that answer each call with the reply size it asked for; a ledger of their own
holds exactly these calls. Once tiergate has stopped (its ledger writer drained), the audit of that
ledger is printed by tier and by task, and one line of what the prices imply: the tiered cost against
the baseline (every call priced on the frontier model). Every figure is read from the ledger.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TextIO

from proxy import rules
from proxy.app import create_app
from proxy.demo import generator
from proxy.demo.workload import outage, upstream_environ
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI
from proxy.fakes.oracle import chain
from proxy.ledger.audit import Summary, summarize
from proxy.ledger.report import render
from proxy.loopback import serve
from proxy.settings import Settings

DEFAULT_CALLS = 600  # about 3 s on a laptop: every call crosses the SDK, tiergate and a fake in one process
CONCURRENCY = 32  # calls in flight at once, as an app's workers would send them


async def run_bill(config: str, calls: int, db: str, out: TextIO, seed: int = 0) -> int:
    """Send ``calls`` generated calls through tiergate (ledger at ``db``), print the bill; the failed calls' count."""
    from openai import APIError, AsyncOpenAI

    workload = generator.calls(calls, seed)
    fake = FakeOpenAI(choose=chain(outage, generator.sized))
    async with serve(fake) as openai_url, serve(FakeAnthropic()) as anthropic_url:
        registry = rules.load(config, environ=upstream_environ(openai_url, anthropic_url))
        settings = Settings(config=config, db=db, reload=False)
        started = time.perf_counter()
        async with serve(create_app(settings, registry)) as proxy_url:
            client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
            gate = asyncio.Semaphore(CONCURRENCY)

            async def send(call: generator.Generated) -> bool:
                async with gate:
                    try:
                        await _send(client, call)
                    except APIError:
                        return False
                    return True

            sent = await asyncio.gather(*(send(c) for c in workload))
            await client.close()
        seconds = time.perf_counter() - started
    failed = sent.count(False)
    print(f"\n$ tiergate demo --calls {calls}   # generated: proxy/demo/generator.py, seed {seed}", file=out)
    print(f"{calls:,} calls in {seconds:.1f} s, {failed} failed; the audit of their ledger:\n", file=out)
    by_tier = summarize(db, "tier")
    print(f"$ tiergate audit --by tier\n{render(by_tier, 'table')}", file=out)
    print(f"$ tiergate audit --by task\n{render(summarize(db, 'task'), 'table')}", end="", file=out)
    print(f"\n{headline(by_tier)}", file=out)
    return failed


def headline(s: Summary) -> str:
    """What the prices imply, from the audit's TOTAL: tiered cost against the baseline, and the saving."""
    t = s.total
    if t.cost_usd is None or t.baseline_cost_usd is None or t.savings_share is None:
        return "No priced calls: no saving to state."
    return (
        f"Tiered: ${t.cost_usd:,.4f} against ${t.baseline_cost_usd:,.4f} with every call on the frontier model: "
        f"{t.savings_share * 100:.1f}% saved (${t.savings_usd or 0.0:,.4f})."
    )


async def _send(client: Any, call: generator.Generated) -> None:
    headers = {"X-Task-Type": call.task}
    extra: dict[str, Any] = {} if call.max_tokens is None else {"max_tokens": call.max_tokens}
    if call.stream:
        stream = await client.chat.completions.create(
            model="auto",
            messages=call.messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
            **extra,
        )
        async for _ in stream:
            pass
    else:
        await client.chat.completions.create(model="auto", messages=call.messages, extra_headers=headers, **extra)
