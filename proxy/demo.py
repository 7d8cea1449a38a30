"""``tiergate demo``: the whole product on loopback, with no API keys and no network.

It starts embedded fake upstreams (OpenAI-compatible and Anthropic) and tiergate itself on 127.0.0.1.
First a simulated week of an app's header-tagged traffic (``proxy.fakes.traffic``) runs through it, and
the classifier is trained on that ledger (``tiergate classifier train``). Then, with the classifier
loaded, a small workload goes through the official ``openai`` SDK exactly as an app would send it
(tagged calls for several task types, untagged calls that a rule or the classifier places, one that
nothing recognises, one stream, a ticket the local lookup table labels, and one call made during a
simulated OpenAI outage, which falls over to Anthropic); it prints what ran where, the evals, then the
workload audit of the demo's own ledger (``tiergate audit --by task``), read once tiergate has shut
down and its ledger writer drained, and the classifier's shadow agreement (``audit --classifier``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from proxy import rules
from proxy.app import create_app
from proxy.classify import agreement
from proxy.classify import report as classify_report
from proxy.classify.features import seed_of
from proxy.classify.training import train_from_ledger
from proxy.evals import candidates, golden
from proxy.evals.recommend import recommend
from proxy.evals.recommend import render as render_recommendations
from proxy.evals.report import headline
from proxy.evals.runner import evaluate
from proxy.fakes import traffic
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.fakes.oracle import Oracle, chain
from proxy.ledger.report import report as audit_report
from proxy.loopback import serve
from proxy.registry import ClassifierSettings, Registry
from proxy.settings import Settings

# A prompt with this marker meets a fake OpenAI outage (503), so the demo shows a failover.
OUTAGE = "[during an OpenAI outage]"


@dataclass(frozen=True)
class Call:
    """One call of the workload: its X-Task-Type (None: untagged), its messages, and what else it sends."""

    task: str | None
    prompt: str
    stream: bool = False
    system: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


WORKLOAD: tuple[Call, ...] = (
    Call("title_generation", "Suggest a title for: we moved our billing cron to a queue and it fixed retries"),
    Call("classification", "Label this ticket as bug, billing or feature: the invoice PDF is blank"),
    Call("classification", "I was charged twice this month, please refund the duplicate payment"),
    Call("extraction", "Extract name and city as JSON: Ada Lovelace lives in London"),
    Call("relevance", "Is 'tiered LLM routing' relevant to the query 'reduce OpenAI bill'? Answer yes or no"),
    Call("summary", "Summarise the incident: the cache expired, traffic hit the database, p99 rose to 4 s"),
    Call("ad_copy", "Write a one-line ad for a proxy that cuts LLM costs without code changes"),
    Call("narrative", "Write the opening paragraph of a story about a lighthouse keeper who collects radio signals",
         stream=True),
    Call("agent", "Plan the steps to migrate a service from cron jobs to a durable queue, with rollback"),
    Call("summary", f"{OUTAGE} Summarise: the deploy paused, the queue drained, nothing was lost"),
    # untagged: a rule of rules.yaml places the first; the classifier, trained on the app's tagged
    # traffic, the next three (their call sites' templates, with words the training never saw); nothing
    # recognises the last, which runs as the default task
    Call(None, "Summarise: the nightly export finished late but complete"),
    Call(None, "Notes from today's sync:\nship the mobile upload fix first, then the search index\nList the "
         "decisions and owners.", system="Condense the meeting notes into key points and decisions."),
    Call(None, "Post announcing: offline mode for the field app, syncing when the signal returns",
         system="Copywriter for social media posts; upbeat, no hashtags."),
    Call(None, "Does this passage answer the question? Reply yes or no.\nQuestion: can I export to CSV?\n"
         "Passage: reports can be downloaded as spreadsheets", system=traffic.GENERIC, extra={"max_tokens": 8}),
    Call(None, "An untagged call: which task does it run as?"),
)  # fmt: skip

# A simulated week of the app's header-tagged traffic: what the classifier learns from.
APP_TRAFFIC_CALLS = 12 * len(traffic.SITES)  # 12 calls per call site: 24 or more per task
MIN_CONFIDENCE = 0.7


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
            model = await _learn(registry, settings, Path(tmp), out)
            classified = replace(registry, classifier=ClassifierSettings(model, min_confidence=MIN_CONFIDENCE))
            async with serve(create_app(settings, classified)) as proxy_url:
                print(
                    f"\ntiergate on {proxy_url}  ->  fake OpenAI on {upstream_url}, fake Anthropic on {anthropic_url}\n",
                    file=out,
                )
                client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
                rows = [await _call(client, call) for call in WORKLOAD]
                await client.close()
            _print(rows, out)
            if oracle is not None:
                await _evals(registry, evals_dir, settings.db, out)
            # The proxy has stopped: its lifespan closed the ledger writer, so every row is on disk.
            print(f"\n$ tiergate audit --by task\n{audit_report(settings.db, by='task')}", end="", file=out)
            if oracle is not None:
                found = recommend(settings.db, registry)
                print(f"\n$ tiergate audit --recommend\n{render_recommendations(found, 'table')}", end="", file=out)
            shadow = classify_report.agreement(agreement.summarize(agreement.load(settings.db)), "table")
            print(f"\n$ tiergate audit --classifier\n{shadow}", end="", file=out)
    return 0


async def _learn(registry: Registry, settings: Settings, tmp: Path, out: TextIO) -> str:
    """Run the app's simulated tagged traffic through tiergate into its own ledger, train the classifier on
    it as ``tiergate classifier train`` does, print the training report; the model file's path."""
    from openai import AsyncOpenAI

    week = replace(settings, db=str(tmp / "app-week.db"))
    async with serve(create_app(week, registry)) as proxy_url:
        client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
        for task, body in traffic.calls(APP_TRAFFIC_CALLS, seed=1):
            await client.chat.completions.create(**body, extra_headers={"X-Task-Type": task})
        await client.close()
    model = str(tmp / "classifier.json")
    trained = train_from_ledger(week.db, registry, seed_of(settings.feature_key), model)
    print(
        f"A simulated week of an app's tagged traffic: {APP_TRAFFIC_CALLS} calls from "
        f"{len(traffic.SITES)} call sites, through tiergate\n"
        f"$ tiergate classifier train --db app-week.db\n{classify_report.training(trained, 'table')}",
        end="",
        file=out,
    )
    return model


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


async def _call(client: object, call: Call) -> Row:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

    assert isinstance(client, AsyncOpenAI)
    headers = {"X-Task-Type": call.task} if call.task else {}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": call.prompt}]
    if call.system is not None:
        messages.insert(0, {"role": "system", "content": call.system})
    extra: dict[str, Any] = dict(call.extra)
    started = time.perf_counter()
    if call.stream:
        async with client.chat.completions.with_streaming_response.create(
            model="auto",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
            **extra,
        ) as response:
            usage = None
            async for chunk in await response.parse():
                if chunk.usage is not None:
                    usage = chunk.usage
            raw_headers = response.headers
    else:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, extra_headers=headers, **extra
        )
        usage = raw.parse().usage
        raw_headers = raw.headers
    latency = (time.perf_counter() - started) * 1000.0
    return Row(
        task=raw_headers["x-tiergate-task"],
        source=raw_headers["x-tiergate-task-source"],
        tier=raw_headers["x-tiergate-tier"],
        model=f"{raw_headers['x-tiergate-provider']}::{raw_headers['x-tiergate-model']}",
        stream=call.stream,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        attempts=int(raw_headers["x-tiergate-attempts"]),
        latency_ms=latency,
    )


def _print(rows: list[Row], out: TextIO) -> None:
    width = max(len("model"), *(len(r.model) for r in rows))
    via = max(len("via"), *(len(r.source) for r in rows))
    header = (
        f"{'task':<17} {'via':<{via}} {'tier':<9} {'model':<{width}} {'stream':<6} {'tries':>5} "
        f"{'in':>5} {'out':>5} {'ms':>7}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(
            f"{r.task:<17} {r.source:<{via}} {r.tier:<9} {r.model:<{width}} {'yes' if r.stream else 'no':<6} "
            f"{r.attempts:>5} {r.prompt_tokens:>5} {r.completion_tokens:>5} {r.latency_ms:>7.1f}",
            file=out,
        )
    print(f"\n{len(rows)} calls, {sum(r.prompt_tokens + r.completion_tokens for r in rows)} tokens", file=out)
