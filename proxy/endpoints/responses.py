"""``POST /v1/responses`` (OpenAI's Responses API): parse -> route -> dispatch -> relay or respond -> ledger.

Routed like a chat call (``X-Task-Type``, else the classifier on the request's chat-shaped view) with
the same edge (``proxy.endpoints.exchange``: the ledger record, the span, the response headers), and
dispatched by the same dispatcher with the Responses operation (``proxy.responses.operation``: native
to targets that speak it, translated to chat for the rest). A request bound to state kept at its
provider tries only that provider's targets (``proxy.responses.state``). The exact cache and keyed
generations are chat's only: a Responses call is always generated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import headers as header_rules
from proxy import streaming
from proxy.body import read_body
from proxy.endpoints.exchange import Answered, accept, routed, serve, span_of, stream_closed
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord
from proxy.providers.base import ChunkStream
from proxy.providers.openai_responses import TERMINAL_EVENTS
from proxy.responses.answer import as_completion
from proxy.responses.operation import ResponsesOperation
from proxy.responses.relay import ResponsesRelay
from proxy.responses.request import chat_view
from proxy.responses.state import bound_by, pinned
from proxy.responses.wire import parse_responses_request
from proxy.telemetry.tracing import RequestSpan


async def responses(request: Request) -> Answered:
    return await serve(request, _respond)


async def _respond(request: Request, gateway: Gateway, record: RequestRecord, started: float) -> Answered:
    body = parse_responses_request(await read_body(request, gateway.settings.max_body_bytes))
    view = chat_view(body)
    route = routed(request, gateway, record, view, "/v1/responses")
    if bound_by(body) is not None:
        route = pinned(route)
    forwarded = header_rules.forwardable(request.headers.items())
    operation = ResponsesOperation(gateway.providers, body)
    span = span_of(request)
    dispatcher = gateway.dispatcher
    if record.stream:
        opened = await dispatcher.run(route, body, forwarded, operation.stream, span, prepare=operation.prepare)
        events, headers = accept(request, record, route, opened, view)
        try:
            return _sse(request, gateway, record, started, events, headers, span)
        except BaseException:
            await events.aclose()  # until the SSEResponse owns it, the open upstream stream is ours to close
            raise
    done = await dispatcher.run(route, body, forwarded, operation.complete, span, prepare=operation.prepare)
    answer, headers = accept(request, record, route, done, view)
    record.usage = answer.usage
    if span is not None:
        span.answered(as_completion(answer.body))
    content = answer.raw if answer.raw is not None else orjson.dumps(answer.body)
    return Response(content, media_type="application/json", headers=headers)


def _sse(
    request: Request,
    gateway: Gateway,
    record: RequestRecord,
    started: float,
    events: ChunkStream,
    headers: dict[str, str],
    span: RequestSpan | None,
) -> streaming.SSEResponse:
    """The event stream; its ``on_close`` settles the ledger record once the stream has ended."""
    stats = streaming.StreamStats(started=started)
    relay = ResponsesRelay(events, stats, observe=_answered(span) if span is not None else None)
    relay_started = time.perf_counter()

    def on_close(stats: streaming.StreamStats) -> None:
        stream_closed(request, gateway, record, started, relay_started, stats)

    return streaming.SSEResponse(relay, stats, headers, on_close=on_close)


def _answered(span: RequestSpan) -> Callable[[dict[str, Any]], None]:
    """The span's view of a stream: only its terminal event, which carries the whole response."""

    def observe(event: dict[str, Any]) -> None:
        response = event.get("response")
        if event.get("type") in TERMINAL_EVENTS and isinstance(response, dict):
            span.answered(as_completion(response))

    return observe
