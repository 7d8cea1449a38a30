"""Traces over the wire: SDK -> tiergate -> fake upstreams, spans exported by OTLP/HTTP to a fake collector.

tiergate is configured as any OpenTelemetry service is, through OTEL_* variables (set per test); its
BatchSpanProcessor sends protobuf to ``FakeCollector`` (an ASGI app on loopback decoding it with
opentelemetry-proto), and each test waits, bounded, until the spans it expects have arrived. The two
fake upstreams record the headers each attempt was sent with, so the trace context tiergate propagates
is checked against the attempt spans it exported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from starlette.types import Receive, Scope, Send

from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.fakes.otlp import FakeCollector, ReceivedSpan
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from tests.conftest import CLOSED_URL, ProxyFactory, assert_consumed, sdk

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER = [{"role": "user", "content": "Summarise the outage report"}]
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Upstream:
    """A fake OpenAI server for the module; its app is a fresh ``FakeOpenAI`` per test."""

    def __init__(self) -> None:
        self.fake = FakeOpenAI()
        self.url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fake(scope, receive, send)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _servers() -> AsyncIterator[tuple[Upstream, Upstream, FakeCollector, str]]:
    primary, secondary, collector = Upstream(), Upstream(), FakeCollector()
    async with serve(primary) as primary.url, serve(secondary) as secondary.url, serve(collector) as collector_url:
        yield primary, secondary, collector, collector_url


@pytest.fixture
def primary(_servers: tuple[Upstream, Upstream, FakeCollector, str]) -> Iterator[Upstream]:
    upstream = _servers[0]
    upstream.fake = FakeOpenAI()
    yield upstream
    assert_consumed(upstream.fake)


@pytest.fixture
def secondary(_servers: tuple[Upstream, Upstream, FakeCollector, str]) -> Iterator[Upstream]:
    upstream = _servers[1]
    upstream.fake = FakeOpenAI()
    yield upstream
    assert_consumed(upstream.fake)


@pytest.fixture
def collector(
    _servers: tuple[Upstream, Upstream, FakeCollector, str], monkeypatch: pytest.MonkeyPatch
) -> FakeCollector:
    """The fake collector, emptied, and tiergate's OTEL_* variables pointing at it."""
    fake = _servers[2]
    fake.reset()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", _servers[3])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0ken")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")  # ms: export as soon as spans end
    return fake


def registry(primary: Upstream, secondary: Upstream, *, secondary_url: str | None = None) -> Registry:
    """Tier ``small`` = primary::model-a (temperature 0.2), secondary::model-b; task ``t`` (the default) on it;
    model-a priced by an override so spans carry a cost."""
    return build(
        {
            "providers": {
                "primary": {"type": "openai", "base_url": primary.url + "/v1", "api_key": "sk-p-000000"},
                "secondary": {
                    "type": "openai",
                    "base_url": (secondary_url or secondary.url) + "/v1",
                    "api_key": "sk-s-000000",
                },
            },
            "tiers": {
                "small": {
                    "targets": [
                        {"provider": "primary", "model": "model-a", "params": {"temperature": 0.2}},
                        "secondary::model-b",
                    ]
                },
            },
            "tasks": {"t": {"tier": "small"}},
            "prices": {"model-a": {"input": 1.0, "output": 2.0}},
            "policy": {"retries": 0, "breaker": {"failures": 100, "cooldown_s": 30}},
        }
    )


def tree(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The one SERVER span and its CLIENT children in attempt order; fails on anything else."""
    servers = [s for s in spans if s.kind == "SERVER"]
    assert len(servers) == 1, [(s.name, s.kind) for s in spans]
    root = servers[0]
    children = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.attributes["tiergate.attempt"])
    assert len(children) == len(spans) - 1
    for child in children:
        assert (child.trace_id, child.parent_span_id) == (root.trace_id, root.span_id)
    return root, children


def spans_of(n_attempts: int) -> Any:
    return lambda spans: len(spans) >= n_attempts + 1


def traceparent(span: ReceivedSpan) -> str:
    """The W3C header that names ``span`` as the parent: version, trace id, span id (flags left out)."""
    return f"00-{span.trace_id}-{span.span_id}"


def sent_parent(headers: dict[str, str]) -> str:
    """A traceparent header as sent, without its flags (sampled, and the SDK's random-trace-id bit)."""
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert int(flags, 16) & 1  # sampled
    return f"{version}-{trace_id}-{span_id}"


async def test_a_plain_request_is_one_server_span_with_one_client_span_per_attempt(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream, collector: FakeCollector
) -> None:
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url, headers={"X-Task-Type": "t"})
        reply = await client.chat.completions.create(model="auto", messages=USER, max_tokens=50)  # type: ignore[arg-type]
        await client.close()
        spans = await collector.wait_for(spans_of(1))
    root, (attempt,) = tree(spans)

    assert root.name == "chat auto"
    assert root.status == "UNSET"
    usage = reply.usage
    assert usage is not None
    assert root.attributes == {
        "gen_ai.operation.name": "chat",
        "http.route": "/v1/chat/completions",
        "gen_ai.request.model": "auto",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "model-a",
        "gen_ai.response.id": reply.id,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "tiergate.task": "t",
        "tiergate.task_source": "header",
        "tiergate.tier": "small",
        "tiergate.target": "primary::model-a",
        "tiergate.attempt": 1,
        "tiergate.fallback": False,
        "tiergate.cost_usd": pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6),
        "http.response.status_code": 200,
    }
    assert attempt.name == "chat model-a"
    port = int(primary.url.rsplit(":", 1)[1])
    assert attempt.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "model-a",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.2,
        "server.address": "127.0.0.1",
        "server.port": port,
        "tiergate.target": "primary::model-a",
        "tiergate.tier": "small",
        "tiergate.attempt": 1,
        "http.response.status_code": 200,
        "gen_ai.response.model": "model-a",
        "gen_ai.response.id": reply.id,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }
    assert root.start_ns <= attempt.start_ns <= attempt.end_ns <= root.end_ns
    assert root.resource["service.name"] == "tiergate"
    assert root.resource["deployment.environment.name"] == "test"
    assert root.scope == "tiergate"
    # the attempt's context went upstream: the provider's spans would be its children
    (sent,) = primary.fake.requests
    assert sent_parent(sent.headers) == traceparent(attempt)
    assert collector.headers[0]["x-collector-token"] == "t0ken"  # OTEL_EXPORTER_OTLP_HEADERS, read by the exporter


async def test_a_client_traceparent_is_continued_and_the_attempt_is_propagated(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream, collector: FakeCollector
) -> None:
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "app=1"})
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
        spans = await collector.wait_for(spans_of(1))
    root, (attempt,) = tree(spans)
    assert (root.trace_id, root.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    (sent,) = primary.fake.requests
    assert sent_parent(sent.headers) == traceparent(attempt)
    assert sent.headers["tracestate"] == "app=1"  # the client's trace state travels with its trace


async def test_a_stream_ends_its_span_when_the_stream_ends_with_time_to_first_chunk(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream, collector: FakeCollector
) -> None:
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url)
        stream = await client.chat.completions.create(model="tier:small", messages=USER, stream=True)  # type: ignore[arg-type]
        chunks = [chunk async for chunk in stream]
        await client.close()
        spans = await collector.wait_for(spans_of(1))
    root, (attempt,) = tree(spans)
    assert root.name == "chat tier:small"
    ttft = root.attributes["tiergate.ttft_ms"]
    assert 0 < ttft <= (root.end_ns - root.start_ns) / 1e6
    assert root.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttft / 1000, rel=1e-3)
    assert root.attributes["gen_ai.response.id"] == chunks[0].id
    assert root.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert root.attributes["gen_ai.usage.output_tokens"] > 0  # tiergate asked for the usage chunk
    # the attempt that served lasts as long as its stream
    assert attempt.attributes["gen_ai.usage.output_tokens"] == root.attributes["gen_ai.usage.output_tokens"]
    assert attempt.end_ns >= root.start_ns + ttft * 1e6  # not when its first chunk arrived: after it was sent
    assert root.end_ns >= attempt.end_ns


async def test_a_failover_has_an_attempt_span_for_each_try(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream, collector: FakeCollector
) -> None:
    primary.fake.push(Behavior(status=503))
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url)
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
        spans = await collector.wait_for(spans_of(2))
    root, (first, second) = tree(spans)
    assert (first.status, first.attributes["http.response.status_code"]) == ("ERROR", 503)
    assert first.attributes["error.type"] == "server_error"
    assert first.attributes["tiergate.target"] == "primary::model-a"
    assert (second.status, second.attributes["tiergate.target"]) == ("UNSET", "secondary::model-b")
    assert second.attributes["gen_ai.response.model"] == "model-b"
    assert "gen_ai.response.model" not in first.attributes
    assert first.end_ns <= second.start_ns
    assert root.attributes["tiergate.fallback"] is True
    assert root.attributes["tiergate.attempt"] == 2
    assert root.attributes["gen_ai.response.model"] == "model-b"
    assert root.status == "UNSET"
    assert [sent_parent(r.headers) for r in (*primary.fake.requests, *secondary.fake.requests)] == [
        traceparent(first),
        traceparent(second),
    ]


async def test_a_failed_request_marks_its_spans_as_errors(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream, collector: FakeCollector
) -> None:
    primary.fake.push(Behavior(status=500))
    async with start_proxy(registry(primary, secondary, secondary_url=CLOSED_URL)) as url:
        client = sdk(url)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
        spans = await collector.wait_for(spans_of(2))
    root, (first, second) = tree(spans)
    assert (root.status, root.attributes["http.response.status_code"]) == ("ERROR", 500)
    assert root.attributes["error.type"] == "server_error"  # the most telling failure: the 500, not the refusal
    assert (first.status, first.attributes["error.type"]) == ("ERROR", "server_error")
    assert (second.status, second.attributes["error.type"]) == ("ERROR", "upstream_unreachable")
    assert "http.response.status_code" not in second.attributes  # it never answered
    assert "gen_ai.usage.input_tokens" not in root.attributes
    assert "tiergate.cost_usd" not in root.attributes


async def test_an_unreachable_collector_costs_a_request_nothing(
    start_proxy: ProxyFactory,
    primary: Upstream,
    secondary: Upstream,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", CLOSED_URL)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url)
        reply = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    assert reply.status_code == 200
    assert collector.spans == []


async def test_without_tracing_no_trace_context_goes_upstream(
    start_proxy: ProxyFactory, primary: Upstream, secondary: Upstream
) -> None:
    # A client's traceparent is not forwarded either: tiergate forwards client headers by allow-list, and
    # an upstream span parented on the app's span would hide that a proxy stood between them.
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "app=1"})
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    (sent,) = primary.fake.requests
    assert "traceparent" not in sent.headers
    assert "tracestate" not in sent.headers


async def test_metrics_are_pushed_over_otlp_too(
    start_proxy: ProxyFactory,
    primary: Upstream,
    secondary: Upstream,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "20")  # ms: read by the SDK's periodic reader
    async with start_proxy(registry(primary, secondary)) as url:
        client = sdk(url)
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
        requests = await collector.wait_for_metric("tiergate.requests")
        tokens = await collector.wait_for_metric("gen_ai.client.token.usage")
    assert collector.spans == []  # traces stay off
    labels = collector.attributes(requests[-1])
    assert labels == {"tiergate.task": "t", "tiergate.tier": "small", "tiergate.task_source": "default",
                      "http.response.status_code": 200}  # fmt: skip
    assert requests[-1].as_int == 1
    kinds = {collector.attributes(p)["gen_ai.token.type"] for p in tokens}
    assert kinds == {"input", "output"}
    assert collector.headers[-1]["x-collector-token"] == "t0ken"
