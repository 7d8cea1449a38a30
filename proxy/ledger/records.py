"""The rows the ledger stores, and how a finished request becomes one.

The request path fills a ``RequestRecord`` with what it already knows (no pricing, no token counting:
those run in the writer, off the hot path). ``finalize`` then settles usage (estimating it when the
upstream never reported any), prices it on the served and the baseline target, and returns the row in
the form it is stored (schema v8: whole milliseconds and microseconds, the repeated values as one
``kind`` tuple, tiergate's own request ids left to be derived); ``proxy.ledger.store`` writes it.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from proxy.pricing import Pricer
from proxy.registry import Target
from proxy.tokens import APPROXIMATE, estimate_completion, estimate_prompt
from proxy.usage import Usage

log = logging.getLogger("tiergate.ledger")

# The columns of the ``requests`` view, in order: what people read (README, "The ledger").
REQUEST_COLUMNS = (
    "id", "ts", "request_id", "task", "task_source", "tier", "requested_model", "model", "provider", "status",
    "error_type", "stream", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
    "reasoning_tokens", "usage_source", "cost_usd", "baseline_tier", "baseline_model", "baseline_cost_usd",
    "price_source", "latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "attempts", "fallback", "client",
    "prompt_variant", "end_user", "eval_run", "task_confidence", "task_predicted", "features", "prompt_text",
    "cache", "cost_avoided_usd", "registry",
)  # fmt: skip
SERVED_FROM_STORE = frozenset({"hit", "stale", "coalesced"})
ATTEMPT_COLUMNS = ("request", "n", "ts", "tier", "provider", "model", "status", "error_type", "latency_ms")

# How a settled request is stored (schema v8): the values many rows repeat, as one tuple that the store
# keeps once in ``ledger_kinds`` (the row holds its id), in this order:
KIND_FIELDS = (
    "task", "task_source", "tier", "requested_model", "model", "provider", "status", "error_type", "stream",
    "usage_source", "baseline_tier", "baseline_model", "price_source", "fallback", "client", "prompt_variant",
    "task_predicted", "cache", "registry",
)  # fmt: skip
# ... and the rest of a ``ledger_requests`` row (its ``rid`` aside), in this order. ``kind`` is the tuple
# above, ``end_user`` and ``eval_run`` are text, ``template`` is the (digest, encoded ids) of the call
# site's features: the store turns each into the id of its dictionary row.
ROW_FIELDS = (
    "id", "ts", "kind", "request_id", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_usd", "baseline_cost_usd", "latency_us", "ttft_us", "upstream_us", "attempts",
    "end_user", "eval_run", "task_confidence", "template", "features", "cost_avoided_usd", "prompt_text",
    "attempt_ended", "attempt_us",
)  # fmt: skip
# The last two hold a request's attempt when it had exactly one and that one served it (n 1, the
# request's tier and target, status 200): most requests, whose attempt then needs no row of its own.
# Any other attempt is a row: (n, ms after the request's ts, (tier, provider, model, status, error_type),
# latency_us).
OWN_REQUEST_ID = None  # stored for the request id tiergate made itself, "req_" + id
GENERATION_REQUEST_ID = 1  # stored for "gen_" + id (a background generation's)
NO_REQUEST_ID = 0  # stored for none at all
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def new_id() -> str:
    """A ledger row id: 96 random bits, unique across workers without coordination."""
    return f"{random.getrandbits(96):024x}"


def iso(epoch: float) -> str:
    """UTC ISO-8601 with milliseconds: the ledger's time format (what the views show)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_day(ms: int) -> str:
    """The UTC day (2026-11-01) epoch ms ``ms`` falls in: ``iso``'s first ten characters, ``daily.day``."""
    return datetime.fromtimestamp(ms // 86_400_000 * 86_400, UTC).date().isoformat()


def epoch_ms(epoch: float) -> int:
    """Epoch seconds as the ledger stores them: whole milliseconds (``iso`` shows the same millisecond)."""
    return int(epoch * 1000.0)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def moment_ms(moment: datetime) -> int:
    """An aware moment as a bound on the ledger's ``ts``: epoch ms, the sub-millisecond part dropped as ``iso``
    drops it, so a row is at or after the bound exactly when its ISO text is at or after the bound's. In
    integers (a float's seconds * 1000 can land a hair under the millisecond it means)."""
    return (moment - _EPOCH) // _MS


def stored_request_id(request_id: str | None, row_id: str) -> str | bytes | int | None:
    """The ``request_id`` column's stored form: tiergate's own ids are derived from the row id, not kept."""
    if request_id is None:
        return NO_REQUEST_ID
    head = request_id[:4]
    if head == "req_" or head == "gen_":
        if request_id[4:] == row_id:
            return OWN_REQUEST_ID if head == "req_" else GENERATION_REQUEST_ID
        if head == "req_" and _HEX.fullmatch(request_id, 4):
            return bytes.fromhex(request_id[4:])  # OpenAI's form, "req_" and 32 hex digits: 16 bytes, not 36
    return request_id


@dataclass(slots=True)
class AttemptRecord:
    n: int
    ts: float  # epoch seconds (time.time()); the row stores it as ms after the request's ts
    tier: str | None
    target: Target
    status: int | None  # None: no HTTP status (connect error, timeout)
    error_type: str | None
    latency_ms: float


@dataclass(slots=True)
class RequestRecord:
    """Everything the request path knows about one client request when it ends."""

    id: str
    ts: float  # epoch seconds (time.time()); the row stores it in ms (the view shows ISO-8601)
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
    features: bytes | None = None  # encoded hashed features (proxy.classify.features): the call's own ...
    template: tuple[bytes, bytes] | None = None  # ... and its call site's template: (digest, encoded ids)
    prompt_text: str | None = None  # the raw system prompt and last user message: only when opted in
    cache: str | None = None  # hit | stale | coalesced | miss | bypass; None: no cache or key applies
    registry: str | None = None  # the content hash of the registry (rules.yaml) the request was routed on
    attempts: list[AttemptRecord] = field(default_factory=list)
    # Only kept when usage may need estimating (the upstream never reported it):
    messages: Any = None
    streamed_text: str | None = None
    produced_output: bool = False  # at least one token reached the client


def finalize(record: RequestRecord, pricer: Pricer) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The stored row (``ROW_FIELDS``) and attempt rows for ``record``: pricing and estimation happen here.

    It runs once per request on the serving process's CPU, so it is written for speed: one pass over the
    record, the usual case first, no intermediate objects."""
    usage, source = _settle_usage(record)
    target, baseline = record.target, record.baseline
    cost = baseline_cost = price_source = avoided = None
    if usage is not None and target is not None:
        try:
            priced = pricer.usd(target, usage)
            base = pricer.usd(baseline, usage) if baseline is not None else None
        except Exception:  # noqa: BLE001 - an unpriced row keeps everything else it knows
            log.exception("could not price ledger row %s on %s; its cost is recorded as NULL", record.id, target.key)
            priced = base = None
        if priced is not None:
            cost, price_source = priced
        if base is not None:
            baseline_cost = base[0]
        if record.cache in SERVED_FROM_STORE:
            # Nobody was billed: the stored answer stood in for a generation of that price.
            avoided, cost = cost, 0.0 if cost is not None else None
    kind = (
        record.task, record.task_source, record.tier, record.requested_model, target.model if target else None,
        target.provider if target else None, record.status, record.error_type, int(record.stream), source,
        record.baseline_tier, baseline.model if baseline else None, price_source, int(record.fallback),
        record.client, record.prompt_variant, record.task_predicted, record.cache, record.registry,
    )  # fmt: skip
    ts = epoch_ms(record.ts)
    tries = record.attempts
    attempts: list[tuple[Any, ...]] = []
    ended = attempt_us = None
    if (
        len(tries) == 1
        and (only := tries[0]).status == 200
        and only.n == 1
        and only.tier == record.tier
        and (only.target is target or only.target == target)
    ):
        ended, attempt_us = epoch_ms(only.ts) - ts, _us(only.latency_ms)
    else:
        attempts = [
            (a.n, epoch_ms(a.ts) - ts, (a.tier, a.target.provider, a.target.model, a.status, a.error_type),
             _us(a.latency_ms))
            for a in tries
        ]  # fmt: skip
    row = (
        record.id, ts, kind, stored_request_id(record.request_id, record.id),
        *((None,) * 5 if usage is None else (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                                             usage.cache_write_tokens, usage.reasoning_tokens)),
        cost, baseline_cost, _us(record.latency_ms), _us(record.ttft_ms), _us(record.upstream_ms),
        max(len(tries), 1 if target else 0),
        record.end_user, record.eval_run, record.task_confidence, record.template, record.features, avoided,
        record.prompt_text, ended, attempt_us,
    )  # fmt: skip
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


def _us(ms: float | None) -> int | None:
    """Milliseconds as whole microseconds (the view divides them back: ms rounded to 0.001)."""
    return None if ms is None else round(ms * 1000.0)
