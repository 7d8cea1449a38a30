"""The metrics: the GenAI conventions' histograms and tiergate's own counters and gauges.

Recorded once per finished request from its ledger record (and once per attempt in it), never from
inside dispatch. Each synchronous OpenTelemetry measurement costs a few microseconds of CPU (the SDK
cleans and hashes its attributes every time), so only the histograms are measured per request; the
counters are plain tallies here, read by observable counters when a reader collects (a scrape, an
export interval), which costs per series and collection rather than per request. Breaker states and
the ledger's queue are observed the same way, from the objects that own them.

Every label comes from the registry or from a short fixed set (a task named by a header that is not a
task is ``_OTHER``), so a client cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider

from proxy.breaker import Breakers
from proxy.ledger.records import SERVED_FROM_STORE, RequestRecord
from proxy.ledger.writer import LedgerWriter
from proxy.registry import EMBEDDING, Registry, Target
from proxy.telemetry import names as n
from proxy.telemetry.tracing import Upstream

OTHER = "_OTHER"
_STATES = ("closed", "open", "half_open")


class Metrics:
    def __init__(
        self,
        provider: MeterProvider,
        registry: Registry,
        upstreams: Mapping[str, Upstream],
        breakers: Breakers,
        ledger: LedgerWriter | None,
    ) -> None:
        self._tasks = frozenset(registry.tasks)
        self._embedding_tasks = frozenset(registry.tasks_of(EMBEDDING))  # the rest are chat
        self._upstreams = upstreams
        self._breakers = breakers
        self._ledger = ledger
        self._targets = sorted({t.key for tier in registry.tiers.values() for t in tier.targets})
        self._attributes: dict[tuple[str, str | None, str], dict[str, Any]] = {}  # per (target, error, operation)
        # tallies, read at collection: (task, tier, task_source, status) and (task, tier|cache)
        self._requests: dict[tuple[str, str, str, int], int] = {}
        self._cost: dict[tuple[str, str], float] = {}
        self._cache: dict[tuple[str, str], int] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        meter = provider.get_meter("tiergate")
        self._tokens = meter.create_histogram(
            n.TOKEN_USAGE, unit="{token}", description="Tokens per upstream call, by gen_ai.token.type"
        )
        self._client = meter.create_histogram(
            n.CLIENT_DURATION, unit="s", description="Upstream attempts: until the whole answer (a stream's end)"
        )
        self._server = meter.create_histogram(
            n.SERVER_DURATION, unit="s", description="Client requests: from arrival to the answer's end"
        )
        self._ttft = meter.create_histogram(
            n.SERVER_TTFT, unit="s", description="Streams: from a request's arrival to its first chunk sent"
        )
        meter.create_observable_counter(
            n.REQUESTS, [self._observe_requests], unit="{request}", description="Client requests"
        )
        meter.create_observable_counter(
            n.COST_METRIC,
            [self._observe_cost],
            unit="{USD}",
            description="What upstream calls cost, priced as the ledger does",
        )
        meter.create_observable_counter(
            n.CACHE_METRIC, [self._observe_cache], unit="{request}", description="Stored-answer lookups by result"
        )
        meter.create_observable_counter(
            n.FALLBACKS,
            [self._observe_fallbacks],
            unit="{request}",
            description="Requests served by (or last failed on) a target other than their route's first",
        )
        meter.create_observable_gauge(
            n.BREAKER, [self._observe_breakers], description="1 for each target's current circuit breaker state"
        )
        if ledger is not None:
            meter.create_observable_gauge(
                n.LEDGER_QUEUED,
                [self._observe_ledger("queued")],
                unit="{row}",
                description="Ledger rows not yet committed",
            )
            meter.create_observable_counter(
                n.LEDGER_WRITTEN, [self._observe_ledger("written")], unit="{row}", description="Ledger rows written"
            )
            meter.create_observable_counter(
                n.LEDGER_DROPPED, [self._observe_ledger("dropped")], unit="{row}", description="Ledger rows dropped"
            )

    def record(self, record: RequestRecord, cost: float | None) -> None:
        """Count one finished request and measure its durations and tokens."""
        task = record.task if record.task in self._tasks else OTHER
        tier = record.tier or ""
        key = (task, tier, record.task_source if task != OTHER else "", record.status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if cost:
            self._cost[(task, tier)] = self._cost.get((task, tier), 0.0) + cost
        if record.cache is not None:
            self._cache[(task, record.cache)] = self._cache.get((task, record.cache), 0) + 1
        if record.fallback:
            self._fallbacks[(task, tier)] = self._fallbacks.get((task, tier), 0) + 1
        operation = n.EMBEDDINGS if task in self._embedding_tasks else n.CHAT
        server: dict[str, Any] = {n.OPERATION: operation, n.TASK: task, n.TIER: tier}
        if record.error_type is not None:
            server[n.ERROR_TYPE] = record.error_type
        self._server.record(record.latency_ms / 1000.0, server)
        if record.ttft_ms is not None:
            self._ttft.record(record.ttft_ms / 1000.0, server)
        target, usage = record.target, record.usage
        if usage is not None and target is not None and record.cache not in SERVED_FROM_STORE:
            base = self._of(target, None, operation)
            self._tokens.record(usage.prompt_tokens, {**base, n.TOKEN_TYPE: "input"})
            self._tokens.record(usage.completion_tokens, {**base, n.TOKEN_TYPE: "output"})
        attempts = record.attempts
        if attempts:
            # A stream's served attempt lasts until the stream ends: the relay's time is upstream time too.
            relay = (record.upstream_ms or 0.0) - sum(a.latency_ms for a in attempts) if record.stream else 0.0
            last = attempts[-1]
            for attempt in attempts:
                seconds = attempt.latency_ms
                if attempt is last and attempt.error_type is None:
                    seconds += max(relay, 0.0)
                self._client.record(seconds / 1000.0, self._of(attempt.target, attempt.error_type, operation))

    def _of(self, target: Target, error: str | None, operation: str) -> dict[str, Any]:
        """The GenAI attributes of a call to ``target`` (built once per target, error and operation)."""
        key = (target.key, error, operation)
        attributes = self._attributes.get(key)
        if attributes is None:
            upstream = self._upstreams.get(target.provider) or Upstream(target.provider)
            attributes = {n.OPERATION: operation, n.PROVIDER: upstream.genai, n.REQUEST_MODEL: target.model}
            if upstream.address is not None:
                attributes[n.SERVER_ADDRESS] = upstream.address
            if upstream.port is not None:
                attributes[n.SERVER_PORT] = upstream.port
            if error is not None:
                attributes[n.ERROR_TYPE] = error
            # Bounded: targets come from the registry, errors from a fixed set of codes.
            self._attributes[key] = attributes
        return attributes

    # --- read at collection (a scrape or an export, maybe on the exporter's thread) ------------------
    # list(d.items()) copies in one step under the GIL, while the loop may be adding a key.

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        for (task, tier, source, status), count in list(self._requests.items()):
            yield Observation(count, {n.TASK: task, n.TIER: tier, n.TASK_SOURCE: source, n.HTTP_STATUS: status})

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        for (task, tier), usd in list(self._cost.items()):
            yield Observation(usd, {n.TASK: task, n.TIER: tier})

    def _observe_cache(self, options: CallbackOptions) -> Iterable[Observation]:
        for (task, result), count in list(self._cache.items()):
            yield Observation(count, {n.TASK: task, n.CACHE: result})

    def _observe_fallbacks(self, options: CallbackOptions) -> Iterable[Observation]:
        for (task, tier), count in list(self._fallbacks.items()):
            yield Observation(count, {n.TASK: task, n.TIER: tier})

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        for key in self._targets:
            current = self._breakers.state(key)
            for state in _STATES:
                yield Observation(1 if state == current else 0, {n.TARGET: key, n.BREAKER_STATE: state})

    def _observe_ledger(self, field: str) -> Any:
        ledger = self._ledger
        assert ledger is not None

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(int(ledger.health()[field]))

        return observe
