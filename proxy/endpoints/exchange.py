"""What every model endpoint does around its own call (chat completions, embeddings, responses).

``serve`` gives each authenticated request exactly one ledger ``RequestRecord`` and, with tracing on, a
request span, and settles the record however the handler ends (an answer, an error, a crash); a
streamed answer settles it when its stream closes (``stream_closed``). ``routed`` decides the task and
tier from the request's chat-shaped view (embeddings route by task alone, ``proxy.endpoints.embeddings``);
``accept`` turns dispatch's ``Outcome`` into the answer and its response headers (and notes the prompt
variant that reworded the client's body, if one did), or raises its error. The ledger's row type is nobody else's scratchpad: only the
endpoints (and ``calls``) write it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from proxy import streaming
from proxy.classify.features import captured_text, encode
from proxy.endpoints.calls import note, route_headers, route_record, settle
from proxy.errors import TiergateError
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord, new_id
from proxy.outcome import Outcome
from proxy.router import Route
from proxy.telemetry.tracing import CHAT_ROUTE, RequestSpan

Answered = Response | streaming.SSEResponse
# The endpoint's own part: parse, route, dispatch, respond (settling the record is ``serve``'s).
Handler = Callable[[Request, Gateway, RequestRecord, float], Awaitable[Answered]]
EVAL_HEADER = "x-tiergate-eval"
_END_USER_LIMIT = 64


async def serve(request: Request, handler: Handler) -> Answered:
    """Run ``handler`` for one request with its ledger record (and span); settle the record."""
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
        registry=gateway.registry.content_hash or None,
    )
    # The id a client sees when tiergate has no upstream's to pass on; a crash's 500 carries it too.
    request.state.request_id = "req_" + record.id
    telemetry = gateway.telemetry
    request.state.span = telemetry.request(request.headers) if telemetry is not None else None
    started = time.perf_counter()
    try:
        response = await handler(request, gateway, record, started)
    except TiergateError as exc:
        record.request_id = exc.headers.setdefault("x-request-id", request.state.request_id)
        finish(request, gateway, record, started, exc.status, exc.code or exc.type)
        raise
    except Exception:
        record.request_id = request.state.request_id
        finish(request, gateway, record, started, 500, "internal_error")
        raise
    if not isinstance(response, streaming.SSEResponse):
        finish(request, gateway, record, started, 200, None)
    return response


def routed(
    request: Request, gateway: Gateway, record: RequestRecord, view: Mapping[str, Any], http_route: str = CHAT_ROUTE
) -> Route:
    """The route of a request whose chat-shaped ``view`` the classifier reads; noted on the record and on the
    span (whose ``http.route`` is the endpoint's)."""
    span = span_of(request)
    if span is not None:
        span.parsed(view, route=http_route)
    record.requested_model = view["model"]
    record.stream = bool(view.get("stream"))
    record.messages = view.get("messages")
    record.end_user = end_user(view)
    decision = gateway.classifier.decide(request.headers, view)
    record.task_confidence, record.task_predicted = decision.confidence, decision.predicted
    if gateway.ledger is not None and decision.template is not None:
        # Stored apart: the call site's template once in the ledger, only the user message's own features per row.
        record.features = encode(decision.call)
        record.template = (decision.template.digest, decision.template.blob)
    if gateway.registry.classifier is not None and gateway.registry.classifier.capture_text:
        record.prompt_text = captured_text(view)
    route = gateway.router.resolve(decision.task, view["model"], decision.source)
    route_record(record, route, gateway)
    return route


class _Answer(Protocol):
    """A completion or an open stream: both carry the upstream's request id and passed-on headers."""

    @property
    def request_id(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


A = TypeVar("A", bound=_Answer)


def accept(
    request: Request, record: RequestRecord, route: Route, outcome: Outcome[A], body: Mapping[str, Any]
) -> tuple[A, dict[str, str]]:
    """Note what dispatch did with the client's ``body`` on the record; the answer and its response
    headers, or raise its error."""
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


def stream_closed(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    relay_started: float,
    stats: streaming.StreamStats,
) -> None:
    """Settle the record of a streamed answer once its stream has ended, however it ended."""
    record.usage = stats.usage
    record.ttft_ms = stats.ttft_ms
    record.produced_output = stats.chunks > 0
    record.streamed_text = stats.text() if stats.usage is None else None
    record.upstream_ms = (record.upstream_ms or 0.0) + (time.perf_counter() - relay_started) * 1000.0
    if stats.error is not None:
        finish(request, gateway, record, started, 200, stats.error.code or stats.error.type)
    elif stats.client_disconnected:
        finish(request, gateway, record, started, 499, "client_disconnected")
    else:
        finish(request, gateway, record, started, 200, None)


def finish(
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
    settle(gateway, record, started, status, error, span_of(request))


def span_of(request: Request) -> RequestSpan | None:
    """The request's span: set once it is authenticated, ``None`` when tracing is off."""
    span: RequestSpan | None = request.state.span
    return span


def both(
    first: Callable[[dict[str, Any]], None], second: Callable[[dict[str, Any]], None]
) -> Callable[[dict[str, Any]], None]:
    """One observer that calls ``first`` then ``second``."""

    def observe(data: dict[str, Any]) -> None:
        first(data)
        second(data)

    return observe


def end_user(body: Mapping[str, Any]) -> str | None:
    """The end-user id a client put in the body: kept apart from ``client`` (a body field proves nothing
    about who called), and cut to OpenAI's own bound for ``safety_identifier`` (64 characters)."""
    for field in ("safety_identifier", "user"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return value[:_END_USER_LIMIT]
    return None


def _eval_run(gateway: Gateway, request: Request) -> str | None:
    """The eval run a call belongs to: ``X-Tiergate-Eval``, honoured only by ``tiergate eval``'s own server."""
    value = request.headers.get(EVAL_HEADER) if gateway.settings.eval_traffic else None
    return value[:_END_USER_LIMIT] if value else None
