"""``POST /v1/chat/completions``: parse -> route -> dispatch -> relay or respond -> one ledger record.

Dispatch reports what it did as an ``Outcome``; this edge turns it into the response headers and the
ledger's ``RequestRecord`` (the ledger's row type is nobody else's scratchpad). Every request that got
past authentication leaves exactly one record, whether it succeeded, failed, or crashed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import headers as header_rules
from proxy import rewrite, streaming, wire
from proxy.body import read_body
from proxy.classify.features import captured_text, encode
from proxy.dispatch import Outcome
from proxy.errors import TiergateError
from proxy.gateway import Gateway
from proxy.ledger.records import AttemptRecord, RequestRecord, new_id
from proxy.providers.base import ChunkStream
from proxy.router import Route


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
    record.task, record.task_source, record.tier = route.task.name, route.task_source, route.tier.name
    record.baseline_tier = route.task.baseline
    record.baseline = gateway.registry.tiers[route.task.baseline].targets[0]
    forwarded = header_rules.forwardable(request.headers.items())

    if record.stream:
        chunks, headers = _accept(request, record, route, await gateway.dispatcher.stream(route, body, forwarded))
        try:
            return _sse(
                request, gateway, record, started, chunks, headers, include_usage=rewrite.client_wants_usage(body)
            )
        except BaseException:
            # Until the SSEResponse owns it, the open upstream stream is ours to close.
            await chunks.aclose()
            raise

    completion, headers = _accept(request, record, route, await gateway.dispatcher.complete(route, body, forwarded))
    record.usage = completion.usage
    content = completion.raw if completion.raw is not None else orjson.dumps(completion.body)
    return Response(content, media_type="application/json", headers=headers)


def _sse(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    chunks: ChunkStream,
    headers: dict[str, str],
    *,
    include_usage: bool,
) -> streaming.SSEResponse:
    """The streaming response; its ``on_close`` settles the ledger record once the stream has ended."""
    stats = streaming.StreamStats(started=started)
    relay = streaming.relay(chunks, stats, include_usage=include_usage)
    relay_started = time.perf_counter()

    def on_close(stats: streaming.StreamStats) -> None:
        record.usage = stats.usage
        record.ttft_ms = stats.ttft_ms
        record.produced_output = stats.chunks > 0
        record.streamed_text = stats.text() if stats.usage is None else None
        record.upstream_ms = (record.upstream_ms or 0.0) + (time.perf_counter() - relay_started) * 1000.0
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


def _accept(request: Request, record: RequestRecord, route: Route, outcome: Outcome[A]) -> tuple[A, dict[str, str]]:
    """Note what dispatch did on the record; the answer and its response headers, or raise its error."""
    _note(record, outcome)
    if outcome.error is not None:
        raise outcome.error
    answer = outcome.value
    assert answer is not None  # an outcome holds a value or an error
    headers = {**answer.headers, **_route_headers(route, outcome, answer.request_id or request.state.request_id)}
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


def _note(record: RequestRecord, outcome: Outcome[Any]) -> None:
    """Copy what dispatch did onto the ledger record."""
    hop = outcome.hop
    if hop is not None:
        record.target, record.tier = hop.target, hop.tier
        record.prompt_variant = hop.prompt.name if hop.prompt is not None else None
    record.fallback = outcome.fallback
    record.upstream_ms = outcome.upstream_ms
    record.attempts = [
        AttemptRecord(a.n, a.ts, a.tier, a.target, a.status, a.error, a.latency_ms) for a in outcome.attempts
    ]


def _finish(
    request: Request, gateway: Gateway, record: RequestRecord, started: float, status: int, error: str | None
) -> None:
    """Close the request's ledger record and hand it to the writer (never blocks); note the access line's facts."""
    request.state.request_id = record.request_id
    target = record.target
    request.state.access = {"task": record.task, "tier": record.tier, "model": target.key if target else None}
    record.status = status
    record.error_type = error
    record.latency_ms = (time.perf_counter() - started) * 1000.0
    if record.usage is not None:
        record.messages = None  # only kept for estimating missing usage
    if gateway.ledger is not None:
        gateway.ledger.submit(record)


def _route_headers(route: Route, outcome: Outcome[Any], request_id: str) -> dict[str, str]:
    hop = outcome.hop
    assert hop is not None  # a value means some hop served it
    return {
        "x-tiergate-attempts": str(len(outcome.attempts)),
        "x-tiergate-fallback": "true" if outcome.fallback else "false",
        "x-tiergate-task": route.task.name,
        "x-tiergate-task-source": route.task_source,
        "x-tiergate-tier": hop.tier,
        "x-tiergate-model": hop.target.model,
        "x-tiergate-provider": hop.target.provider,
        "x-request-id": request_id,
    }
