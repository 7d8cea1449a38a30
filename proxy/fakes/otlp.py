"""A fake OpenTelemetry collector: an ASGI app that receives OTLP/HTTP (protobuf) as a real one does.

``POST /v1/traces`` and ``POST /v1/metrics`` are decoded with the OpenTelemetry project's own protobuf
definitions (``opentelemetry-proto``), so a test asserts what went over the wire, not what the SDK meant
to send. Spans are kept as plain ``ReceivedSpan`` values (ids in hex, attributes as Python values);
metric exports are kept as their decoded requests; every request's headers are kept too. ``wait_for``
lets a test wait until the spans it expects have arrived (the exporter sends in batches, in its own
time), with a bound, never a sleep. ``count_only`` keeps only counts (bench/otlp_sink.py, for load).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.types import Receive, Scope, Send

KINDS = {
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
STATUSES = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK", Status.STATUS_CODE_ERROR: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    start_ns: int
    end_ns: int
    resource: dict[str, Any]
    scope: str
    links: tuple[str, ...] = ()  # linked span ids


@dataclass
class FakeCollector:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    span_count: int = 0
    count_only: bool = False
    _arrived: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        path = scope["path"]
        if scope["method"] != "POST" or path not in ("/v1/traces", "/v1/metrics"):
            await _respond(send, 404, b"")
            return
        if headers.get("content-type") != "application/x-protobuf":
            await _respond(send, 415, b"")
            return
        if not self.count_only:
            self.headers.append(headers)
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            self._spans(request)
            reply = ExportTraceServiceResponse().SerializeToString()
        else:
            self.metrics.append(ExportMetricsServiceRequest.FromString(body))
            reply = ExportMetricsServiceResponse().SerializeToString()
        if self._arrived is not None:
            self._arrived.set()
        await _respond(send, 200, reply)

    def reset(self) -> None:
        self.spans.clear()
        self.metrics.clear()
        self.headers.clear()
        self.span_count = 0

    async def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received, once ``done(spans)`` holds; ``TimeoutError`` if it has not within ``timeout``."""
        await self._until(lambda: done(self.spans), timeout)
        return list(self.spans)

    async def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[Any]:
        """The data points of every export of metric ``name`` so far, once one has arrived."""
        await self._until(lambda: bool(self.points(name)), timeout)
        return self.points(name)

    def points(self, name: str) -> list[Any]:
        """Every data point received for metric ``name`` (sums, gauges and histograms alike)."""
        found: list[Any] = []
        for request in self.metrics:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name == name:
                            data = getattr(metric, metric.WhichOneof("data"))
                            found.extend(data.data_points)
        return found

    @staticmethod
    def attributes(point: Any) -> dict[str, Any]:
        """A data point's attributes as Python values."""
        return _attributes(point.attributes)

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._arrived = asyncio.Event()
                await self._arrived.wait()

    def _spans(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.span_count += len(scope_spans.spans)
                if self.count_only:
                    continue
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            status=STATUSES.get(span.status.code, str(span.status.code)),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            resource=resource,
                            scope=scope_spans.scope.name,
                            links=tuple(link.span_id.hex() for link in span.links),
                        )
                    )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/x-protobuf"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
