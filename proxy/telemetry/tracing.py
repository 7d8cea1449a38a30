"""Spans: one per client request (kind SERVER), one per upstream attempt (kind CLIENT), GenAI names.

A ``RequestSpan`` is opened when a request has been authenticated, continuing the client's W3C trace
when it sent a ``traceparent``; it is an ``Observer`` for dispatch, so each attempt gets its own child
span whose context travels upstream in the attempt's ``traceparent`` (app -> tiergate -> provider is one
trace). The request span ends with the request (a stream's when the stream has ended), its attributes
read from the finished ledger record. The attempt that served stays open until then, so it carries the
response and its usage; a failed attempt ends when dispatch says so.

A background generation (precompute, a stale answer's regeneration) gets a span of its own, kind
INTERNAL with no parent: no client waits on it.

A request the sampler drops (``OTEL_TRACES_SAMPLER``) gets a non-recording span: nothing is built for
it, no attempt spans are opened, and its context (not sampled) still goes upstream so the provider
drops it too. That is the lever on tracing's cost: the SDK validates every attribute (~1.5 µs each) and
its OTLP exporter encodes a span in ~50 µs of CPU, so a recorded request (two spans) costs ~0.25 ms.

Telemetry must never fail a request: each entry point catches what it raises and logs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.ledger.records import RequestRecord
from proxy.outcome import Attempt
from proxy.providers.base import Call
from proxy.redact import Redactor
from proxy.router import Hop
from proxy.telemetry import content
from proxy.telemetry import names as n

log = logging.getLogger("tiergate.telemetry")

CHAT_ROUTE = "/v1/chat/completions"
_LABEL_LIMIT = 64  # a task header as sent, on a request that failed before routing


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the conventions want to know of a registry provider: its GenAI name and where it is."""

    genai: str
    address: str | None = None
    port: int | None = None


class Tracing:
    """The process's tracer and what every span needs: upstreams by provider name, the capture switch."""

    def __init__(self, provider: TracerProvider, upstreams: Mapping[str, Upstream], capture: Redactor | None) -> None:
        self.tracer: Tracer = provider.get_tracer("tiergate")
        self.propagator = TraceContextTextMapPropagator()
        self.upstreams = upstreams
        self.capture = capture  # the redactor when content capture is on; None: never record content

    def request(self, headers: Mapping[str, str]) -> RequestSpan:
        """The span of one client request, a child of the client's span when it sent a traceparent."""
        parent = self.propagator.extract(headers)
        span = self.tracer.start_span(
            n.CHAT, context=parent, kind=SpanKind.SERVER, attributes={n.OPERATION: n.CHAT, n.HTTP_ROUTE: CHAT_ROUTE}
        )
        return RequestSpan(self, span)

    def background(self) -> RequestSpan:
        """The span of a generation no client waits on: a trace of its own."""
        span = self.tracer.start_span(
            n.CHAT, context=Context(), kind=SpanKind.INTERNAL, attributes={n.OPERATION: n.CHAT, n.BACKGROUND: True}
        )
        return RequestSpan(self, span)


class RequestSpan:
    """The spans of one request; also the ``Observer`` dispatch tells about its attempts."""

    __slots__ = (
        "_tracing", "_span", "_context", "_recording", "_open", "_served", "_served_end", "_attempts", "_stream",
        "_response_id", "_response_model", "_finish_reasons", "_pieces", "_output", "_operation",
    )  # fmt: skip

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self._span = span
        self._context = set_span_in_context(span)
        self._recording = span.is_recording()  # False: the sampler dropped this trace
        self._open: Span | None = None  # the attempt in flight
        self._served: Span | None = None  # the attempt that answered, kept open for its response
        self._served_end: int | None = None  # when that attempt ended (non-streamed): its span's end
        self._attempts = 0
        self._stream = False
        self._response_id: str | None = None
        self._response_model: str | None = None
        self._finish_reasons: list[str] = []
        self._pieces: list[str] | None = None  # streamed text, only when capturing content
        self._output: str | None = None  # gen_ai.output.messages, only when capturing content
        self._operation = n.CHAT  # gen_ai.operation.name of the request and of its attempts

    # --- the edge -------------------------------------------------------------------------------

    def parsed(self, body: Mapping[str, Any], operation: str = n.CHAT, route: str = CHAT_ROUTE) -> None:
        """The client's request: its model names the span; its parameters and (opted in) messages.
        ``operation`` and ``route`` are the endpoint's (``embeddings``, ``/v1/embeddings``) when not chat's."""
        if not self._recording:
            return
        try:
            model = str(body.get("model"))
            self._operation = operation
            self._span.update_name(f"{operation} {model}")
            attributes: dict[str, Any] = {n.REQUEST_MODEL: model, n.OPERATION: operation, n.HTTP_ROUTE: route}
            _params(body, attributes)
            self._stream = bool(body.get("stream"))
            redactor = self._tracing.capture
            if redactor is not None and "messages" in body:  # an embeddings call has none to capture
                attributes[n.INPUT_MESSAGES] = content.input_messages(body.get("messages"), redactor)
                if self._stream:
                    self._pieces = []
            self._span.set_attributes(attributes)
        except Exception:  # noqa: BLE001 - telemetry never fails a request
            log.exception("telemetry: noting a request failed")

    def answered(self, body: Mapping[str, Any]) -> None:
        """A whole completion: its id, model and finish reasons (and, opted in, its messages)."""
        if not self._recording:
            return
        try:
            self._response(body)
            choices = body.get("choices")
            if isinstance(choices, list):
                self._finish_reasons = [str(c.get("finish_reason")) for c in choices if isinstance(c, dict)]
                if self._tracing.capture is not None:
                    self._output = content.output_messages(
                        (c for c in choices if isinstance(c, dict)), self._tracing.capture
                    )
        except Exception:  # noqa: BLE001
            log.exception("telemetry: noting a completion failed")

    def chunk(self, data: Mapping[str, Any]) -> None:
        """One streamed chunk, as the relay passes it (the relay would end the stream on a raise)."""
        if not self._recording:
            return
        try:
            if self._response_id is None:
                self._response(data)
            choices = data.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if not isinstance(choice, dict):
                    continue
                reason = choice.get("finish_reason")
                if reason:
                    self._finish_reasons.append(str(reason))
                if self._pieces is not None:
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str):
                        self._pieces.append(text)
        except Exception:  # noqa: BLE001
            log.exception("telemetry: noting a chunk failed")

    def finish(self, record: RequestRecord, cost: float | None) -> None:
        """End the request's spans with what its ledger record says happened."""
        try:
            if self._recording:
                self._finish(record, cost)
            else:
                self._span.end()
        except Exception:  # noqa: BLE001
            log.exception("telemetry: ending a request's span failed")

    # --- the Observer -----------------------------------------------------------------------------

    def attempt_started(self, hop: Hop, call: Call) -> Mapping[str, str]:
        try:
            if not self._recording:  # the request's own (unsampled) context is all the upstream needs
                carrier: dict[str, str] = {}
                self._tracing.propagator.inject(carrier, context=self._context)
                return carrier
            self._attempts += 1
            target = hop.target
            upstream = self._tracing.upstreams.get(target.provider) or Upstream(target.provider)
            attributes: dict[str, Any] = {
                n.OPERATION: self._operation,
                n.PROVIDER: upstream.genai,
                n.REQUEST_MODEL: target.model,
                n.TARGET: target.key,
                n.TIER: hop.tier,
                n.ATTEMPT: self._attempts,
            }
            if upstream.address is not None:
                attributes[n.SERVER_ADDRESS] = upstream.address
            if upstream.port is not None:
                attributes[n.SERVER_PORT] = upstream.port
            _params(call.body, attributes)
            span = self._tracing.tracer.start_span(
                f"{self._operation} {target.model}", context=self._context, kind=SpanKind.CLIENT, attributes=attributes
            )
            self._open = span
            carrier = {}
            self._tracing.propagator.inject(carrier, context=set_span_in_context(span))
            return carrier
        except Exception:  # noqa: BLE001
            log.exception("telemetry: opening an attempt's span failed")
            return {}

    def attempt_ended(self, attempt: Attempt) -> None:
        span, self._open = self._open, None
        if span is None:
            return
        try:
            if attempt.status is not None:
                span.set_attribute(n.HTTP_STATUS, attempt.status)
            if attempt.error is None:
                self._served = span
                self._served_end = None if self._stream else time.time_ns()
                return
            span.set_attribute(n.ERROR_TYPE, attempt.error)
            span.set_status(Status(StatusCode.ERROR))
            span.end()
        except Exception:  # noqa: BLE001
            log.exception("telemetry: ending an attempt's span failed")

    # --- inside -----------------------------------------------------------------------------------

    def _response(self, body: Mapping[str, Any]) -> None:
        response_id, model = body.get("id"), body.get("model")
        if isinstance(response_id, str):
            self._response_id = response_id
        if isinstance(model, str):
            self._response_model = model

    def _finish(self, record: RequestRecord, cost: float | None) -> None:
        span = self._span
        target = record.target
        attributes: dict[str, Any] = {
            n.TASK: record.task[:_LABEL_LIMIT],
            n.TASK_SOURCE: record.task_source,
            n.HTTP_STATUS: record.status,
            n.ATTEMPT: len(record.attempts),
            n.FALLBACK: record.fallback,
        }
        if record.tier is not None:
            attributes[n.TIER] = record.tier
        if record.cache is not None:
            attributes[n.CACHE] = record.cache
        if target is not None:
            upstream = self._tracing.upstreams.get(target.provider)
            attributes[n.PROVIDER] = upstream.genai if upstream is not None else target.provider
            attributes[n.TARGET] = target.key
        response: dict[str, Any] = {}
        model = self._response_model or (target.model if target is not None else None)
        if model is not None:
            response[n.RESPONSE_MODEL] = model
        if self._response_id is not None:
            response[n.RESPONSE_ID] = self._response_id
        if self._finish_reasons:
            response[n.FINISH_REASONS] = self._finish_reasons
        usage = record.usage
        if usage is not None:
            response[n.INPUT_TOKENS] = usage.prompt_tokens
            response[n.OUTPUT_TOKENS] = usage.completion_tokens
            if usage.cached_tokens:
                response[n.CACHE_READ_TOKENS] = usage.cached_tokens
            if usage.reasoning_tokens:
                response[n.REASONING_TOKENS] = usage.reasoning_tokens
        if cost is not None:
            attributes[n.COST] = cost
        if record.ttft_ms is not None:
            attributes[n.TTFT_MS] = round(record.ttft_ms, 3)
            attributes[n.TIME_TO_FIRST_CHUNK] = record.ttft_ms / 1000.0
        failed = record.status >= 500 or (record.error_type is not None and record.status < 400)
        if record.error_type is not None:
            attributes[n.ERROR_TYPE] = record.error_type
        redactor = self._tracing.capture
        if redactor is not None:
            if self._pieces is not None and self._pieces:
                reason = self._finish_reasons[-1] if self._finish_reasons else None
                choice = {"message": {"content": "".join(self._pieces)}, "finish_reason": reason}
                self._output = content.output_messages([choice], redactor)
            if self._output is not None:
                attributes[n.OUTPUT_MESSAGES] = self._output
        served = self._served
        if served is not None:
            served.set_attributes(response)
            if record.error_type is not None and record.status < 400:  # the stream broke after it began
                served.set_attribute(n.ERROR_TYPE, record.error_type)
                served.set_status(Status(StatusCode.ERROR))
            served.end(end_time=self._served_end)
        dangling = self._open
        if dangling is not None:  # cancelled midway: the client left, or the deadline struck
            dangling.set_attribute(n.ERROR_TYPE, record.error_type or "cancelled")
            dangling.end()
        attributes.update(response)
        span.set_attributes(attributes)
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _params(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    # chat's two spellings, or the Responses API's (an attempt's body is sent as its target takes it)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", body.get("max_output_tokens")))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes[n.REQUEST_MAX_TOKENS] = max_tokens
    for field, name in (("temperature", n.REQUEST_TEMPERATURE), ("top_p", n.REQUEST_TOP_P)):
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = float(value)
