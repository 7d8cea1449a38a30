"""The OpenTelemetry SDK's providers for one process, built from a ``TelemetryConfig``; never global.

Exporters are picked by name from a table (as uvicorn picks its loop), imported only when named, and
constructed without arguments so that each reads its own standard variables (endpoint, headers, timeout,
compression, temperature). Spans are exported in batches on the SDK's own thread (``BatchSpanProcessor``)
and pushed metrics by a ``PeriodicExportingMetricReader``: nothing waits for a collector on the request
path, and an unreachable one is the exporter's warning in the log, never a request's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from proxy.telemetry import names
from proxy.telemetry.config import TelemetryConfig

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("tiergate.telemetry")

# name -> "module:Class"
SPAN_EXPORTERS: dict[str, str] = {
    "otlp_proto_http": "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
    "otlp_proto_grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
    "console": "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
}
METRIC_EXPORTERS: dict[str, str] = {
    "otlp_proto_http": "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
    "otlp_proto_grpc": "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
    "console": "opentelemetry.sdk.metrics.export:ConsoleMetricExporter",
}
_SHUTDOWN_S = 5.0  # at most this long flushing at exit; a collector that is down must not hold up a stop


@dataclass
class Pipeline:
    """The providers (either may be None: that signal is off) and the Prometheus registry /metrics serves."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    prometheus: CollectorRegistry | None = None

    async def aclose(self) -> None:
        """Flush and stop, off the loop and bounded: an exporter retrying a dead collector may take long."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                await _bounded(provider.shutdown, _SHUTDOWN_S)


def build(config: TelemetryConfig) -> Pipeline:
    """Providers for what ``config`` turns on."""
    resource = _resource()
    tracer_provider = None
    if config.tracing:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for name in config.traces:
            tracer_provider.add_span_processor(BatchSpanProcessor(_load(SPAN_EXPORTERS[name])()))
        for exporter in config.span_exporters:
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = None
    prometheus = None
    if config.metering:
        readers: list[MetricReader] = []
        for name in config.metrics:
            if name == "prometheus":
                from opentelemetry.exporter.prometheus import PrometheusMetricReader
                from prometheus_client import CollectorRegistry

                # A registry of this app's own, not prometheus_client's process-wide default one.
                prometheus = CollectorRegistry(auto_describe=True)
                readers.append(PrometheusMetricReader(registry=prometheus))
            else:
                readers.append(PeriodicExportingMetricReader(_load(METRIC_EXPORTERS[name])()))
        readers.extend(config.metric_readers)
        meter_provider = MeterProvider(
            metric_readers=readers, resource=resource, views=_views(), shutdown_on_exit=False
        )
    return Pipeline(tracer_provider, meter_provider, prometheus)


def _resource() -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours is only the default name.
    resource = Resource.create({SERVICE_VERSION: _version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "tiergate"}))
    return resource


def _views() -> list[View]:
    """The conventions' advised buckets for each histogram (the SDK's defaults suit milliseconds)."""
    buckets = {
        names.TOKEN_USAGE: names.TOKEN_BUCKETS,
        names.CLIENT_DURATION: names.DURATION_BUCKETS,
        names.SERVER_DURATION: names.DURATION_BUCKETS,
        names.SERVER_TTFT: names.TTFT_BUCKETS,
    }
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(boundaries=bounds))
        for name, bounds in buckets.items()
    ]


def _load(path: str) -> Callable[[], Any]:
    module, _, attribute = path.partition(":")
    loaded: Callable[[], Any] = getattr(importlib.import_module(module), attribute)
    return loaded


def _version() -> str:
    try:
        return version("tiergate")
    except PackageNotFoundError:
        return "unknown"


async def _bounded(stop: Callable[[], object], timeout: float) -> None:
    # A daemon thread, not the loop's executor: a thread stuck on a dead collector must not keep the
    # process alive at exit (the executor's threads are joined then).
    done = asyncio.get_running_loop().create_future()

    def run() -> None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - a failed flush is worth a line in the log, not a failed stop
            log.exception("telemetry: shutting an exporter down failed")
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                done.get_loop().call_soon_threadsafe(_resolve, done)

    threading.Thread(target=run, name="tiergate-telemetry-stop", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        log.warning("telemetry: exporters did not flush within %.0f s; unexported data is dropped", timeout)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
