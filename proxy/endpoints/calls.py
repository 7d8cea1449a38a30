"""What every dispatched call shares, whoever made it (a client's request, a background generation):
the ledger record's routing facts, what dispatch did noted on it, and its hand-over to the writer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy import prompts
from proxy.gateway import Gateway
from proxy.ledger.records import AttemptRecord, RequestRecord
from proxy.outcome import Outcome
from proxy.registry import Target
from proxy.router import Route
from proxy.telemetry.tracing import RequestSpan


def route_record(record: RequestRecord, route: Route, gateway: Gateway) -> None:
    """The task, tier and baseline the route chose, on the record."""
    record.task, record.task_source, record.tier = route.task.name, route.task_source, route.tier.name
    record.baseline_tier = route.task.baseline
    record.baseline = gateway.registry.tiers[route.task.baseline].targets[0]


def note(record: RequestRecord, outcome: Outcome[Any], body: Mapping[str, Any]) -> None:
    """Copy what dispatch did with the client's ``body`` onto the ledger record."""
    hop = outcome.hop
    if hop is not None:
        record.target, record.tier = hop.target, hop.tier
        prompt = prompts.for_request(hop.prompt, body)  # the variant that reworded it, if any did
        record.prompt_variant = prompt.name if prompt is not None else None
    record.fallback = outcome.fallback
    record.upstream_ms = outcome.upstream_ms
    record.attempts = [
        AttemptRecord(a.n, a.ts, a.tier, a.target, a.status, a.error, a.latency_ms) for a in outcome.attempts
    ]


def settle(
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    status: int,
    error: str | None,
    span: RequestSpan | None = None,
) -> None:
    """Close the record, end its span and count it (when telemetry is on), and hand it to the ledger
    writer (never blocks)."""
    record.status = status
    record.error_type = error
    record.latency_ms = (time.perf_counter() - started) * 1000.0
    if record.usage is not None:
        record.messages = None  # only kept for estimating missing usage
    if gateway.telemetry is not None:
        gateway.telemetry.finished(record, span)
    if gateway.ledger is not None:
        gateway.ledger.submit(record)


def route_headers(
    route: Route, tier: str, target: Target, *, attempts: int, fallback: bool, request_id: str
) -> dict[str, str]:
    """tiergate's response headers: what ran where, and how the task was decided."""
    return {
        "x-tiergate-attempts": str(attempts),
        "x-tiergate-fallback": "true" if fallback else "false",
        "x-tiergate-task": route.task.name,
        "x-tiergate-task-source": route.task_source,
        "x-tiergate-tier": tier,
        "x-tiergate-model": target.model,
        "x-tiergate-provider": target.provider,
        "x-request-id": request_id,
    }
