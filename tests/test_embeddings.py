"""``POST /v1/embeddings`` end to end: the openai SDK -> tiergate -> the fake OpenAI upstream, and the ledger.

Routing by task (``X-Task-Type``, else ``default_embedding_task``; a chat task is refused and named),
the upstream's body relayed (base64 and float vectors, ``dimensions``), retries, fallbacks and breakers
as for chat, ledger rows with input tokens and their genai-prices cost, OpenAI-shaped 400s for bad input
(never a 500), and the registry's checks of what an embedding tier may hold.
"""

from __future__ import annotations

import base64
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from proxy.cli import main
from proxy.errors import ConfigError
from proxy.fakes.embeddings import count_tokens, vector
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.kinds import mixed_embedding_models
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from proxy.telemetry.config import TelemetryConfig
from tests.conftest import UPSTREAM_KEY, FakeClock, ProxyFactory, clean, sdk, shipped_registry
from tests.test_ledger import rows

TEXTS = ["the billing export fails", "queues and retries"]
EMBEDDING_MODEL = "text-embedding-3-small"


def price(tokens: int, model: str = EMBEDDING_MODEL) -> float:
    return float(calc_price(PriceUsage(input_tokens=tokens), model_ref=model, provider_id="openai").total_price)


# --- the shipped registry: untagged, tagged, selectors ----------------------------------------------------


async def test_an_untagged_call_runs_as_the_default_embedding_task(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    async with start_proxy(shipped_registry(upstream_url), db=str(db)) as url, sdk(url) as client:
        raw = await client.embeddings.with_raw_response.create(model="text-embedding-ada-002", input=TEXTS)
    result = raw.parse()
    headers = raw.headers
    assert (headers["x-tiergate-task"], headers["x-tiergate-task-source"]) == ("retrieval", "default")
    assert (headers["x-tiergate-tier"], headers["x-tiergate-model"]) == ("embedding", EMBEDDING_MODEL)
    assert headers["x-request-id"] == "req_fake_1" and headers["x-tiergate-attempts"] == "1"
    # The SDK asked for base64 (its default) and decoded the vectors itself: relayed untouched.
    [request] = fake.requests
    assert request.path == "/v1/embeddings" and request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert request.body == {"model": EMBEDDING_MODEL, "input": TEXTS, "encoding_format": "base64"}
    assert [d.embedding for d in result.data] == [pytest.approx(vector(t, 1536), abs=1e-6) for t in TEXTS]
    tokens = sum(count_tokens(t) for t in TEXTS)
    assert result.usage.prompt_tokens == tokens and result.model == EMBEDDING_MODEL

    [row] = rows(db)
    assert (row["task"], row["task_source"], row["tier"], row["provider"], row["model"]) == (
        "retrieval", "default", "embedding", "openai", EMBEDDING_MODEL,
    )  # fmt: skip
    assert (row["requested_model"], row["status"], row["stream"], row["error_type"]) == (
        "text-embedding-ada-002", 200, 0, None,
    )  # fmt: skip
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (tokens, 0, "upstream")
    assert row["cost_usd"] == pytest.approx(price(tokens)) and row["price_source"].startswith("genai-prices")
    # An embedding task's baseline is its own tier: no chat tier prices an embedding.
    assert (row["baseline_tier"], row["baseline_model"]) == ("embedding", EMBEDDING_MODEL)
    assert row["baseline_cost_usd"] == pytest.approx(row["cost_usd"])
    assert row["features"] is None and row["prompt_variant"] is None
    [attempt] = rows(db, "attempts")
    assert (attempt["provider"], attempt["model"], attempt["status"]) == ("openai", EMBEDDING_MODEL, 200)


async def test_inputs_formats_and_dimensions_are_passed_through(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    async with start_proxy(shipped_registry(upstream_url)) as url, sdk(url, {"X-Task-Type": "retrieval"}) as client:
        floats = await client.embeddings.create(model="auto", input="one text", dimensions=32, encoding_format="float")
        tokens = await client.embeddings.create(model="tier:embedding", input=[[1, 2, 3], [4, 5]], dimensions=8)
        ids = await client.embeddings.create(model="auto", input=[7, 8, 9], dimensions=4, user="end-user-42")
        async with httpx.AsyncClient() as http:
            raw = await http.post(
                url + "/v1/embeddings",
                json={"model": "auto", "input": "x", "encoding_format": "base64", "dimensions": 4},
            )
    assert len(floats.data[0].embedding) == 32 and floats.data[0].embedding == pytest.approx(vector("one text", 32))
    assert [len(d.embedding) for d in tokens.data] == [8, 8] and tokens.usage.prompt_tokens == 5
    assert len(ids.data) == 1 and ids.usage.prompt_tokens == 3
    encoded = raw.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert list(struct.unpack("<4f", base64.b64decode(encoded))) == pytest.approx(vector("x", 4), abs=1e-6)
    sent = [r.body for r in fake.requests]
    assert sent[0] == {"model": EMBEDDING_MODEL, "input": "one text", "dimensions": 32, "encoding_format": "float"}
    assert sent[1]["input"] == [[1, 2, 3], [4, 5]] and sent[2]["user"] == "end-user-42"


async def test_a_chat_task_or_tier_is_refused_by_name(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    async with start_proxy(shipped_registry(upstream_url)) as url:
        async with sdk(url, {"X-Task-Type": "summary"}) as client:
            with pytest.raises(openai.BadRequestError) as chat_task:
                await client.embeddings.create(model="auto", input="x")
            with pytest.raises(openai.BadRequestError) as embedding_task:
                await client.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"X-Task-Type": "retrieval"},
                )
            with pytest.raises(openai.BadRequestError) as responses_task:
                await client.responses.create(model="auto", input="hi", extra_headers={"X-Task-Type": "retrieval"})
        async with sdk(url) as client:
            with pytest.raises(openai.BadRequestError) as chat_tier:
                await client.embeddings.create(model="tier:small", input="x")
            with pytest.raises(openai.BadRequestError) as embedding_tier:
                await client.chat.completions.create(
                    model="tier:embedding", messages=[{"role": "user", "content": "hi"}]
                )
            with pytest.raises(openai.BadRequestError) as responses_tier:
                await client.responses.create(model="tier:embedding", input="hi")
            with pytest.raises(openai.BadRequestError) as unknown:
                await client.embeddings.create(model="auto", input="x", extra_headers={"X-Task-Type": "nope"})
    assert chat_task.value.param == "X-Task-Type" and chat_task.value.code == "invalid_value"
    assert "POST /v1/chat/completions" in chat_task.value.message and "retrieval" in chat_task.value.message
    assert embedding_task.value.param == "X-Task-Type" and "POST /v1/embeddings" in embedding_task.value.message
    assert chat_tier.value.param == "model" and "chat tier" in chat_tier.value.message
    assert embedding_tier.value.param == "model" and "embedding tier" in embedding_tier.value.message
    # /v1/responses serves chat tasks and tiers, as /v1/chat/completions does
    assert responses_task.value.param == "X-Task-Type" and "POST /v1/embeddings" in responses_task.value.message
    assert responses_tier.value.param == "model" and "embedding tier" in responses_tier.value.message
    assert unknown.value.code == "unknown_task_type"
    assert fake.requests == []  # nothing reached the upstream


async def test_a_registry_without_embedding_tiers_says_so(start_proxy: ProxyFactory, upstream_url: str) -> None:
    registry = build(
        {
            "providers": {"openai": {"type": "openai", "base_url": upstream_url + "/v1"}},
            "tiers": {"small": {"targets": ["openai::gpt-5.4-nano"]}},
            "tasks": {"chat": "small"},
        }
    )
    async with start_proxy(registry) as url, sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.embeddings.create(model="auto", input="x")
    assert "kind: embedding" in caught.value.message


# --- bad input: OpenAI-shaped 400s, never a 500 -------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[tuple[str, FakeOpenAI]]:
    """One tiergate on the shipped registry (and its fake) for the tests that only send bad bodies."""
    from proxy.app import create_app
    from proxy.settings import Settings
    from tests.conftest import RULES

    upstream = FakeOpenAI()
    with tempfile.TemporaryDirectory() as tmp:
        async with serve(upstream) as upstream_url:
            settings = Settings(config=str(RULES), db=str(Path(tmp) / "ledger.db"))
            async with serve(create_app(settings, shipped_registry(upstream_url))) as url:
                yield url, upstream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": 3, "input": "x"}, "model"),
        ({"model": "auto"}, "input"),
        ({"model": "auto", "input": ""}, "input"),
        ({"model": "auto", "input": []}, "input"),
        ({"model": "auto", "input": ["a", ""]}, "input"),
        ({"model": "auto", "input": ["a", 1]}, "input"),
        ({"model": "auto", "input": [[1], []]}, "input"),
        ({"model": "auto", "input": [-1]}, "input"),
        ({"model": "auto", "input": [True]}, "input"),
        ({"model": "auto", "input": {"text": "x"}}, "input"),
        ({"model": "auto", "input": ["x"] * 2049}, "input"),
        ({"model": "auto", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "auto", "input": "x", "dimensions": "8"}, "dimensions"),
        ({"model": "auto", "input": "x", "user": 5}, "user"),
        ({"model": "auto", "input": "x", "stream": True}, "stream"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_input_is_an_openai_shaped_400(
    shared: tuple[str, FakeOpenAI], body: dict[str, Any], param: str
) -> None:
    url, upstream = shared
    sent = len(upstream.requests)
    async with httpx.AsyncClient() as http:
        response = await http.post(url + "/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert len(upstream.requests) == sent  # refused before any upstream call


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["auto", "tier:embedding", "tier:small", ""]) | _json,
        "input": st.one_of(
            st.text(max_size=6),
            st.lists(st.text(max_size=4), max_size=3),
            st.lists(st.integers(-1, 9), max_size=3),
            _json,
        ),
        "encoding_format": st.sampled_from(["float", "base64", "int8"]) | _json,
        "dimensions": st.integers(-1, 4) | _json,
        "user": st.text(max_size=4) | _json,
    },
)


@pytest.mark.asyncio(loop_scope="module")
@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies | _json)
async def test_any_body_is_answered_never_with_a_500(shared: tuple[str, FakeOpenAI], body: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(shared[0] + "/v1/embeddings", json=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# --- reliability: the chat machinery, for embeddings ------------------------------------------------------


@pytest_asyncio.fixture
async def secondary() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    with clean(FakeOpenAI()) as fake:
        async with serve(fake) as url:
            yield fake, url


def two_providers(primary_url: str, secondary_url: str, **policy: Any) -> Registry:
    return build(
        {
            "providers": {
                "primary": {"type": "openai", "base_url": primary_url + "/v1", "api_key": "sk-1"},
                "secondary": {"type": "openai", "base_url": secondary_url + "/v1", "api_key": "sk-2"},
            },
            "tiers": {
                "chat": {"targets": ["primary::gpt-5.4-nano"]},
                # The same model on two providers: a fallback that keeps the vectors comparable.
                "embed": {
                    "kind": "embedding",
                    "targets": ["primary::text-embedding-3-small", "secondary::text-embedding-3-small"],
                },
            },
            "tasks": {"chat": "chat", "index": "embed"},
            "policy": {"retries": 1, "breaker": {"failures": 2, "cooldown_s": 30}, **policy},
        }
    )


async def test_a_failing_target_is_retried_then_fallen_over(
    start_proxy: ProxyFactory,
    upstream_url: str,
    fake: FakeOpenAI,
    secondary: tuple[FakeOpenAI, str],
    tmp_path: Path,
) -> None:
    other, other_url = secondary
    fake.push(Behavior(status=503), Behavior(status=503))
    clock, db = FakeClock(), tmp_path / "ledger.db"
    async with start_proxy(two_providers(upstream_url, other_url), clock=clock, db=str(db)) as url:
        async with sdk(url, {"X-Task-Type": "index"}) as client:
            raw = await client.embeddings.with_raw_response.create(model="auto", input="x")
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-attempts"]) == ("secondary", "3")
    assert raw.headers["x-tiergate-fallback"] == "true" and len(clock.sleeps) == 1  # one backoff
    assert raw.parse().data[0].embedding == pytest.approx(vector("x", 1536), abs=1e-6)
    assert [(a["provider"], a["status"]) for a in rows(db, "attempts")] == [
        ("primary", 503), ("primary", 503), ("secondary", 200),
    ]  # fmt: skip
    [row] = rows(db)
    assert (row["provider"], row["fallback"], row["attempts"], row["status"]) == ("secondary", 1, 3, 200)
    assert other.requests[0].path == "/v1/embeddings"


async def test_an_open_breaker_skips_the_target_and_errors_pass_through(
    start_proxy: ProxyFactory,
    upstream_url: str,
    fake: FakeOpenAI,
    secondary: tuple[FakeOpenAI, str],
) -> None:
    other, other_url = secondary
    fake.push(Behavior(status=500), Behavior(status=500))
    other.push(Behavior(status=400, body=b'{"error": {"message": "bad dims", "type": "invalid_request_error", '
                                         b'"param": "dimensions", "code": null}}'))  # fmt: skip
    async with start_proxy(two_providers(upstream_url, other_url), clock=FakeClock()) as url:
        async with sdk(url, {"X-Task-Type": "index"}) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.embeddings.create(model="auto", input="x")  # primary 500 x2 (breaker opens), then 400
            raw = await client.embeddings.with_raw_response.create(model="auto", input="x")  # primary skipped
    assert caught.value.param == "dimensions" and caught.value.body["message"] == "bad dims"  # type: ignore[index]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-attempts"]) == ("secondary", "1")
    assert len(fake.requests) == 2


async def test_an_upstream_without_usage_is_estimated(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.push(Behavior(omit_usage=True))
    db = tmp_path / "ledger.db"
    async with start_proxy(shipped_registry(upstream_url), db=str(db)) as url, sdk(url) as client:
        await client.embeddings.with_raw_response.create(model="auto", input=TEXTS, encoding_format="float")
    [row] = rows(db)
    assert row["usage_source"] == "estimated" and row["prompt_tokens"] > 0 and row["cost_usd"] is not None
    # The ledger's estimate counts at least one output token (its rule for chat); an embedding model has no
    # output price, so the cost is the input's alone.
    assert row["completion_tokens"] == 1
    assert row["cost_usd"] == pytest.approx(price(row["prompt_tokens"]))


# --- the registry: what an embedding tier may hold -----------------------------------------------------------


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "providers": {
            "openai": {"type": "openai", "base_url": "http://127.0.0.1:1/v1"},
            "anthropic": {"type": "anthropic", "base_url": "http://127.0.0.1:1"},
            "local": {"type": "local"},
        },
        "tiers": {
            "small": {"targets": ["openai::gpt-5.4-nano"]},
            "embed": {"kind": "embedding", "targets": ["openai::text-embedding-3-small"]},
        },
        "tasks": {"chat": "small", "index": "embed"},
    }
    for path, value in changes.items():
        node = base
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return base


def config_error(**changes: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        build(doc(**changes))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("changes", "path", "why"),
    [
        ({"tiers__embed__kind": "vector"}, "tiers.embed.kind", "'vector' is not a tier kind (chat, embedding)"),
        ({"tiers__embed__targets": ["anthropic::claude-haiku-5-5"]}, "tiers.embed.targets[0].provider", "serves no embedding"),
        ({"tiers__embed__targets": ["openai::text-embedding-3-small", "openai::gpt-5.4-nano"]}, "tiers.embed.targets[1].model", "not an embedding model"),
        ({"tiers__embed__targets": [{"provider": "local", "handler": "proxy.handlers.ticket_labels:classify"}]}, "tiers.embed.targets[0].provider", "serves no embedding"),
        ({"tiers__embed__prompt": {"system": "x"}}, "tiers.embed.prompt", "takes no prompt"),
        ({"tiers__embed__cache": {"ttl_s": 60}}, "tiers.embed.cache", "takes no cache"),
        ({"tiers__embed__max_tokens_cap": 10}, "tiers.embed.max_tokens_cap", "takes no max_tokens_cap"),
        ({"tiers__embed__params": {"max_tokens": 10}}, "tiers.embed.params.max_tokens", "no output tokens"),
        ({"tiers__embed__targets": [{"provider": "openai", "model": "text-embedding-3-small", "max_tokens_cap": 9}]}, "tiers.embed.targets[0].max_tokens_cap", "takes no"),
        ({"tiers__small__fallback_tier": "embed"}, "tiers.small.fallback_tier", "'embed' is an embedding tier"),
        ({"tasks__index": {"tier": "embed", "prompts": {"embed": {"system": "x"}}}}, "tasks.index.prompts", "takes no prompts"),
        ({"tasks__index": {"tier": "embed", "baseline": "small"}}, "tasks.index.baseline", "'small' is a chat tier"),
        ({"tasks__index": {"tier": "embed", "allow_models": ["gpt-5.4-nano"]}}, "tasks.index.allow_models[0]", "not a model of any embedding tier"),
        ({"tasks__index": {"tier": "embed", "allow_models": ["anthropic::x"]}}, "tasks.index.allow_models[0]", "serves no embedding"),
        ({"default_task": "index"}, "default_task", "'index' runs on embedding tier 'embed'"),
        ({"default_embedding_task": "chat"}, "default_embedding_task", "'chat' runs on chat tier 'small'"),
        ({"tasks": {"index": "embed"}}, "tasks", "at least one task on a chat tier"),
        ({"classify": [{"name": "r", "task": "index", "when": {}}]}, "classify[0].task", "classify rules place untagged chat calls"),
    ],
)  # fmt: skip
def test_a_misplaced_embedding_setting_names_its_path(changes: dict[str, Any], path: str, why: str) -> None:
    message = config_error(**changes)
    assert message.startswith(f"{path}: ") and why in message, message


def test_kinds_and_defaults() -> None:
    registry = build(doc())
    assert (registry.tiers["embed"].kind, registry.tiers["small"].kind) == ("embedding", "chat")
    assert (registry.tasks["index"].kind, registry.tasks["index"].baseline) == ("embedding", "embed")
    assert (registry.default_task, registry.default_embedding_task) == ("chat", "index")
    assert build(doc(tiers__embed__targets=["openai::my-own-embedder"])).tiers["embed"].targets[0].model == (
        "my-own-embedder"  # a model genai-prices does not know cannot be told apart: accepted
    )
    shipped = shipped_registry("http://127.0.0.1:1")
    assert shipped.default_embedding_task == "retrieval" and shipped.tasks_of("embedding") == ["retrieval"]
    assert mixed_embedding_models(shipped) == []


def test_check_warns_about_an_embedding_tier_of_mixed_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    mixed = doc(tiers__embed__targets=["openai::text-embedding-3-small", "openai::text-embedding-3-large"])
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(mixed))
    (tmp_path / "evals").mkdir()  # no golden sets: the registry alone is checked
    assert main(["check", str(path), "--evals", str(tmp_path / "evals")]) == 0
    out = capsys.readouterr()
    assert "default embedding task 'index'" in out.out
    assert out.err.startswith("warning: tiers.embed: its targets embed with different models")

    path.write_text(yaml.safe_dump(doc(tiers__embed__targets=["anthropic::claude-haiku-5-5"])))
    assert main(["check", str(path), "--evals", str(tmp_path / "evals")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tiergate: tiers.embed.targets[0].provider: ")


# --- traces ------------------------------------------------------------------------------------------------


async def test_an_embeddings_call_is_traced_as_one(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = TelemetryConfig(span_exporters=(exporter,), capture_content=True)
    async with start_proxy(shipped_registry(upstream_url), telemetry=telemetry) as url, sdk(url) as client:
        await client.embeddings.create(model="auto", input=TEXTS)
    server = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    client_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert [s.name for s in server] == ["embeddings auto"]
    assert [s.name for s in client_spans] == [f"embeddings {EMBEDDING_MODEL}"]
    root = dict(server[0].attributes or {})
    assert (root["gen_ai.operation.name"], root["http.route"], root["tiergate.task"]) == (
        "embeddings", "/v1/embeddings", "retrieval",
    )  # fmt: skip
    assert root["gen_ai.usage.input_tokens"] == sum(count_tokens(t) for t in TEXTS)
    assert "gen_ai.input.messages" not in root  # nothing of the inputs is recorded
    assert (client_spans[0].attributes or {})["gen_ai.operation.name"] == "embeddings"


async def test_an_embeddings_call_is_counted_as_one(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    telemetry = TelemetryConfig(metrics=("prometheus",))
    async with start_proxy(shipped_registry(upstream_url), telemetry=telemetry) as url, sdk(url) as client:
        await client.embeddings.create(model="auto", input=TEXTS)
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(url + "/metrics")).text
    found = [s for family in text_string_to_metric_families(scraped) for s in family.samples]

    def one(name: str, **labels: str) -> float:
        [sample] = [s for s in found if s.name == name and labels.items() <= s.labels.items()]
        return sample.value

    assert one("tiergate_requests_total", tiergate_task="retrieval", tiergate_tier="embedding") == 1
    operation = {"gen_ai_operation_name": "embeddings"}
    assert one("gen_ai_server_request_duration_seconds_count", tiergate_task="retrieval", **operation) == 1
    tokens = {"gen_ai_request_model": EMBEDDING_MODEL, **operation}
    assert one("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **tokens) == sum(
        count_tokens(t) for t in TEXTS
    )
    assert one("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **tokens) == 0
