"""Responses calls in the traces: the request span and its attempt spans say what a chat call's say.

The telemetry speaks chat; the Responses edge shows it the request's chat-shaped view and, for the
answer, the response read as a completion (streamed: its terminal event). SDK -> tiergate -> fakes, spans
read from the SDK's in-memory exporter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI
from proxy.telemetry.config import TelemetryConfig
from tests.conftest import ProxyFactory
from tests.test_responses import CLAUDE, GPT, QUESTION
from tests.test_responses_ledger import tiergate


@pytest.mark.parametrize(("task", "model"), [("summary", GPT), ("narrative", CLAUDE)], ids=["native", "translated"])
async def test_request_and_attempt_spans(
    start_proxy: ProxyFactory, fake: FakeOpenAI, tmp_path: Path, task: str, model: str
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = TelemetryConfig(span_exporters=(exporter,), capture_content=True)
    async with tiergate(start_proxy, fake, FakeAnthropic(), tmp_path / "l.db", telemetry=telemetry) as client:
        headers = {"X-Task-Type": task}
        plain = await client.responses.create(
            model="auto", input=QUESTION, max_output_tokens=100, extra_headers=headers
        )
        stream = await client.responses.create(
            model="auto", input=QUESTION, max_output_tokens=100, stream=True, extra_headers=headers
        )
        events = [e async for e in stream]
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.kind == SpanKind.SERVER]
    attempts = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(requests) == 2 and len(attempts) == 2
    for span, response_id in zip(requests, (plain.id, events[-1].response.id), strict=True):  # type: ignore[union-attr]
        attributes = dict(span.attributes or {})
        assert attributes["tiergate.task"] == task and attributes["gen_ai.response.model"] == model
        assert (attributes["http.route"], attributes["gen_ai.operation.name"]) == ("/v1/responses", "chat")
        assert attributes["gen_ai.response.id"] == response_id
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert attributes["gen_ai.usage.output_tokens"] > 0 and attributes["gen_ai.usage.input_tokens"] > 0
        assert QUESTION in str(attributes["gen_ai.input.messages"])
        assert QUESTION in str(attributes["gen_ai.output.messages"])
    for span in attempts:
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.request.model"] == model and attributes["tiergate.attempt"] == 1
        assert attributes["gen_ai.request.max_tokens"] == 100  # max_output_tokens natively, max_tokens translated
