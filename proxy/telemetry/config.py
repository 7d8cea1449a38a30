"""Which telemetry is on, read once from the standard OpenTelemetry variables.

    OTEL_SDK_DISABLED=true                everything off, whatever else is set
    OTEL_TRACES_EXPORTER=otlp,console     span exporters (``none`` or unset: no tracing at all)
    OTEL_METRICS_EXPORTER=prometheus,otlp ``prometheus``: GET /metrics on tiergate's own port;
                                          ``otlp``/``console``: pushed by a periodic reader
    OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL   ``http/protobuf`` (the default here) or ``grpc``
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true   prompts and completions on the request span

Unset means off, unlike the OpenTelemetry SDK's auto-configuration (whose default exporter is ``otlp``):
tiergate is not auto-instrumented, and an unconfigured proxy must pay nothing for telemetry. Endpoints,
headers, timeouts, the resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), the sampler and the
batch and export intervals are read by the SDK and its exporters themselves.

A mistake (an exporter or protocol tiergate cannot provide) is a ``ValueError`` naming the variable,
raised when the app is built: ``tiergate serve`` reports it in one line instead of starting half-blind.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Signal = Literal["traces", "metrics"]

# exporter name -> the module that must be importable for it (checked when the config is read)
_MODULES: dict[str, str] = {
    "otlp_proto_http": "opentelemetry.exporter.otlp.proto.http",
    "otlp_proto_grpc": "opentelemetry.exporter.otlp.proto.grpc",
    "console": "opentelemetry.sdk",
    "prometheus": "opentelemetry.exporter.prometheus",
}
_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGES = {"otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc"}
_ALLOWED: dict[Signal, tuple[str, ...]] = {
    "traces": ("otlp", "otlp_proto_http", "otlp_proto_grpc", "console"),
    "metrics": ("otlp", "otlp_proto_http", "otlp_proto_grpc", "console", "prometheus"),
}
_ON = ("true", "1", "yes", "on", "span_only", "span_and_event")
_OFF = ("", "false", "0", "no", "off", "no_content")


@dataclass(frozen=True)
class TelemetryConfig:
    """The exporters per signal (resolved names: ``otlp`` is already ``otlp_proto_http`` or ``..._grpc``).

    ``span_exporters`` and ``metric_readers`` are sinks given in code rather than by name (the tests'
    in-memory exporter and reader); spans given in code are exported as they end, not batched.
    """

    traces: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    capture_content: bool = False
    span_exporters: tuple[Any, ...] = field(default=(), compare=False)
    metric_readers: tuple[Any, ...] = field(default=(), compare=False)

    @property
    def tracing(self) -> bool:
        return bool(self.traces or self.span_exporters)

    @property
    def metering(self) -> bool:
        return bool(self.metrics or self.metric_readers)

    @property
    def prometheus(self) -> bool:
        return "prometheus" in self.metrics

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TelemetryConfig:
        """The configuration the variables in ``environ`` describe; ``ValueError`` for one tiergate cannot run."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        return cls(
            traces=_exporters(environ, "traces"),
            metrics=_exporters(environ, "metrics"),
            capture_content=_capture(environ),
        )


def _exporters(environ: Mapping[str, str], signal: Signal) -> tuple[str, ...]:
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = [n.strip().lower() for n in environ.get(variable, "").split(",") if n.strip()]
    if names == ["none"]:
        return ()
    resolved: list[str] = []
    for name in names:
        if name not in _ALLOWED[signal]:
            raise ValueError(
                f"{variable}: unknown exporter {name!r} (tiergate has {', '.join(_ALLOWED[signal])}, none)"
            )
        if name == "otlp":
            name = _protocol(environ, signal)
        if importlib.util.find_spec(_MODULES[name]) is None:
            package = _PACKAGES.get(name, "tiergate's dependencies")
            raise ValueError(f"{variable}: {name} needs {package} installed (pip install {package})")
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


def _protocol(environ: Mapping[str, str], signal: Signal) -> str:
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip()
        if value:
            if value not in _BY_PROTOCOL:
                raise ValueError(f"{variable}: {value!r} is not supported (use {' or '.join(_BY_PROTOCOL)})")
            return _BY_PROTOCOL[value]
    # The specification's default for SDKs; the Python SDK's own is grpc, which tiergate does not ship.
    return _BY_PROTOCOL["http/protobuf"]


def _capture(environ: Mapping[str, str]) -> bool:
    variable = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
    value = environ.get(variable, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    # EVENT_ONLY asks for log events, which tiergate does not emit: say so rather than ignore it.
    raise ValueError(f"{variable}: {value!r} is not supported (use true, SPAN_ONLY, SPAN_AND_EVENT or false)")
