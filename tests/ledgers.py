"""Ledgers for the audit's tests, written through the ledger's own write path.

``write`` inserts rows as the writer settles them (``store.Store.insert``), so a test can fix every
column by hand; ``generated`` builds random ``RequestRecord``s, settles them with ``records.finalize``
(pricing, token estimates) and inserts them the same way: what ``tiergate serve`` would have written
for that traffic. Neither writes SQL, so both keep working when the physical schema changes.

The generated traffic has what the audit must get right: NULL tiers and models (requests that failed
before routing), unpriced models, calls without usage (errors before any token) and with estimated
usage (the upstream never reported it), 499s, streams that broke after their 200, fallbacks with their
attempt rows, answers from the cache (hit, stale, coalesced) some of them unpriced, eval traffic,
tasks decided by rules and the classifier with shadow predictions, long prompts past a price tier,
token parts that ``Usage`` clamps, equal latencies, and calls spread over days.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy import rules
from proxy.ledger.records import REQUEST_COLUMNS, AttemptRecord, RequestRecord, finalize
from proxy.ledger.store import Store
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry, Target
from proxy.usage import Usage

# The defaults of the columns the schema requires, for rows written by hand.
_REQUIRED: dict[str, Any] = {
    "task": "-", "task_source": "header", "status": 200, "stream": 0, "usage_source": "none", "attempts": 0,
    "fallback": 0,
}  # fmt: skip

REGISTRY = """
providers:
  openai: {type: openai, base_url: "https://api.openai.com/v1"}
  anthropic: {type: anthropic, base_url: "https://api.anthropic.com"}
tiers:
  frontier: {targets: ["openai::gpt-5.5", "anthropic::claude-opus-5-5"]}
  mid: {targets: ["openai::gpt-5.4-mini", "anthropic::claude-sonnet-5-5"]}
  small: {targets: ["openai::gpt-5.4-nano", "anthropic::claude-haiku-5-5"]}
  tuned: {targets: ["openai::ft:acme-7", "openai::gpt-5.4-mini"]}
tasks:
  agent: frontier
  summary: mid
  narrative: mid
  title_generation: small
  extraction: small
  support: tuned
prices:
  gpt-5.4-mini: {input: 0.75, output: 4.5}
"""


def write(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (column -> value; ``id`` and ``ts`` required, the rest NULL or the schema's default)."""
    store = Store(str(path))
    store.open()  # the schema, migrated to the current version
    store.close()
    values = [tuple({**_REQUIRED, **row}.get(c) for c in REQUEST_COLUMNS) for row in rows]
    conn = sqlite3.connect(path)
    try:
        # through the ``requests`` view: what its INSTEAD OF trigger stores is what the ledger would
        conn.executemany(
            f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})",
            values,
        )
        conn.commit()
    finally:
        conn.close()


def registry() -> Registry:
    return rules.loads(REGISTRY, environ={}, source="ledgers.yaml")


def generated(path: str | Path, n: int, seed: int, *, days: int = 5, start: float = 1_793_000_000.0) -> None:
    """A ledger of ``n`` random calls over ``days`` days from ``start`` (epoch seconds), written in batches."""
    reg = registry()
    pricer = Pricer(reg.prices, price_ids(reg))
    rng = random.Random(seed)
    # A few latencies recur exactly (a fake upstream's, or a clock's resolution): ties in the percentiles.
    repeats = [round(rng.uniform(1, 3000), 3) for _ in range(5)]
    store = Store(str(path))
    try:
        for first in range(0, n, 2000):
            records = [
                _record(rng, reg, start + days * 86_400 * (i / n), repeats) for i in range(first, min(n, first + 2000))
            ]
            assert store.insert([finalize(r, pricer) for r in records]) == []
    finally:
        store.close()


def _record(rng: random.Random, reg: Registry, ts: float, repeats: list[float]) -> RequestRecord:
    r = RequestRecord(
        id=f"{rng.getrandbits(96):024x}", ts=ts + rng.uniform(0, 30), task="-", task_source="header", tier=None,
        requested_model="auto", stream=rng.random() < 0.4, status=200, latency_ms=_latency(rng, repeats),
    )  # fmt: skip
    if rng.random() < 0.03:  # failed before routing
        r.task = rng.choice(["-", "nope", "summary"])
        r.status, r.error_type = 400, rng.choice(["unknown_task_type", "invalid_request_error"])
        r.latency_ms = rng.choice([None, 0.25, r.latency_ms])  # type: ignore[assignment]
        return r
    task = rng.choice(list(reg.tasks))
    spec = reg.tasks[task]
    r.task, r.tier, r.baseline_tier = task, spec.tier, spec.baseline
    r.baseline = reg.tiers[spec.baseline].targets[0]
    r.task_source = rng.choices(["header", "rule:titles", "classifier", "default"], [80, 8, 10, 2])[0]
    if r.task_source == "classifier":
        r.task_confidence = rng.choice([None, round(rng.uniform(0.6, 1), 3)])
    r.task_predicted = rng.choice([None, task, task, task, rng.choice(list(reg.tasks))])
    r.eval_run = rng.choice([None] * 12 + ["ev1", "ev2"])
    targets = reg.tiers[spec.tier].targets
    target = targets[0]
    if rng.random() < 0.1:
        target, r.fallback = targets[1], True
        r.attempts.append(AttemptRecord(1, ts, spec.tier, targets[0], rng.choice([None, 503]), "upstream_error", 12.5))
    if rng.random() < 0.05:  # a target of another registry's: no price known
        target = Target("openai", "ft:unknown-9", MappingProxyType({}))
    r.target = target
    r.attempts.append(AttemptRecord(len(r.attempts) + 1, ts, spec.tier, target, 200, None, 40.0))
    r.upstream_ms = r.latency_ms * 0.9 if r.latency_ms is not None else None
    prompt = rng.choice([rng.randint(1, 3000), rng.randint(1, 3000), rng.randint(200_001, 300_000)])
    completion = rng.randint(0, 800)
    cached = rng.choice([0, 0, rng.randint(0, prompt)])
    usage = Usage(prompt, completion, cached, rng.randint(0, completion), rng.choice([0, 0, rng.randint(0, prompt)]))
    roll = rng.random()
    if roll < 0.08:  # an error before any token
        r.status, r.error_type = rng.choice([(502, "upstream_unreachable"), (504, "upstream_timeout"), (429, None)])
    elif roll < 0.12:  # the client hung up mid-stream, or the stream broke after its 200: tokens estimated
        r.stream = True
        r.status, r.error_type = rng.choice([(499, "client_disconnected"), (200, "upstream_error")])
        r.messages, r.streamed_text, r.produced_output = [{"role": "user", "content": "hello " * 20}], "a b c", True
    elif roll < 0.14:  # an upstream that ignores include_usage
        r.messages, r.streamed_text, r.produced_output = [{"role": "user", "content": "why " * 9}], "because", True
    elif roll < 0.24:  # from the cache
        r.cache, r.usage = rng.choice(["hit", "hit", "stale", "coalesced"]), usage
        r.latency_ms = rng.choice([0.2, round(rng.uniform(0.1, 2), 3)])
    else:
        r.usage = usage
        r.cache = rng.choice([None, None, "miss", "bypass"])
    return r


def _latency(rng: random.Random, repeats: list[float]) -> float:
    if rng.random() < 0.1:
        return rng.choice(repeats)
    return round(rng.lognormvariate(6, 1.2), 3)
