"""The rows the ledger stores, and how a finished request becomes one.

The request path fills a ``RequestRecord`` with what it already knows (no pricing, no token counting:
those run in the writer, off the hot path). ``finalize`` then settles usage (estimating it when the
upstream never reported any), prices it on the served and the baseline target, and returns the row.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proxy.pricing import Pricer
from proxy.registry import Target
from proxy.tokens import APPROXIMATE, estimate_completion, estimate_prompt
from proxy.usage import Usage

log = logging.getLogger("tiergate.ledger")

REQUEST_COLUMNS = (
    "id", "ts", "request_id", "task", "task_source", "tier", "requested_model", "model", "provider", "status",
    "error_type", "stream", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
    "reasoning_tokens", "usage_source", "cost_usd", "baseline_tier", "baseline_model", "baseline_cost_usd",
    "price_source", "latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "attempts", "fallback", "client",
    "prompt_variant", "end_user", "eval_run", "task_confidence", "task_predicted", "features", "prompt_text",
    "cache", "cost_avoided_usd",
)  # fmt: skip
SERVED_FROM_STORE = frozenset({"hit", "stale", "coalesced"})
ATTEMPT_COLUMNS = ("request", "n", "ts", "tier", "provider", "model", "status", "error_type", "latency_ms")


def new_id() -> str:
    """A ledger row id: 96 random bits, unique across workers without coordination."""
    return f"{random.getrandbits(96):024x}"


def iso(epoch: float) -> str:
    """UTC ISO-8601 with milliseconds; formatted by the writer, off the request path."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class AttemptRecord:
    n: int
    ts: float  # epoch seconds (time.time()); the row stores it as ISO-8601
    tier: str | None
    target: Target
    status: int | None  # None: no HTTP status (connect error, timeout)
    error_type: str | None
    latency_ms: float


@dataclass(slots=True)
class RequestRecord:
    """Everything the request path knows about one client request when it ends."""

    id: str
    ts: float  # epoch seconds (time.time()); the row stores it as ISO-8601
    task: str
    task_source: str
    tier: str | None
    requested_model: str | None
    stream: bool
    status: int
    latency_ms: float
    request_id: str | None = None
    target: Target | None = None  # the target that served (or last failed)
    baseline_tier: str | None = None
    baseline: Target | None = None
    error_type: str | None = None
    usage: Usage | None = None
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    client: str | None = None  # the authenticated client key's id (key:<hash prefix>); None without keys
    end_user: str | None = None  # the body's safety_identifier or user, bounded (never an identity)
    fallback: bool = False
    prompt_variant: str | None = None
    eval_run: str | None = None  # the eval run this call belongs to (X-Tiergate-Eval); None: production traffic
    task_confidence: float | None = None  # the classifier's probability, when it chose the task
    task_predicted: str | None = None  # the classifier's own choice, whoever decided (shadow mode)
    features: bytes | None = None  # the request's hashed features (proxy.classify.features.encode)
    prompt_text: str | None = None  # the raw system prompt and last user message: only when opted in
    cache: str | None = None  # hit | stale | coalesced | miss | bypass; None: no cache or key applies
    attempts: list[AttemptRecord] = field(default_factory=list)
    # Only kept when usage may need estimating (the upstream never reported it):
    messages: Any = None
    streamed_text: str | None = None
    produced_output: bool = False  # at least one token reached the client


def finalize(record: RequestRecord, pricer: Pricer) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The ``requests`` row and ``attempts`` rows for ``record`` (pricing and estimation happen here)."""
    usage, source = _settle_usage(record)
    cost = baseline_cost = None
    price_source = None
    if usage is not None and record.target is not None:
        try:
            priced = pricer.cost(record.target, usage)
            base = pricer.cost(record.baseline, usage) if record.baseline is not None else None
        except Exception:  # noqa: BLE001 - an unpriced row keeps everything else it knows
            log.exception(
                "could not price ledger row %s on %s; its cost is recorded as NULL", record.id, record.target.key
            )
            priced = base = None
        if priced is not None:
            cost, price_source = priced.usd, priced.source
        baseline_cost = base.usd if base is not None else None
    avoided = None
    if record.cache in SERVED_FROM_STORE:
        # Nobody was billed: the stored answer stood in for a generation of that price.
        avoided, cost = cost, 0.0 if cost is not None else None
    upstream = record.upstream_ms
    overhead = None if upstream is None else max(record.latency_ms - upstream, 0.0)
    target = record.target
    row = (
        record.id, iso(record.ts), record.request_id, record.task, record.task_source, record.tier,
        record.requested_model, target.model if target else None, target.provider if target else None,
        record.status, record.error_type, int(record.stream),
        usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
        usage.cached_tokens if usage else None, usage.cache_write_tokens if usage else None,
        usage.reasoning_tokens if usage else None, source, cost, record.baseline_tier,
        record.baseline.model if record.baseline else None, baseline_cost, price_source,
        _ms(record.latency_ms), _ms(record.ttft_ms), _ms(upstream), _ms(overhead),
        max(len(record.attempts), 1 if target else 0), int(record.fallback), record.client,
        record.prompt_variant, record.end_user, record.eval_run, record.task_confidence, record.task_predicted,
        record.features, record.prompt_text, record.cache, avoided,
    )  # fmt: skip
    attempts = [
        (
            record.id,
            a.n,
            iso(a.ts),
            a.tier,
            a.target.provider,
            a.target.model,
            a.status,
            a.error_type,
            _ms(a.latency_ms),
        )
        for a in record.attempts
    ]
    return row, attempts


def needs_estimate(record: RequestRecord) -> bool:
    """Whether settling ``record`` counts tokens (the slow part of ``finalize``, kept off the writer's thread)."""
    if record.usage is not None or record.target is None:
        return False
    return record.produced_output or any(a.status == 200 for a in record.attempts)


def _settle_usage(record: RequestRecord) -> tuple[Usage | None, str]:
    if record.cache in SERVED_FROM_STORE:
        return record.usage, "cache"  # the stored answer's own usage: what it took to make, not billed now
    if record.usage is not None:
        # "clamped": the upstream reported more cached than prompt tokens (see proxy.usage)
        return record.usage, "clamped" if record.usage.clamped else "upstream"
    if record.target is None or not needs_estimate(record):
        return None, "none"
    # The upstream never reported usage (a cut stream, or an upstream that ignores include_usage),
    # but tokens were produced and billed: estimate rather than record 0.
    model = record.target.model
    try:
        prompt = estimate_prompt(record.messages, model)
        completion = estimate_completion(record.streamed_text or "", model)
    except Exception:  # noqa: BLE001 - a rough count beats losing the row's usage (or the row)
        log.exception("token estimate failed for ledger row %s; counting ~4 characters per token", record.id)
        prompt = estimate_prompt(record.messages, APPROXIMATE)
        completion = estimate_completion(record.streamed_text or "", APPROXIMATE)
    return Usage(prompt_tokens=prompt, completion_tokens=max(completion, 1)), "estimated"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
