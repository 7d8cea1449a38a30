"""``tiergate demo``: the whole product on loopback, with no API keys and no network.

It starts embedded fake upstreams (OpenAI-compatible and Anthropic) and tiergate itself on 127.0.0.1,
drives a small workload through the official ``openai`` SDK exactly as an app would (tagged calls for
several task types, one untagged call, one stream, a ticket the local lookup table labels, and one call
made during a simulated OpenAI outage, which falls over to Anthropic), prints what ran where, then the
workload audit of the demo's own ledger (``tiergate audit --by task``), read once tiergate has shut
down and its ledger writer drained.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from proxy import rules
from proxy.app import create_app
from proxy.evals import candidates, golden
from proxy.evals.recommend import recommend
from proxy.evals.recommend import render as render_recommendations
from proxy.evals.report import headline
from proxy.evals.runner import evaluate
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.fakes.oracle import Oracle, chain
from proxy.ledger.report import report as audit_report
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.settings import Settings

# A prompt with this marker meets a fake OpenAI outage (503), so the demo shows a failover.
OUTAGE = "[during an OpenAI outage]"

# (task header or None, prompt, stream)
WORKLOAD: tuple[tuple[str | None, str, bool], ...] = (
    ("title_generation", "Suggest a title for: we moved our billing cron to a queue and it fixed retries", False),
    ("classification", "Label this ticket as bug, billing or feature: the invoice PDF is blank", False),
    ("classification", "I was charged twice this month, please refund the duplicate payment", False),
    ("extraction", "Extract name and city as JSON: Ada Lovelace lives in London", False),
    ("relevance", "Is 'tiered LLM routing' relevant to the query 'reduce OpenAI bill'? Answer yes or no", False),
    ("summary", "Summarise the incident: the cache expired, traffic hit the database, p99 rose to 4 s", False),
    ("ad_copy", "Write a one-line ad for a proxy that cuts LLM costs without code changes", False),
    ("narrative", "Write the opening paragraph of a story about a lighthouse keeper who collects radio signals", True),
    ("agent", "Plan the steps to migrate a service from cron jobs to a durable queue, with rollback", False),
    ("summary", f"{OUTAGE} Summarise: the deploy paused, the queue drained, nothing was lost", False),
    (None, "An untagged call: which task does it run as?", False),
)


@dataclass(frozen=True)
class Row:
    task: str
    source: str
    tier: str
    model: str
    stream: bool
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


async def run_demo(config: str, out: TextIO, evals: str = "evals") -> int:
    """Run the sample workload, print one line per call, then the audit; 0 when every call succeeded."""
    from openai import AsyncOpenAI  # the demo's client is the official SDK, as in a real app

    evals_dir = Path(evals)
    oracle = Oracle.load(evals_dir, rules.load(config, environ={})) if evals_dir.is_dir() else None
    fake = FakeOpenAI(choose=chain(_outage, oracle.choose if oracle is not None else None))
    async with serve(fake) as upstream_url, serve(FakeAnthropic()) as anthropic_url:
        environ = {
            **os.environ,
            "OPENAI_BASE_URL": upstream_url + "/v1",
            "OPENAI_API_KEY": "sk-demo-upstream",
            "ANTHROPIC_BASE_URL": anthropic_url,
            "ANTHROPIC_API_KEY": "sk-ant-demo-upstream",
        }
        registry = rules.load(config, environ=environ)
        with tempfile.TemporaryDirectory(prefix="tiergate-demo-") as tmp:
            settings = Settings(config=config, db=str(Path(tmp) / "demo.db"))
            async with serve(create_app(settings, registry)) as proxy_url:
                print(
                    f"tiergate on {proxy_url}  ->  fake OpenAI on {upstream_url}, fake Anthropic on {anthropic_url}\n",
                    file=out,
                )
                client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
                rows = [await _call(client, task, prompt, stream) for task, prompt, stream in WORKLOAD]
                await client.close()
            _print(rows, out)
            if oracle is not None:
                await _evals(registry, evals_dir, settings.db, out)
            # The proxy has stopped: its lifespan closed the ledger writer, so every row is on disk.
            print(f"\n$ tiergate audit --by task\n{audit_report(settings.db, by='task')}", end="", file=out)
            if oracle is not None:
                found = recommend(settings.db, registry)
                print(f"\n$ tiergate audit --recommend\n{render_recommendations(found, 'table')}", end="", file=out)
    return 0


# (task, candidate tier): one re-tiering its golden set supports, one it does not
EVALS = (("summary", "small"), ("narrative", "small"))


async def _evals(registry: Registry, evals_dir: Path, db: str, out: TextIO) -> None:
    """Each of ``EVALS`` as ``tiergate eval TASK --tier T`` runs it: the golden set, side by side."""
    print("\nThe fake models are a simulation of different skill (proxy/fakes/oracle.py), not a measurement:", file=out)
    for task, tier in EVALS:
        cases = golden.load(evals_dir / task)
        candidate = candidates.with_tier(registry, task, tier)
        result = await evaluate(cases, candidate, current_registry=registry, db=db)
        print(f"$ tiergate eval {task} --tier {tier}\n{headline(result)}", file=out)


def _outage(body: dict[str, Any]) -> Behavior | None:
    last = body["messages"][-1].get("content") if body.get("messages") else None
    return Behavior(status=503) if isinstance(last, str) and last.startswith(OUTAGE) else None


async def _call(client: object, task: str | None, prompt: str, stream: bool) -> Row:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

    assert isinstance(client, AsyncOpenAI)
    headers = {"X-Task-Type": task} if task else {}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    started = time.perf_counter()
    if stream:
        async with client.chat.completions.with_streaming_response.create(
            model="auto",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        ) as response:
            usage = None
            async for chunk in await response.parse():
                if chunk.usage is not None:
                    usage = chunk.usage
            raw_headers = response.headers
    else:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, extra_headers=headers
        )
        usage = raw.parse().usage
        raw_headers = raw.headers
    latency = (time.perf_counter() - started) * 1000.0
    return Row(
        task=raw_headers["x-tiergate-task"],
        source="header" if task else "default",
        tier=raw_headers["x-tiergate-tier"],
        model=f"{raw_headers['x-tiergate-provider']}::{raw_headers['x-tiergate-model']}",
        stream=stream,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        attempts=int(raw_headers["x-tiergate-attempts"]),
        latency_ms=latency,
    )


def _print(rows: list[Row], out: TextIO) -> None:
    width = max(len("model"), *(len(r.model) for r in rows))
    header = (
        f"{'task':<17} {'via':<7} {'tier':<9} {'model':<{width}} {'stream':<6} {'tries':>5} "
        f"{'in':>5} {'out':>5} {'ms':>7}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(
            f"{r.task:<17} {r.source:<7} {r.tier:<9} {r.model:<{width}} {'yes' if r.stream else 'no':<6} "
            f"{r.attempts:>5} {r.prompt_tokens:>5} {r.completion_tokens:>5} {r.latency_ms:>7.1f}",
            file=out,
        )
    print(f"\n{len(rows)} calls, {sum(r.prompt_tokens + r.completion_tokens for r in rows)} tokens", file=out)
