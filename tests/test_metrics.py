"""Metrics and the spans that need no wire: GET /metrics parsed by prometheus_client's own parser, its
keys, and (with the SDK's in-memory span exporter) content capture, cached answers and background
generations. SDK -> tiergate -> fake upstream over loopback, as everywhere."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proxy import rules
from proxy.cli import main
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.registry import Registry
from proxy.telemetry.config import TelemetryConfig
from tests.conftest import CLIENT_KEY, CLOSED_URL, RULES, UPSTREAM_KEY, ProxyFactory, sdk

SUMMARY = {"X-Task-Type": "summary"}
USER = [{"role": "user", "content": "Summarise: the deploy paused and resumed"}]
PROMETHEUS = TelemetryConfig(metrics=("prometheus",))


def registry(upstream_url: str, **task_cache: dict[str, Any]) -> Registry:
    """The shipped rules.yaml on the fake (anthropic on a closed port), no retries, a breaker that opens on
    the first failure; ``cache:`` on the tasks named."""
    doc = yaml.safe_load(RULES.read_text())
    doc["policy"] = {"retries": 0, "breaker": {"failures": 1, "cooldown_s": 600}}
    for tier in doc["tiers"].values():
        tier.pop("policy", None)
    for task, policy in task_cache.items():
        doc["tasks"][task]["cache"] = policy
    env = {"OPENAI_BASE_URL": upstream_url + "/v1", "OPENAI_API_KEY": UPSTREAM_KEY, "ANTHROPIC_BASE_URL": CLOSED_URL}
    return rules.loads(yaml.safe_dump(doc, sort_keys=False), environ=env)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    matching = [s for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, [s.labels for s in found if s.name == name])
    return matching[0].value


async def scrape(url: str, key: str | None = CLIENT_KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.get(url + "/metrics", headers=headers)


async def test_metrics_are_scraped_as_prometheus_text(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")  # as an operator turns it on
    db = tmp_path / "l.db"
    async with start_proxy(registry(upstream_url), db=str(db)) as url:
        client = sdk(url, headers=SUMMARY)
        replies = [await client.chat.completions.create(model="auto", messages=USER) for _ in range(2)]  # type: ignore[arg-type]
        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
        _ = [chunk async for chunk in stream]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="auto", messages=USER, extra_headers={"X-Task-Type": "n0pe"})  # type: ignore[arg-type]
        # title_generation runs on small: gpt-5.4-nano answers 503, the anthropic target is down, so the
        # fallback tier (mid) serves; both small targets' breakers open (failures: 1)
        fake.push(Behavior(status=503))
        await client.chat.completions.create(  # type: ignore[call-overload]
            model="auto", messages=USER, extra_headers={"X-Task-Type": "title_generation"}
        )
        await client.close()
        scraped = await scrape(url)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    found = samples(scraped.text)

    def requests(**labels: str) -> float:
        return value(found, "tiergate_requests_total", **labels)

    assert requests(tiergate_task="summary", tiergate_tier="mid", tiergate_task_source="header") == 3
    assert requests(tiergate_task="_OTHER", http_response_status_code="400") == 1  # a header that is no task
    assert requests(tiergate_task="title_generation", tiergate_tier="mid", http_response_status_code="200") == 1
    assert value(found, "tiergate_fallbacks_total", tiergate_task="title_generation", tiergate_tier="mid") == 1

    mini = {"gen_ai_request_model": "gpt-5.4-mini", "gen_ai_provider_name": "openai"}
    usage = [r.usage for r in replies]
    assert all(u is not None for u in usage)
    assert value(found, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **mini) == 4
    assert value(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **mini) >= sum(
        u.completion_tokens for u in usage if u is not None
    )
    assert value(found, "gen_ai_client_operation_duration_seconds_count", error_type="server_error") == 1
    assert value(found, "gen_ai_client_operation_duration_seconds_count", error_type="upstream_unreachable") == 1
    assert value(found, "gen_ai_server_time_to_first_token_seconds_count", tiergate_task="summary") == 1
    assert value(found, "gen_ai_server_request_duration_seconds_count", tiergate_task="summary") == 3

    def breaker(target: str, state: str) -> float:
        return value(found, "tiergate_breaker", tiergate_target=target, tiergate_breaker_state=state)

    assert breaker("openai::gpt-5.4-nano", "open") == 1 and breaker("openai::gpt-5.4-nano", "closed") == 0
    assert breaker("openai::gpt-5.4-mini", "closed") == 1
    # the ledger: every row is either committed or still queued, whenever the scrape looks
    rows = value(found, "tiergate_ledger_written_total") + value(found, "tiergate_ledger_queued")
    assert rows == 5 and value(found, "tiergate_ledger_dropped_total") == 0
    cost = value(found, "tiergate_cost_usd_total", tiergate_task="summary", tiergate_tier="mid")

    # priced as the ledger priced the same calls
    with sqlite3.connect(db) as conn:
        (ledger_cost,) = conn.execute("SELECT sum(cost_usd) FROM requests WHERE task = 'summary'").fetchone()
    assert cost == pytest.approx(ledger_cost) and cost > 0


async def test_metrics_want_a_key_when_keys_are_set(start_proxy: ProxyFactory, upstream_url: str) -> None:
    async with start_proxy(registry(upstream_url), api_keys=(CLIENT_KEY,), telemetry=PROMETHEUS) as url:
        assert (await scrape(url, key=None)).status_code == 401
        assert (await scrape(url, key="sk-wrong-2222")).status_code == 401
        assert (await scrape(url)).status_code == 200
    metrics_key = "tg-metrics-3333-secret"
    async with start_proxy(
        registry(upstream_url), api_keys=(CLIENT_KEY,), metrics_key=metrics_key, telemetry=PROMETHEUS
    ) as url:
        # with a metrics key, only it reads the metrics: a client key spends money, a scraper needs none
        assert (await scrape(url)).status_code == 401
        assert (await scrape(url, key=metrics_key)).status_code == 200


async def test_metrics_are_not_found_when_off(proxy_url: str) -> None:
    off = await scrape(proxy_url)
    assert off.status_code == 404
    assert "OTEL_METRICS_EXPORTER=prometheus" in off.json()["error"]["message"]


# --- spans in memory ----------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(start_proxy: ProxyFactory, upstream_url: str, exporter: InMemorySpanExporter) -> AsyncIterator[str]:
    config = TelemetryConfig(span_exporters=(exporter,), capture_content=True)
    async with start_proxy(registry(upstream_url, summary={"ttl_s": 600}), telemetry=config) as url:
        yield url


def finished(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


async def test_captured_content_is_redacted(traced: str, exporter: InMemorySpanExporter) -> None:
    secret = f"my key is {UPSTREAM_KEY} and theirs sk-proj-abcdefghijklmnop"
    client = sdk(traced, headers={"X-Task-Type": "agent"})
    reply = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": secret}])  # type: ignore[arg-type]
    await client.close()
    (root,) = finished(exporter, SpanKind.SERVER)
    attributes = dict(root.attributes or {})
    captured = str(attributes["gen_ai.input.messages"])
    assert UPSTREAM_KEY not in captured and "sk-proj-abcdefghijklmnop" not in captured
    assert '"role":"user"' in captured and "my key is ***" in captured
    assert str(reply.choices[0].message.content)[:20] in str(attributes["gen_ai.output.messages"])


async def test_a_streamed_completion_is_captured_whole(traced: str, exporter: InMemorySpanExporter) -> None:
    client = sdk(traced, headers={"X-Task-Type": "agent"})
    stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()
    (root,) = finished(exporter, SpanKind.SERVER)
    output = orjson.loads(str((root.attributes or {})["gen_ai.output.messages"]))
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]


async def test_content_is_not_recorded_unless_opted_in(
    start_proxy: ProxyFactory, upstream_url: str, exporter: InMemorySpanExporter
) -> None:
    async with start_proxy(registry(upstream_url), telemetry=TelemetryConfig(span_exporters=(exporter,))) as url:
        client = sdk(url, headers=SUMMARY)
        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
        _ = [chunk async for chunk in stream]
        await client.close()
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(span.attributes or {})


async def test_a_cached_answer_has_no_attempt_span(traced: str, exporter: InMemorySpanExporter) -> None:
    client = sdk(traced, headers=SUMMARY)
    for _ in range(2):
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
    await client.close()
    miss, hit = finished(exporter, SpanKind.SERVER)
    assert len(finished(exporter, SpanKind.CLIENT)) == 1
    assert (miss.attributes or {})["tiergate.cache"] == "miss"
    hit_attributes = dict(hit.attributes or {})
    assert hit_attributes["tiergate.cache"] == "hit"
    assert hit_attributes["tiergate.cost_usd"] == 0.0  # nobody was billed for it
    assert hit_attributes["tiergate.attempt"] == 0
    assert hit_attributes["gen_ai.response.model"] == "gpt-5.4-mini"


async def test_a_background_generation_has_a_trace_of_its_own(traced: str, exporter: InMemorySpanExporter) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "X-Task-Type": "narrative", "X-Tiergate-Key": "board:1"}
    async with httpx.AsyncClient(base_url=traced, headers=headers) as http:
        posted = await http.post("/v1/precompute", json={"model": "auto", "messages": USER})
        assert posted.status_code == 202
        for _ in range(500):  # bounded; no timing asserted
            if not finished(exporter, SpanKind.INTERNAL):
                await asyncio.sleep(0.01)
    (background,) = finished(exporter, SpanKind.INTERNAL)
    (attempt,) = finished(exporter, SpanKind.CLIENT)
    assert background.parent is None
    assert attempt.parent is not None and attempt.parent.span_id == background.context.span_id
    attributes = dict(background.attributes or {})
    assert attributes["tiergate.background"] is True
    assert attributes["tiergate.task"] == "narrative"
    assert background.name == "chat auto"


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, TelemetryConfig()),
        ({"OTEL_TRACES_EXPORTER": "none"}, TelemetryConfig()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, TelemetryConfig(traces=("otlp_proto_http",))),
        (
            {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            TelemetryConfig(traces=("otlp_proto_http", "console")),
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus,otlp", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "True"},
            TelemetryConfig(metrics=("prometheus", "otlp_proto_http"), capture_content=True),
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, TelemetryConfig()),
    ],
)
def test_the_standard_variables_choose_the_exporters(environ: dict[str, str], expected: TelemetryConfig) -> None:
    assert TelemetryConfig.from_env(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'"),
        ({"OTEL_TRACES_EXPORTER": "prometheus"}, "OTEL_TRACES_EXPORTER: unknown exporter 'prometheus'"),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json' is not supported",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "needs opentelemetry-exporter-otlp-proto-grpc installed",
        ),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY"}, "is not supported"),
    ],
)
def test_a_variable_tiergate_cannot_honour_is_one_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TelemetryConfig.from_env(environ)


async def test_a_request_the_sampler_drops_records_nothing_but_still_propagates(
    start_proxy: ProxyFactory,
    upstream_url: str,
    fake: FakeOpenAI,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK's TracerProvider
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with start_proxy(registry(upstream_url), telemetry=TelemetryConfig(span_exporters=(exporter,))) as url:
        client = sdk(url, headers={**SUMMARY, "traceparent": f"00-{trace_id}-{parent}-01"})
        await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    assert exporter.get_finished_spans() == ()
    (sent,) = fake.requests
    version, sent_trace, _, flags = sent.headers["traceparent"].split("-")
    assert (version, sent_trace, int(flags, 16) & 1) == ("00", trace_id, 0)  # the same trace, not sampled


def test_a_bad_otel_variable_stops_serve_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused-000000")
    assert main(["serve", "--config", str(RULES), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tiergate: OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'")
    assert len(err.splitlines()) == 1
