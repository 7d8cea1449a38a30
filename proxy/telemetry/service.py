"""``Telemetry``: the per-process tracing and metrics the gateway holds; ``None`` there when all is off.

The edge asks it for a request's span (``request``) and hands it each finished ledger record
(``finished``). A record is priced here, once, with the ledger's own ``Pricer``, only because telemetry
is on (the ledger prices its rows again in its writer, off the request path); with telemetry off
nothing is priced on the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxy.breaker import Breakers
from proxy.ledger.records import SERVED_FROM_STORE, RequestRecord
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.providers.base import Provider
from proxy.redact import Redactor
from proxy.registry import Registry
from proxy.telemetry import pipeline
from proxy.telemetry.config import TelemetryConfig
from proxy.telemetry.metrics import Metrics
from proxy.telemetry.pipeline import Pipeline
from proxy.telemetry.tracing import RequestSpan, Tracing, Upstream

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("tiergate.telemetry")


class Telemetry:
    def __init__(self, pipe: Pipeline, tracing: Tracing | None, metrics: Metrics | None, pricer: Pricer) -> None:
        self._pipeline = pipe
        self.tracing = tracing
        self.metrics = metrics
        self._pricer = pricer

    @classmethod
    def start(
        cls,
        config: TelemetryConfig,
        *,
        registry: Registry,
        providers: Mapping[str, Provider],
        breakers: Breakers,
        ledger: LedgerWriter | None,
        pricer: Pricer,
        redactor: Redactor,
    ) -> Telemetry | None:
        """What ``config`` turns on, or ``None`` when it turns nothing on."""
        if not (config.tracing or config.metering):
            return None
        pipe = pipeline.build(config)
        upstreams = {name: _upstream(provider) for name, provider in providers.items()}
        tracing = None
        if pipe.tracer_provider is not None:
            tracing = Tracing(pipe.tracer_provider, upstreams, redactor if config.capture_content else None)
        metrics = None
        if pipe.meter_provider is not None:
            metrics = Metrics(pipe.meter_provider, registry, upstreams, breakers, ledger)
        log.info(
            "traces %s, metrics %s%s",
            ", ".join(config.traces) or ("in code" if config.span_exporters else "off"),
            ", ".join(config.metrics) or ("in code" if config.metric_readers else "off"),
            "; message content captured (redacted)" if config.capture_content and tracing else "",
        )
        return cls(pipe, tracing, metrics, pricer)

    @property
    def prometheus(self) -> CollectorRegistry | None:
        """The registry ``GET /metrics`` renders, when ``OTEL_METRICS_EXPORTER`` names prometheus."""
        return self._pipeline.prometheus

    def request(self, headers: Mapping[str, str]) -> RequestSpan | None:
        """A client request's span (continuing the client's trace), when tracing is on."""
        return self.tracing.request(headers) if self.tracing is not None else None

    def background(self) -> RequestSpan | None:
        """A background generation's span, when tracing is on."""
        return self.tracing.background() if self.tracing is not None else None

    def finished(self, record: RequestRecord, span: RequestSpan | None) -> None:
        """A request has ended: end its span and record its metrics (never raises)."""
        try:
            cost = self._cost(record)
            if span is not None:
                span.finish(record, cost)
            if self.metrics is not None:
                self.metrics.record(record, cost)
        except Exception:  # noqa: BLE001 - telemetry never fails a request
            log.exception("telemetry: recording request %s failed", record.id)

    async def aclose(self) -> None:
        """Flush what is buffered (bounded), then stop the exporters."""
        await self._pipeline.aclose()

    def _cost(self, record: RequestRecord) -> float | None:
        # As the ledger's finalize prices it: the served target's price of the reported usage; an answer
        # from the store cost nothing now. A stream without usage is estimated only in the writer: no cost here.
        if record.usage is None or record.target is None:
            return None
        if record.cache in SERVED_FROM_STORE:
            return 0.0
        priced = self._pricer.cost(record.target, record.usage)
        return priced.usd if priced is not None else None


def _upstream(provider: Provider) -> Upstream:
    url = urlsplit(provider.config.base_url) if provider.config.base_url else None
    if url is None or not url.hostname:
        return Upstream(provider.genai_provider)
    port = url.port or (443 if url.scheme == "https" else 80)
    return Upstream(provider.genai_provider, url.hostname, port)
