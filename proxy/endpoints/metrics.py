"""``GET /metrics``: the process's metrics in Prometheus text format, when ``OTEL_METRICS_EXPORTER``
names ``prometheus``.

Rendered by prometheus_client from the OpenTelemetry Prometheus reader's registry (the format is theirs,
OpenMetrics when the scraper asks for it). With ``TIERGATE_METRICS_KEY`` set only that key may read it;
otherwise, when client keys are in use, any client key may.
"""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import NotFound
from proxy.gateway import Gateway


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    gateway.metrics_keys.authenticate(request.headers)
    registry = gateway.telemetry.prometheus if gateway.telemetry is not None else None
    if registry is None:
        raise NotFound("Metrics are off: set OTEL_METRICS_EXPORTER=prometheus to serve them here.", code="unknown_url")
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    # Collecting runs the observable callbacks and reads every series: ~ms, on the loop, once per scrape.
    return Response(encode(registry), media_type=None, headers={"content-type": content_type})
