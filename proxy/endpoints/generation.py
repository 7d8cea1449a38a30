"""Answers that outlive their request: keeping a generated answer, and generating in the background.

``Keeper`` follows one dispatched call that has a cache plan: when it finishes it stores the answer
(unless ``no-store``), marks a keyed generation ready, and lands the flight identical calls wait on.
``refresh`` and ``precompute`` queue a background generation (one per key and version) that runs through
the normal dispatch (routing, fallbacks, prompt variants) and leaves an ordinary ledger row; a failed one
keeps the last good answer and records why.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy import rewrite
from proxy.cache.answer import Answer
from proxy.cache.plan import Plan, exact_key
from proxy.cache.store import Entry, Status
from proxy.endpoints.calls import note, route_record, settle
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord, new_id
from proxy.router import Hop, Route
from proxy.usage import Usage

log = logging.getLogger("tiergate.cache")


class Keeper:
    """The cache side of one dispatched call; ``finished`` is called once, with the completion or ``None``."""

    def __init__(self, gateway: Gateway, plan: Plan, route: Route, body: dict[str, Any], *, lead: bool) -> None:
        self._gateway, self._plan, self._route, self._body = gateway, plan, route, body
        self._lead = lead
        self._hop: Hop | None = None
        self._done = False
        self.stores = plan.write
        self.state = "bypass" if plan.bypass else "miss"

    def served_by(self, hop: Hop | None) -> None:
        self._hop = hop

    def finished(self, completion: dict[str, Any] | None) -> None:
        if self._done:
            return
        self._done = True
        entry = None
        if completion is not None and self._hop is not None and self.stores:
            entry = keep(self._gateway, self._plan, self._route, self._body, self._hop, completion)
        if self._lead:
            self._gateway.cache.flights.land(self._plan.key, entry)


def keep(
    gateway: Gateway, plan: Plan, route: Route, body: dict[str, Any], hop: Hop, completion: dict[str, Any]
) -> Entry:
    """Store ``completion`` as the plan says: under its key (an exact answer from a fallback target under
    the request as sent to that target), with its expiry or its data version; a keyed one is then ready."""
    usage = Usage.from_openai(completion.get("usage"))
    answer = Answer(completion, usage, hop.target.provider, hop.target.model, hop.tier, gateway.cache.clock())
    entry = Entry(answer, version=plan.version, expires=None if plan.ttl_s is None else answer.created + plan.ttl_s)
    key = plan.key
    if plan.kind == "exact" and hop is not route.hops[0]:
        key = exact_key(plan.scope, hop, rewrite.for_target(body, route.task, hop.target, hop.prompt))
    gateway.cache.keep(key, entry)
    if plan.kind == "keyed":
        gateway.cache.succeeded(plan.key, plan.version)
        gateway.cache.note_status(Status(plan.key, plan.version, "ready", gateway.cache.clock()))
    return entry


def client_key(plan: Plan) -> str:
    """The key as the client named it (the store's is scoped to the client)."""
    return plan.name or plan.key


def precompute(gateway: Gateway, plan: Plan, route: Route, body: dict[str, Any], headers: dict[str, str]) -> bool:
    """Queue a generation for a keyed plan; False when the queue is full (the caller answers 429)."""
    job = _job(gateway, plan, route, body, headers)
    if gateway.cache.generator.pending(plan.key, plan.version):
        return True
    if not gateway.cache.generator.submit(plan.key, plan.version, job):
        return False
    gateway.cache.note_status(Status(plan.key, plan.version, "queued", gateway.cache.clock()))
    return True


def refresh(gateway: Gateway, plan: Plan, route: Route, body: dict[str, Any], headers: dict[str, str]) -> None:
    """A stale keyed answer was served: start its regeneration for the new version (once, however many ask;
    not again soon after one failed)."""
    if not gateway.cache.retry_due(plan.key, plan.version):
        return
    if not precompute(gateway, plan, route, body, headers):
        log.warning("cache: the background queue is full; %s stays stale for now", client_key(plan))


def _job(gateway: Gateway, plan: Plan, route: Route, body: dict[str, Any], headers: dict[str, str]) -> Any:
    request = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}

    async def generate() -> None:
        cache = gateway.cache
        cache.note_status(Status(plan.key, plan.version, "running", cache.clock()))
        record = RequestRecord(new_id(), time.time(), route.task.name, route.task_source, None, body.get("model"),
                               False, 0, 0.0, cache="miss", registry=gateway.registry.content_hash or None)  # fmt: skip
        record.request_id = "gen_" + record.id
        record.messages = request.get("messages")
        route_record(record, route, gateway)
        started = time.perf_counter()
        span = gateway.telemetry.background() if gateway.telemetry is not None else None
        if span is not None:
            span.parsed(request)
        outcome = await gateway.dispatcher.complete(route, request, headers, span)
        note(record, outcome, request)
        if outcome.error is not None or outcome.value is None or outcome.hop is None:
            error = outcome.error
            status, code = (error.status, error.code or error.type) if error is not None else (500, None)
            settle(gateway, record, started, status, code, span)
            why = error.message if error is not None else "no answer"
            cache.failed(plan.key, plan.version)
            cache.note_status(Status(plan.key, plan.version, "failed", cache.clock(), why))
            return
        record.usage = outcome.value.usage
        if span is not None:
            span.answered(outcome.value.body)
        settle(gateway, record, started, 200, None, span)
        keep(gateway, plan, route, request, outcome.hop, dict(outcome.value.body))

    return generate
