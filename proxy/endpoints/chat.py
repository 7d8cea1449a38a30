"""``POST /v1/chat/completions``: parse -> route -> (stored answer?) -> dispatch -> relay or respond -> ledger.

Dispatch reports what it did as an ``Outcome``; this edge turns it into the response headers and the
ledger's ``RequestRecord`` (the ledger's row type is nobody else's scratchpad). With tracing on, the
request's span (``proxy.telemetry``) is opened here once the caller is authenticated, watches dispatch's
attempts as its ``Observer``, and is ended with the record. Every request that got
past authentication leaves exactly one record, whether it succeeded, failed, crashed, or was answered
from the cache.

A request with a cache plan (``proxy.cache.plan``: an ``X-Tiergate-Key``, or a task with ``cache:``) is
served from a stored answer when one fits (``hit``; ``stale`` for a keyed generation of another data
version, which also starts one regeneration), waits for an identical request already in flight
(``coalesced``), or is generated here and stored (``miss``). ``x-tiergate-cache`` says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

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
from proxy.classify.features import captured_text, encode
from proxy.endpoints import generation
from proxy.endpoints.calls import note, route_headers, route_record, settle
from proxy.errors import TiergateError
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord, new_id
from proxy.outcome import Outcome
from proxy.providers.base import ChunkStream
from proxy.registry import Target
from proxy.router import Route
from proxy.sse import DONE_EVENT, sse_event
from proxy.telemetry.tracing import RequestSpan

CACHE_HEADER = "x-tiergate-cache"


async def chat_completions(request: Request) -> Response | streaming.SSEResponse:
    gateway: Gateway = request.state.gateway
    client = gateway.keys.authenticate(request.headers)
    task_header = request.headers.get("x-task-type")
    record = RequestRecord(
        id=new_id(),
        ts=time.time(),
        task=task_header or "-",
        task_source="header" if task_header else "default",
        tier=None,
        requested_model=None,
        stream=False,
        status=0,
        latency_ms=0.0,
        client=client,
        eval_run=_eval_run(gateway, request),
    )
    # The id a client sees when tiergate has no upstream's to pass on; a crash's 500 carries it too.
    request.state.request_id = "req_" + record.id
    telemetry = gateway.telemetry
    request.state.span = telemetry.request(request.headers) if telemetry is not None else None
    started = time.perf_counter()
    try:
        response = await _chat(request, gateway, record, started)
    except TiergateError as exc:
        record.request_id = exc.headers.setdefault("x-request-id", request.state.request_id)
        _finish(request, gateway, record, started, exc.status, exc.code or exc.type)
        raise
    except Exception:
        record.request_id = request.state.request_id
        _finish(request, gateway, record, started, 500, "internal_error")
        raise
    if not isinstance(response, streaming.SSEResponse):
        _finish(request, gateway, record, started, 200, None)
    return response


async def _chat(
    request: Request, gateway: Gateway, record: RequestRecord, started: float
) -> Response | streaming.SSEResponse:
    body = wire.parse_chat_request(await read_body(request, gateway.settings.max_body_bytes))
    span = _span(request)
    if span is not None:
        span.parsed(body)
    record.requested_model = body["model"]
    record.stream = bool(body.get("stream"))
    record.messages = body.get("messages")
    record.end_user = _end_user(body)
    decision = gateway.classifier.decide(request.headers, body)
    record.task_confidence, record.task_predicted = decision.confidence, decision.predicted
    record.features = encode(decision.features)
    if gateway.registry.classifier is not None and gateway.registry.classifier.capture_text:
        record.prompt_text = captured_text(body)
    route = gateway.router.resolve(decision.task, body["model"], decision.source)
    route_record(record, route, gateway)
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
    span = _span(request)
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
    span = _span(request)
    try:
        if record.stream:
            opened = await gateway.dispatcher.stream(route, body, forwarded, span)
            chunks, headers = _accept(request, record, route, opened, body)
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
        completion, headers = _accept(request, record, route, done, body)
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
    span = _span(request)
    if span is not None:
        observe = span.chunk if observe is None else _both(observe, span.chunk)
    relay = streaming.relay(chunks, stats, include_usage=rewrite.client_wants_usage(body), observe=observe)
    relay_started = time.perf_counter()

    def on_close(stats: streaming.StreamStats) -> None:
        record.usage = stats.usage
        record.ttft_ms = stats.ttft_ms
        record.produced_output = stats.chunks > 0
        record.streamed_text = stats.text() if stats.usage is None else None
        record.upstream_ms = (record.upstream_ms or 0.0) + (time.perf_counter() - relay_started) * 1000.0
        if keeper is not None:
            whole = stats.completed and stats.error is None and assembler is not None
            keeper.finished(assembler.completion() if whole and assembler is not None else None)
        if stats.error is not None:
            _finish(request, gateway, record, started, 200, stats.error.code or stats.error.type)
        elif stats.client_disconnected:
            _finish(request, gateway, record, started, 499, "client_disconnected")
        else:
            _finish(request, gateway, record, started, 200, None)

    return streaming.SSEResponse(relay, stats, headers, on_close=on_close)


class _Answer(Protocol):
    """A completion or an open stream: both carry the upstream's request id and passed-on headers."""

    @property
    def request_id(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


A = TypeVar("A", bound=_Answer)


def _accept(
    request: Request, record: RequestRecord, route: Route, outcome: Outcome[A], body: dict[str, Any]
) -> tuple[A, dict[str, str]]:
    """Note what dispatch did on the record; the answer and its response headers, or raise its error."""
    note(record, outcome, body)
    if outcome.error is not None:
        raise outcome.error
    answer = outcome.value
    assert answer is not None and outcome.hop is not None  # an outcome holds a value or an error
    request_id = answer.request_id or request.state.request_id
    routing = route_headers(
        route,
        outcome.hop.tier,
        outcome.hop.target,
        attempts=len(outcome.attempts),
        fallback=outcome.fallback,
        request_id=request_id,
    )
    headers = {**answer.headers, **routing}
    record.request_id = headers["x-request-id"]
    return answer, headers


def _end_user(body: dict[str, Any]) -> str | None:
    """The end-user id a client put in the body: kept apart from ``client`` (a body field proves nothing
    about who called), and cut to OpenAI's own bound for ``safety_identifier`` (64 characters)."""
    for field in ("safety_identifier", "user"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return value[:_END_USER_LIMIT]
    return None


_END_USER_LIMIT = 64
EVAL_HEADER = "x-tiergate-eval"


def _eval_run(gateway: Gateway, request: Request) -> str | None:
    """The eval run a call belongs to: ``X-Tiergate-Eval``, honoured only by ``tiergate eval``'s own server."""
    value = request.headers.get(EVAL_HEADER) if gateway.settings.eval_traffic else None
    return value[:_END_USER_LIMIT] if value else None


def _finish(
    request: Request, gateway: Gateway, record: RequestRecord, started: float, status: int, error: str | None
) -> None:
    """Settle the record for the ledger; note the access line's facts."""
    request.state.request_id = record.request_id
    target = record.target
    request.state.access = {
        "task": record.task,
        "tier": record.tier,
        "model": target.key if target else None,
        "cache": record.cache,
    }
    settle(gateway, record, started, status, error, _span(request))


def _span(request: Request) -> RequestSpan | None:
    """The request's span: set once it is authenticated, ``None`` when tracing is off."""
    span: RequestSpan | None = request.state.span
    return span


def _both(
    first: Callable[[dict[str, Any]], None], second: Callable[[dict[str, Any]], None]
) -> Callable[[dict[str, Any]], None]:
    def observe(data: dict[str, Any]) -> None:
        first(data)
        second(data)

    return observe
