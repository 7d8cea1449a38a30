"""The demo's workload: the calls an app makes, sent through the official SDK, and the table of what ran where."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from proxy.fakes import traffic
from proxy.fakes.openai import Behavior

# A prompt with this marker meets a fake OpenAI outage (503), so the demo shows a failover.
OUTAGE = "[during an OpenAI outage]"


@dataclass(frozen=True)
class Call:
    """One call of the workload: its X-Task-Type (None: untagged), its messages, and what else it sends;
    ``api`` "responses" sends it as a Responses API call (``client.responses.create``), "embeddings" as an
    embeddings call (``client.embeddings.create``: its prompt is the input)."""

    task: str | None
    prompt: str
    stream: bool = False
    system: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    api: str = "chat"


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
    # the Responses API, routed the same way: natively to OpenAI, translated for Anthropic in an outage
    Call("extraction", "Extract name and city as JSON: Grace Hopper lives in Arlington", api="responses"),
    Call("summary", f"{OUTAGE} Summarise: the migration finished after two retries", api="responses"),
    # an embedding of a document for search: a `kind: embedding` tier, priced per input token
    Call("retrieval", "tiergate routes each LLM call to the cheapest tier its task allows", api="embeddings"),
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    task: str
    source: str
    tier: str
    model: str
    stream: bool
    api: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


def upstream_environ(openai_url: str, anthropic_url: str) -> dict[str, str]:
    """The environment rules.yaml is read with so its providers point at the demo's fake upstreams."""
    return {
        **os.environ,
        "OPENAI_BASE_URL": openai_url + "/v1",
        "OPENAI_API_KEY": "sk-demo-upstream",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "ANTHROPIC_API_KEY": "sk-ant-demo-upstream",
    }


def outage(body: dict[str, Any]) -> Behavior | None:
    last = body["messages"][-1].get("content") if body.get("messages") else body.get("input")  # chat, Responses
    return Behavior(status=503) if isinstance(last, str) and last.startswith(OUTAGE) else None


async def call(client: object, call: Call) -> Row:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

    assert isinstance(client, AsyncOpenAI)
    headers = {"X-Task-Type": call.task} if call.task else {}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": call.prompt}]
    if call.system is not None:
        messages.insert(0, {"role": "system", "content": call.system})
    extra: dict[str, Any] = dict(call.extra)
    started = time.perf_counter()
    if call.api == "embeddings":
        embedded = await client.embeddings.with_raw_response.create(
            model="auto", input=call.prompt, extra_headers=headers
        )
        return _row(call, embedded.headers, (embedded.parse().usage.prompt_tokens, 0), started)
    if call.api == "responses":
        answer = await client.responses.with_raw_response.create(
            model="auto", input=call.prompt, instructions=call.system, extra_headers=headers, **extra
        )
        spent = answer.parse().usage
        tokens = (spent.input_tokens, spent.output_tokens) if spent else (0, 0)
        return _row(call, answer.headers, tokens, started)
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
    tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return _row(call, raw_headers, tokens, started)


def _row(call: Call, headers: Mapping[str, str], tokens: tuple[int, int], started: float) -> Row:
    return Row(
        task=headers["x-tiergate-task"],
        source=headers["x-tiergate-task-source"],
        tier=headers["x-tiergate-tier"],
        model=f"{headers['x-tiergate-provider']}::{headers['x-tiergate-model']}",
        stream=call.stream,
        api=call.api,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        attempts=int(headers["x-tiergate-attempts"]),
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )


def print_rows(rows: list[Row], out: TextIO) -> None:
    width = max(len("model"), *(len(r.model) for r in rows))
    via = max(len("via"), *(len(r.source) for r in rows))
    header = (
        f"{'task':<17} {'via':<{via}} {'tier':<9} {'model':<{width}} {'stream':<6} {'tries':>5} "
        f"{'in':>5} {'out':>5} {'ms':>7}  api"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(
            f"{r.task:<17} {r.source:<{via}} {r.tier:<9} {r.model:<{width}} {'yes' if r.stream else 'no':<6} "
            f"{r.attempts:>5} {r.prompt_tokens:>5} {r.completion_tokens:>5} {r.latency_ms:>7.1f}  {r.api}",
            file=out,
        )
    print(f"\n{len(rows)} calls, {sum(r.prompt_tokens + r.completion_tokens for r in rows)} tokens", file=out)
