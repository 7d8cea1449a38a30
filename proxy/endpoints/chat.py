"""``POST /v1/chat/completions``: parse -> route -> (stored answer?) -> dispatch -> relay or respond -> ledger.

Dispatch reports what it did as an ``Outcome``; the edge (``proxy.endpoints.exchange``, shared with the
Responses API) turns it into the response headers and the ledger's ``RequestRecord``. With tracing on,
the request's span (``proxy.telemetry``) is opened there once the caller is authenticated, watches
dispatch's attempts as its ``Observer``, and is ended with the record. Every request that got past
authentication leaves exactly one record, whether it succeeded, failed, crashed, or was answered from
the cache.

A request with a cache plan (``proxy.cache.plan``: an ``X-Tiergate-Key``, or a task with ``cache:``) is
served from a stored answer when one fits (``hit``; ``stale`` for a keyed generation of another data
version, which also starts one regeneration), waits for an identical request already in flight
(``coalesced``), or is generated here and stored (``miss``). ``x-tiergate-cache`` says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import headers as header_rules
from proxy import rewrite, streaming, wire
from proxy.body import read_body
from proxy.cache.answer import Assembler, replay
from proxy.cache.plan import Plan
from proxy.cache.plan import plan as cache_plan
from proxy.cache.store import Entry
from proxy.endpoints import generation
from proxy.endpoints.calls import route_headers
from proxy.endpoints.exchange import accept, both, routed, span_of, stream_closed
from proxy.endpoints.exchange import serve as serve_request
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord
from proxy.providers.base import ChunkStream
from proxy.registry import Target
from proxy.router import Route
from proxy.sse import DONE_EVENT, sse_event

CACHE_HEADER = "x-tiergate-cache"


async def chat_completions(request: Request) -> Response | streaming.SSEResponse:
    return await serve_request(request, _chat)


async def _chat(
    request: Request, gateway: Gateway, record: RequestRecord, started: float
) -> Response | streaming.SSEResponse:
    body = wire.parse_chat_request(await read_body(request, gateway.settings.max_body_bytes))
    route = routed(request, gateway, record, body)
    forwarded = header_rules.forwardable(request.headers.items())
    plan = cache_plan(route, request.headers, body, record.client or "")
    if plan is None:
        return await _generate(request, gateway, record, started, route, body, forwarded, None, lead=False)
    stored, lead = await _stored(request, gateway, record, route, plan, body, forwarded)
    if stored is not None:
        return stored
    return await _generate(request, gateway, record, started, route, body, forwarded, plan, lead=lead)


async def _stored(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    route: Route,
    plan: Plan,
    body: dict[str, Any],
    forwarded: dict[str, str],
) -> tuple[Response | None, bool]:
    """A response from a stored answer (hit, stale, coalesced), or ``None`` to generate one here, and
    whether this request now leads the flight that identical requests will wait on."""
    cache = gateway.cache

    def serve(entry: Entry | None) -> Response | None:
        if entry is None:
            return None
        if plan.kind == "keyed":
            if plan.version is None or entry.version == plan.version:
                return _from_store(request, record, route, entry, "hit", body)
            generation.refresh(gateway, plan, route, body, forwarded)  # one regeneration, however many ask
            return _from_store(request, record, route, entry, "stale", body)
        if entry.fresh(cache.clock(), plan.max_age):
            return _from_store(request, record, route, entry, "hit", body)
        return None

    if plan.read:
        entry = await cache.store.get(plan.key)
        if (
            entry is not None
            and plan.kind == "keyed"
            and entry.version != plan.version
            and gateway.settings.workers > 1
        ):
            # Another worker sharing the file may have stored that version since this one looked.
            entry = await cache.store.get(plan.key, shared=True) or entry
        served = serve(entry)
        if served is not None:
            return served, False
    if not plan.write:
        return None, False  # no-store: its answer is not to be shared with anyone, waiting or not
    leader = cache.flights.follow(plan.key)
    if leader is None:
        # The read above may have waited on the file, and an identical call landed its answer meanwhile:
        # look again (no I/O, nothing awaited from here to leading, so no call slips in between).
        served = serve(cache.store.peek(plan.key)) if plan.read else None
        if served is not None:
            return served, False
        cache.flights.lead(plan.key)
        return None, True
    entry = await leader
    if entry is None:
        return None, False  # the leader got no answer: try for ourselves
    return _from_store(request, record, route, entry, "coalesced", body), False


def _from_store(
    request: Request, record: RequestRecord, route: Route, entry: Entry, state: str, body: dict[str, Any]
) -> Response:
    """The stored answer as the client asked for it: a JSON body, or replayed as an event stream."""
    answer = entry.answer
    target = Target(answer.provider, answer.model, {})
    record.cache, record.target, record.tier, record.usage = state, target, answer.tier, answer.usage
    headers = route_headers(route, answer.tier, target, attempts=0, fallback=False, request_id=request.state.request_id)
    headers[CACHE_HEADER] = state
    record.request_id = headers["x-request-id"]
    span = span_of(request)
    if span is not None:
        span.answered(answer.body)
    if not record.stream:
        return Response(orjson.dumps(answer.body), media_type="application/json", headers=headers)
    chunks = replay(answer.body, include_usage=rewrite.client_wants_usage(body))
    events = b"".join(sse_event(orjson.dumps(c)) for c in chunks) + DONE_EVENT
    headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
    return Response(events, media_type="text/event-stream; charset=utf-8", headers=headers)


async def _generate(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    route: Route,
    body: dict[str, Any],
    forwarded: dict[str, str],
    plan: Plan | None,
    *,
    lead: bool,
) -> Response | streaming.SSEResponse:
    """Dispatch the call; with a plan, store its answer (``generation.keep``) and, leading, land the flight
    that identical calls wait on: with the answer, or with nothing when there is none."""
    keeper = generation.Keeper(gateway, plan, route, body, lead=lead) if plan is not None else None
    span = span_of(request)
    try:
        if record.stream:
            opened = await gateway.dispatcher.stream(route, body, forwarded, span)
            chunks, headers = accept(request, record, route, opened, body)
            try:
                if keeper is not None:
                    headers[CACHE_HEADER] = record.cache = keeper.state
                    keeper.served_by(opened.hop)
                return _sse(request, gateway, record, started, chunks, headers, body, keeper)
            except BaseException:
                # Until the SSEResponse owns it, the open upstream stream is ours to close.
                await chunks.aclose()
                raise
        done = await gateway.dispatcher.complete(route, body, forwarded, span)
        completion, headers = accept(request, record, route, done, body)
        record.usage = completion.usage
        if span is not None:
            span.answered(completion.body)
        if keeper is not None:
            headers[CACHE_HEADER] = record.cache = keeper.state
            keeper.served_by(done.hop)
            keeper.finished(completion.body)
        content = completion.raw if completion.raw is not None else orjson.dumps(completion.body)
        return Response(content, media_type="application/json", headers=headers)
    except BaseException:
        if keeper is not None:
            keeper.finished(None)
        raise


def _sse(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    chunks: ChunkStream,
    headers: dict[str, str],
    body: dict[str, Any],
    keeper: generation.Keeper | None,
) -> streaming.SSEResponse:
    """The streaming response; its ``on_close`` settles the ledger record once the stream has ended."""
    stats = streaming.StreamStats(started=started)
    assembler = Assembler() if keeper is not None and keeper.stores else None
    observe: Callable[[dict[str, Any]], None] | None = assembler.feed if assembler is not None else None
    span = span_of(request)
    if span is not None:
        observe = span.chunk if observe is None else both(observe, span.chunk)
    relay = streaming.relay(chunks, stats, include_usage=rewrite.client_wants_usage(body), observe=observe)
    relay_started = time.perf_counter()

    def on_close(stats: streaming.StreamStats) -> None:
        if keeper is not None:
            whole = stats.completed and stats.error is None and assembler is not None
            keeper.finished(assembler.completion() if whole and assembler is not None else None)
        stream_closed(request, gateway, record, started, relay_started, stats)

    return streaming.SSEResponse(relay, stats, headers, on_close=on_close)
