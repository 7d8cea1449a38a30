"""The fault matrix: one test per upstream fault, end to end.

official openai SDK (max_retries=0) -> tiergate (uvicorn, loopback) -> two FakeOpenAI upstreams,
``primary`` and ``secondary`` (uvicorn, loopback). Each test asserts what tiergate did (which upstream
got what, which backoff it waited), what the client saw (status, body, ``x-tiergate-*`` headers) and
what the ledger recorded (the ``requests`` row and its ``attempts`` rows, read after the proxy has
stopped and drained).

Time is a `FakeClock`: backoff and retry-after waits are recorded instead of slept (``clock.sleeps``),
and breaker cooldowns and deadlines pass when a test advances the clock. Only the socket timeouts
(``first_byte_s``, ``idle_s``) are real; their slow upstreams stall on an event (``stall``) that is set
at teardown, so a timeout always fires first, and no test asserts elapsed time.

The two fake servers live for the whole module (starting and stopping uvicorn costs ~0.2 s each);
every test gets fresh ``FakeOpenAI`` apps behind them, its own clock and its own tiergate (fresh
breakers, ledger).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from starlette.types import Receive, Scope, Send

from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.rules import build
from tests.conftest import CLOSED_URL, FakeClock, ProxyFactory, assert_consumed, sdk

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER = [{"role": "user", "content": "Summarise the outage report"}]
REPLY_B = "Fake reply from model-b: Summarise the outage report"

# Time is fake (see the module docstring), so the waits can be realistic. The real timeouts are generous
# for healthy answers; a timeout test lowers the one it exercises. Tests override keys with ``policy=``.
BACKOFF = 0.5  # the first backoff delay
POLICY: dict[str, Any] = {
    "retries": 1,
    "backoff": {"initial_s": BACKOFF, "max_s": 4, "multiplier": 2, "jitter": 0},
    "retry_after_cap_s": 10,
    "timeouts": {"connect_s": 2, "first_byte_s": 10, "idle_s": 10},
    "deadline_s": 60,
    "breaker": {"failures": 100, "cooldown_s": 30},
}
SHORT = 0.3  # a timeout under test (s): the stalled upstream never answers, so only its cost matters


# --- upstreams, registry, proxy, ledger ---------------------------------------------------------------


class Upstream:
    """One fake OpenAI server for the module; its ``fake`` app is replaced by a fresh one per test."""

    def __init__(self) -> None:
        self.fake = FakeOpenAI()
        self.url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fake(scope, receive, send)

    def models(self) -> list[str]:
        """The model of each chat request this upstream received, in order."""
        return [r.body["model"] for r in self.fake.requests]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _servers() -> AsyncIterator[tuple[Upstream, Upstream]]:
    primary, secondary = Upstream(), Upstream()
    async with serve(primary) as primary.url, serve(secondary) as secondary.url:
        yield primary, secondary


def _fresh(upstream: Upstream) -> Iterator[Upstream]:
    upstream.fake = FakeOpenAI()
    yield upstream
    assert_consumed(upstream.fake)  # the fake the test ended with (a test may swap in its own)


@pytest.fixture
def primary(_servers: tuple[Upstream, Upstream]) -> Iterator[Upstream]:
    yield from _fresh(_servers[0])


@pytest.fixture
def secondary(_servers: tuple[Upstream, Upstream]) -> Iterator[Upstream]:
    yield from _fresh(_servers[1])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stall() -> Iterator[asyncio.Event]:
    """An event a slow upstream waits for (``Behavior(delay_headers=stall)``); set at teardown."""
    event = asyncio.Event()
    yield event
    event.set()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def registry(
    primary: Upstream,
    secondary: Upstream,
    *,
    policy: dict[str, Any] | None = None,
    tier_policy: dict[str, Any] | None = None,
    task_policy: dict[str, Any] | None = None,
    fallback_tier: bool = False,
    primary_url: str | None = None,
    extra_tiers: dict[str, Any] | None = None,
) -> Registry:
    """Tier ``small`` = primary::model-a, secondary::model-b; tier ``mid`` = secondary::model-c (temperature
    0.7); task ``t`` (the default) runs on ``small``. ``policy`` is merged into ``POLICY`` (the global layer)."""
    small: dict[str, Any] = {"targets": ["primary::model-a", "secondary::model-b"]}
    if fallback_tier:
        small["fallback_tier"] = "mid"
    if tier_policy:
        small["policy"] = tier_policy
    task: dict[str, Any] = {"tier": "small"}
    if task_policy:
        task["policy"] = task_policy
    return build(
        {
            "providers": {
                "primary": {"type": "openai", "base_url": (primary_url or primary.url) + "/v1", "api_key": "sk-p"},
                "secondary": {"type": "openai", "base_url": secondary.url + "/v1", "api_key": "sk-s"},
            },
            "tiers": {
                "small": small,
                "mid": {"targets": [{"provider": "secondary", "model": "model-c", "params": {"temperature": 0.7}}]},
                **(extra_tiers or {}),
            },
            "tasks": {"t": task},
            "policy": _merge(POLICY, policy or {}),
        }
    )


Gate = Callable[..., AbstractAsyncContextManager[AsyncOpenAI]]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "l.db"


@pytest.fixture
def gate(start_proxy: ProxyFactory, db: Path, clock: FakeClock) -> Gate:
    """``async with gate(registry) as client``: tiergate on ``clock`` with a ledger at ``db``, and an SDK
    client for it. ``gate(registry, real_time=True)``: on the real clock instead."""

    @asynccontextmanager
    async def run(reg: Registry, *, real_time: bool = False) -> AsyncIterator[AsyncOpenAI]:
        async with start_proxy(reg, clock=None if real_time else clock, db=str(db)) as url:
            # Plain http on loopback: no CA bundle to load (that alone costs ~30 ms per client).
            client = sdk(url, http_client=openai.DefaultAsyncHttpxClient(verify=False))
            try:
                yield client
            finally:
                await client.close()

    return run


def ledger(db: Path) -> list[dict[str, Any]]:
    """The ``requests`` rows, oldest first, each with ``tries``: its attempts as
    ``(n, provider, model, status, error_type)``. Read only after the proxy stopped (it drains on exit)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY ts, rowid")]
        for row in rows:
            query = "SELECT n, provider, model, status, error_type FROM attempts WHERE request = ? ORDER BY n"
            row["tries"] = [tuple(a) for a in conn.execute(query, (row["id"],))]
    finally:
        conn.close()
    return rows


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    """(status, error_type, attempts, fallback, usage_source, tier, model) of a ``requests`` row."""
    keys = ("status", "error_type", "attempts", "fallback", "usage_source", "tier", "model")
    return tuple(row[k] for k in keys)


def route(headers: Any) -> tuple[str, ...]:
    """(x-tiergate-attempts, -fallback, -tier, -model) of a successful response."""
    return tuple(headers[f"x-tiergate-{k}"] for k in ("attempts", "fallback", "tier", "model"))


async def chat(client: AsyncOpenAI, model: str = "auto") -> tuple[Any, Any]:
    """A non-streaming call: (response headers, ChatCompletion)."""
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=USER)  # type: ignore[arg-type]
    return raw.headers, raw.parse()


async def chat_stream(client: AsyncOpenAI) -> tuple[Any, list[Any]]:
    """A streaming call read to its end: (response headers, chunks)."""
    create = client.chat.completions.with_raw_response.create
    raw = await create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
    return raw.headers, [chunk async for chunk in raw.parse()]


async def open_stream(client: AsyncOpenAI) -> Any:
    return await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]


def invalid_request(code: str, message: str) -> bytes:
    """An OpenAI 400 body with an error code."""
    error = {"message": message, "type": "invalid_request_error", "param": "messages", "code": code}
    return orjson.dumps({"error": error})


OK = (200, None)
FAILED_503 = (503, "server_error")  # the fake's 5xx bodies carry type server_error and no code


# --- 1-12: non-streaming faults --------------------------------------------------------------------


async def test_01_a_500_once_is_retried_on_the_same_target(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.push(Behavior(status=500))
    async with gate(registry(primary, secondary)) as client:
        headers, completion = await chat(client)
    assert route(headers) == ("2", "false", "small", "model-a")
    assert completion.model == "model-a"
    assert (primary.models(), secondary.models()) == (["model-a", "model-a"], [])
    assert clock.sleeps == [BACKOFF]  # one backoff before the retry
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", 500, "server_error"), (2, "primary", "model-a", *OK)]
    assert summary(row) == (200, None, 2, 0, "upstream", "small", "model-a")


async def test_01b_backoff_grows_by_the_multiplier_up_to_its_max(
    primary: Upstream, secondary: Upstream, gate: Gate, clock: FakeClock
) -> None:
    primary.fake.push(*[Behavior(status=500)] * 4)
    async with gate(registry(primary, secondary, policy={"retries": 4, "backoff": {"max_s": 1.5}})) as client:
        headers, _ = await chat(client)
    assert route(headers) == ("5", "false", "small", "model-a")
    assert clock.sleeps == [0.5, 1.0, 1.5, 1.5]


async def test_01c_jitter_varies_each_delay_within_its_band(
    primary: Upstream, secondary: Upstream, gate: Gate, clock: FakeClock
) -> None:
    primary.fake.push(*[Behavior(status=500)] * 3)
    policy = {"retries": 3, "backoff": {"jitter": 0.2}}
    async with gate(registry(primary, secondary, policy=policy)) as client:
        await chat(client)
    bases = [0.5, 1.0, 2.0]
    assert len(clock.sleeps) == 3
    assert all(base * 0.8 <= slept <= base * 1.2 for base, slept in zip(bases, clock.sleeps, strict=True))
    assert clock.sleeps != bases  # jittered (an exact hit of all three is a 1 in 2**150 chance)


async def test_02_a_persistent_503_exhausts_retries_then_the_secondary_serves(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.default = Behavior(status=503)
    async with gate(registry(primary, secondary)) as client:
        headers, completion = await chat(client)
    assert route(headers) == ("3", "true", "small", "model-b")
    assert completion.choices[0].message.content == REPLY_B
    assert (len(primary.fake.requests), secondary.models()) == (2, ["model-b"])  # 1 + retries
    assert clock.sleeps == [BACKOFF]  # before primary's retry; none before moving on
    [row] = ledger(db)
    assert row["tries"] == [
        (1, "primary", "model-a", *FAILED_503),
        (2, "primary", "model-a", *FAILED_503),
        (3, "secondary", "model-b", *OK),
    ]
    assert summary(row) == (200, None, 3, 1, "upstream", "small", "model-b")
    assert row["provider"] == "secondary"


async def test_03_a_429_with_a_short_retry_after_ms_is_waited_out_on_the_same_target(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.push(Behavior(status=429, headers={"retry-after-ms": "150"}))
    async with gate(registry(primary, secondary)) as client:
        headers, _ = await chat(client)
    assert clock.sleeps == [0.15]  # the upstream's 150 ms, not our 0.5 s backoff
    assert route(headers) == ("2", "false", "small", "model-a")
    assert (len(primary.fake.requests), secondary.fake.requests) == (2, [])
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", 429, "rate_limit_exceeded"), (2, "primary", "model-a", *OK)]
    assert summary(row) == (200, None, 2, 0, "upstream", "small", "model-a")


async def test_04_a_429_asking_for_longer_than_the_cap_moves_on_at_once(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.push(Behavior(status=429, headers={"retry-after": "30"}))  # cap: 10 s
    async with gate(registry(primary, secondary)) as client:
        headers, _ = await chat(client)
    assert clock.sleeps == []  # no wait at all
    assert route(headers) == ("2", "true", "small", "model-b")
    assert (len(primary.fake.requests), secondary.models()) == (1, ["model-b"])  # no retry on primary
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", 429, "rate_limit_exceeded"), (2, "secondary", "model-b", *OK)]
    assert summary(row) == (200, None, 2, 1, "upstream", "small", "model-b")


async def test_04b_a_retry_after_ending_past_the_deadline_moves_on_at_once(
    primary: Upstream, secondary: Upstream, gate: Gate, clock: FakeClock
) -> None:
    primary.fake.push(Behavior(status=429, headers={"retry-after": "8"}))  # under the cap, over the deadline
    async with gate(registry(primary, secondary, policy={"deadline_s": 5})) as client:
        headers, _ = await chat(client)
    assert clock.sleeps == []
    assert route(headers) == ("2", "true", "small", "model-b")
    assert (len(primary.fake.requests), secondary.models()) == (1, ["model-b"])


async def test_05_429_everywhere_reaches_the_client_with_a_capped_retry_after(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    for upstream in (primary, secondary):
        upstream.fake.default = Behavior(status=429, headers={"retry-after": "300"})
    async with gate(registry(primary, secondary)) as client:
        with pytest.raises(openai.RateLimitError) as err:
            await chat(client)
    headers = err.value.response.headers
    assert err.value.status_code == 429 and err.value.code == "rate_limit_exceeded"
    # The SDK would give up on a retry-after above 120 s; tiergate caps it and says "retry".
    assert (headers["retry-after"], headers["x-should-retry"]) == ("120", "true")
    assert (headers["x-tiergate-attempts"], headers["x-tiergate-fallback"]) == ("2", "true")
    assert (len(primary.fake.requests), len(secondary.fake.requests)) == (1, 1)
    assert clock.sleeps == []
    [row] = ledger(db)
    assert row["tries"] == [
        (1, "primary", "model-a", 429, "rate_limit_exceeded"),
        (2, "secondary", "model-b", 429, "rate_limit_exceeded"),
    ]
    # fallback 1 like the header: a second target was tried (nothing served)
    assert summary(row) == (429, "rate_limit_exceeded", 2, 1, "none", "small", "model-b")
    assert row["cost_usd"] is None


async def test_06_connection_refused_falls_over_to_the_secondary(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    async with gate(registry(primary, secondary, primary_url=CLOSED_URL)) as client:
        headers, _ = await chat(client)
    assert route(headers) == ("3", "true", "small", "model-b")
    assert secondary.models() == ["model-b"]
    assert clock.sleeps == [BACKOFF]
    [row] = ledger(db)
    unreachable = (None, "upstream_unreachable")
    assert row["tries"] == [
        (1, "primary", "model-a", *unreachable),
        (2, "primary", "model-a", *unreachable),
        (3, "secondary", "model-b", *OK),
    ]
    assert summary(row) == (200, None, 3, 1, "upstream", "small", "model-b")


async def test_07_headers_slower_than_first_byte_s_time_out_and_the_secondary_serves(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, stall: asyncio.Event
) -> None:
    primary.fake.default = Behavior(delay_headers=stall)  # no headers until teardown
    # idle_s above first_byte_s: only first_byte_s can end the wait
    reg = registry(primary, secondary, policy={"retries": 0, "timeouts": {"first_byte_s": SHORT}})
    async with gate(reg) as client:
        headers, _ = await chat(client)
    assert route(headers) == ("2", "true", "small", "model-b")
    assert (len(primary.fake.requests), secondary.models()) == (1, ["model-b"])
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", None, "upstream_timeout"), (2, "secondary", "model-b", *OK)]
    assert summary(row) == (200, None, 2, 1, "upstream", "small", "model-b")


async def test_07b_first_byte_s_not_idle_s_bounds_the_wait_for_the_response(
    primary: Upstream, secondary: Upstream, gate: Gate
) -> None:
    # Spec: first_byte_s bounds the wait for a response, idle_s any silence *after* that. A non-streamed
    # completion arrives only when it is fully generated, so this is the common case for slow models.
    # The upstream and tiergate share one event loop, so tiergate's idle timer (armed first, shorter)
    # would always fire before the upstream's silence ends if idle_s applied to it.
    primary.fake.push(Behavior(delay_headers=0.25))
    reg = registry(primary, secondary, policy={"retries": 0, "timeouts": {"idle_s": 0.1}})
    async with gate(reg) as client:
        headers, _ = await chat(client)
    assert route(headers) == ("1", "false", "small", "model-a")
    assert secondary.fake.requests == []


async def test_08_a_body_stalling_longer_than_idle_s_times_out_and_is_retried(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock, stall: asyncio.Event
) -> None:
    primary.fake.push(Behavior(body_stall=stall))  # half the body, then silence until teardown
    # first_byte_s (10 s) above idle_s: only idle_s can cut it
    async with gate(registry(primary, secondary, policy={"timeouts": {"idle_s": SHORT}})) as client:
        headers, completion = await chat(client)
    assert route(headers) == ("2", "false", "small", "model-a")
    assert completion.choices[0].message.content.startswith("Fake reply from model-a")
    assert clock.sleeps == [BACKOFF]
    [row] = ledger(db)
    # the upstream had answered 200 before its body stalled: the attempt keeps that status
    assert row["tries"] == [(1, "primary", "model-a", 200, "upstream_timeout"), (2, "primary", "model-a", *OK)]
    assert summary(row) == (200, None, 2, 0, "upstream", "small", "model-a")


async def test_09_a_200_with_a_malformed_body_is_retried(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.push(Behavior(body=b'{"choices": [{"mess'))
    async with gate(registry(primary, secondary)) as client:
        headers, completion = await chat(client)
    assert route(headers) == ("2", "false", "small", "model-a")
    assert completion.choices[0].message.content.startswith("Fake reply from model-a")
    assert secondary.fake.requests == []
    assert clock.sleeps == [BACKOFF]
    [row] = ledger(db)
    # the upstream did answer 200 (bug 14: the attempt kept status NULL): only its body was bad
    assert row["tries"] == [(1, "primary", "model-a", 200, "upstream_bad_response"), (2, "primary", "model-a", *OK)]
    assert summary(row) == (200, None, 2, 0, "upstream", "small", "model-a")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
    ],
)
async def test_10_a_client_error_is_returned_at_once(
    primary: Upstream,
    secondary: Upstream,
    gate: Gate,
    db: Path,
    clock: FakeClock,
    status: int,
    error: type[openai.APIStatusError],
) -> None:
    primary.fake.push(Behavior(status=status))
    async with gate(registry(primary, secondary)) as client:
        with pytest.raises(error) as err:
            await chat(client)
    assert err.value.status_code == status
    if status in (401, 403):  # about tiergate's provider key: replaced, never passed on
        assert "refused tiergate's credentials" in err.value.body["message"]  # type: ignore[index]
    else:
        assert err.value.body["message"] == f"Fake upstream error {status}"  # type: ignore[index]  # passed on
    headers = err.value.response.headers
    assert (headers["x-should-retry"], headers["x-tiergate-attempts"], headers["x-tiergate-fallback"]) == (
        "false",
        "1",
        "false",
    )
    assert (len(primary.fake.requests), secondary.fake.requests, clock.sleeps) == (1, [], [])
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", status, "invalid_request_error")]
    assert summary(row) == (status, "invalid_request_error", 1, 0, "none", "small", "model-a")


@pytest.mark.parametrize("context_fallback", [True, False])
async def test_11_context_length_400_falls_over_only_with_context_fallback(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, context_fallback: bool
) -> None:
    too_long = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
    primary.fake.push(Behavior(status=400, body=invalid_request("context_length_exceeded", too_long)))
    async with gate(registry(primary, secondary, policy={"context_fallback": context_fallback})) as client:
        if context_fallback:
            headers, _ = await chat(client)
            assert route(headers) == ("2", "true", "small", "model-b")
        else:
            with pytest.raises(openai.BadRequestError) as err:
                await chat(client)
            assert err.value.code == "context_length_exceeded"
            assert err.value.body["message"] == too_long  # type: ignore[index]
            assert err.value.response.headers["x-tiergate-attempts"] == "1"
    assert len(primary.fake.requests) == 1  # never retried on the same target
    assert secondary.models() == (["model-b"] if context_fallback else [])
    [row] = ledger(db)
    overflow = (1, "primary", "model-a", 400, "context_length_exceeded")
    if context_fallback:
        assert row["tries"] == [overflow, (2, "secondary", "model-b", *OK)]
        assert summary(row) == (200, None, 2, 1, "upstream", "small", "model-b")
    else:
        assert row["tries"] == [overflow]
        assert summary(row) == (400, "context_length_exceeded", 1, 0, "none", "small", "model-a")


async def test_12_a_529_overloaded_is_retryable_and_the_next_target_serves(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.default = Behavior(status=529)
    async with gate(registry(primary, secondary)) as client:
        headers, _ = await chat(client)
    assert route(headers) == ("3", "true", "small", "model-b")
    assert (len(primary.fake.requests), clock.sleeps) == (2, [BACKOFF])
    [row] = ledger(db)
    assert [t[3:] for t in row["tries"]] == [(529, "server_error"), (529, "server_error"), OK]
    assert summary(row) == (200, None, 3, 1, "upstream", "small", "model-b")


# --- 13-16: streaming faults -----------------------------------------------------------------------


async def test_13_stream_503_before_the_first_chunk_is_served_by_the_secondary_transparently(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.default = Behavior(status=503)
    async with gate(registry(primary, secondary)) as client:
        headers, chunks = await chat_stream(client)
    assert route(headers) == ("3", "true", "small", "model-b")
    # one clean stream: model-b's chunks only, one opening, the exact text, a finish
    assert {c.model for c in chunks} == {"model-b"}
    assert [c.choices[0].delta.role for c in chunks].count("assistant") == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY_B
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert clock.sleeps == [BACKOFF]
    [row] = ledger(db)
    assert [t[:4] for t in row["tries"]] == [
        (1, "primary", "model-a", 503),
        (2, "primary", "model-a", 503),
        (3, "secondary", "model-b", 200),
    ]
    assert summary(row) == (200, None, 3, 1, "upstream", "small", "model-b")
    assert row["stream"] == 1


async def test_14_stream_first_chunk_slower_than_first_byte_s_falls_over(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, stall: asyncio.Event
) -> None:
    primary.fake.default = Behavior(ttft=stall)  # headers at once, the first chunk not before teardown
    reg = registry(primary, secondary, policy={"retries": 0, "timeouts": {"first_byte_s": SHORT}})
    async with gate(reg) as client:
        headers, chunks = await chat_stream(client)
    assert route(headers) == ("2", "true", "small", "model-b")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY_B
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", None, "upstream_timeout"), (2, "secondary", "model-b", *OK)]
    assert summary(row) == (200, None, 2, 1, "upstream", "small", "model-b")


async def test_14b_first_byte_s_not_idle_s_bounds_the_wait_for_the_first_chunk(
    primary: Upstream, secondary: Upstream, gate: Gate
) -> None:
    # A reasoning model thinks before its first token: first_byte_s allows for that, idle_s should not.
    # (As in 07b, tiergate's idle timer would always fire first if it applied.)
    primary.fake.push(Behavior(ttft=0.25))
    reg = registry(primary, secondary, policy={"retries": 0, "timeouts": {"idle_s": 0.1}})
    async with gate(reg) as client:
        headers, chunks = await chat_stream(client)
    assert route(headers) == ("1", "false", "small", "model-a")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert secondary.fake.requests == []


async def test_15_a_stall_after_the_first_chunk_ends_the_stream_with_an_error_event(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, stall: asyncio.Event
) -> None:
    # The opening chunk comes at once, the next one not before teardown.
    primary.fake.push(Behavior(chunk_delay=stall))
    async with gate(registry(primary, secondary, policy={"timeouts": {"idle_s": SHORT}})) as client:
        stream = await open_stream(client)
        received = []
        with pytest.raises(openai.APIError) as err:
            async for chunk in stream:
                received.append(chunk)
        await stream.close()
    assert [c.model for c in received] == ["model-a"]  # the opening chunk only
    assert "did not answer in time" in err.value.message
    assert secondary.fake.requests == []  # bytes reached the client: no failover any more
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", *OK)]  # the attempt that opened the stream
    assert summary(row) == (200, "upstream_timeout", 1, 0, "estimated", "small", "model-a")
    assert row["stream"] == 1 and row["prompt_tokens"] > 0


async def test_16_a_connection_reset_mid_stream_ends_it_with_an_error_event(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path
) -> None:
    primary.fake.push(Behavior(text="one two three four five six seven eight", reset_after_chunks=3))
    async with gate(registry(primary, secondary)) as client:
        stream = await open_stream(client)
        received = []
        with pytest.raises(openai.APIError) as err:
            async for chunk in stream:
                received.append(chunk)
        await stream.close()
    text = "".join(c.choices[0].delta.content or "" for c in received)
    assert text == "one two three "  # the chunks before the break were relayed
    assert "closed the connection" in err.value.message
    assert secondary.fake.requests == []
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", *OK)]
    assert summary(row) == (200, "upstream_unreachable", 1, 0, "estimated", "small", "model-a")
    assert row["stream"] == 1 and row["completion_tokens"] >= 3


# --- 17: the deadline --------------------------------------------------------------------------------


async def test_17_the_deadline_bounds_all_attempts_together(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    def slow_503(body: dict[str, Any]) -> Behavior:
        clock.advance(6.0)  # each answer takes 6 s (of fake time)
        return Behavior(status=503)

    primary.fake = FakeOpenAI(choose=slow_503)
    # Without a deadline: 2 tries on primary, then secondary. With it (10 s): primary at 0 and 6.5 s,
    # and by 12.5 s the deadline has passed: secondary is never asked.
    async with gate(registry(primary, secondary, policy={"deadline_s": 10})) as client:
        with pytest.raises(openai.InternalServerError) as err:
            await chat(client)
    assert (err.value.status_code, err.value.response.headers["x-tiergate-attempts"]) == (503, "2")
    assert err.value.response.headers["x-should-retry"] == "true"
    assert (len(primary.fake.requests), secondary.fake.requests) == (2, [])
    assert clock.sleeps == [BACKOFF]
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", *FAILED_503), (2, "primary", "model-a", *FAILED_503)]
    assert (row["status"], row["usage_source"]) == (503, "none")


async def test_17b_the_deadline_also_bounds_the_wait_for_an_answer(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, stall: asyncio.Event
) -> None:
    # Real time: the wait is a real timeout. first_byte_s (60 s) would outlast the client's own timeout
    # (10 s, so a missing bound fails instead of hanging); the 0.3 s deadline must end the wait first.
    primary.fake.default = Behavior(delay_headers=stall)
    policy = {"deadline_s": SHORT, "timeouts": {"first_byte_s": 60}}
    async with gate(registry(primary, secondary, policy=policy), real_time=True) as client:
        with pytest.raises(openai.InternalServerError) as err:
            await chat(client.with_options(timeout=10))
    assert (err.value.status_code, err.value.code) == (504, "upstream_timeout")
    assert err.value.response.headers["x-should-retry"] == "true"
    assert (len(primary.fake.requests), secondary.fake.requests) == (1, [])  # no time left for more
    [row] = ledger(db)
    assert row["tries"] == [(1, "primary", "model-a", None, "upstream_timeout")]
    assert (row["status"], row["error_type"], row["usage_source"]) == (504, "upstream_timeout", "none")


# --- 18-19: circuit breakers --------------------------------------------------------------------------

COOLDOWN = 30.0
BREAKER = {"retries": 0, "breaker": {"failures": 2, "cooldown_s": COOLDOWN}}


async def test_18_a_breaker_opens_after_n_failures_skips_the_target_then_probes_once(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock, stall: asyncio.Event
) -> None:
    primary.fake.default = Behavior(status=503)
    async with gate(registry(primary, secondary, policy=BREAKER)) as client:
        for _ in range(2):  # two failures on primary: its breaker opens
            headers, _ = await chat(client)
            assert route(headers) == ("2", "true", "small", "model-b")
        clock.advance(COOLDOWN - 0.5)
        headers, _ = await chat(client)  # still open: primary is skipped, no upstream request
        assert route(headers) == ("1", "true", "small", "model-b")
        assert len(primary.fake.requests) == 2

        clock.advance(0.5)  # cooldown over: half-open
        primary.fake.default = Behavior(delay_headers=stall)  # healthy again, answering once released
        calls = {asyncio.create_task(chat(client)) for _ in range(2)}
        # The probe cannot finish before `stall` is set, so the first call to end is the one that found
        # the probe taken and went on.
        done, pending = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        [skipped], [probe] = done, pending
        assert route(skipped.result()[0]) == ("1", "true", "small", "model-b")
        stall.set()
        assert route((await probe)[0]) == ("1", "false", "small", "model-a")
        assert len(primary.fake.requests) == 3  # exactly one probe

        headers, _ = await chat(client)  # the probe succeeded: closed again
        assert route(headers) == ("1", "false", "small", "model-a")
    assert clock.sleeps == []  # nothing waited for a cooldown
    rows = ledger(db)
    assert len(rows) == 6
    assert [r["tries"] for r in rows[:3]] == [
        [(1, "primary", "model-a", *FAILED_503), (2, "secondary", "model-b", *OK)],
        [(1, "primary", "model-a", *FAILED_503), (2, "secondary", "model-b", *OK)],
        [(1, "secondary", "model-b", *OK)],
    ]
    assert summary(rows[2]) == (200, None, 1, 1, "upstream", "small", "model-b")
    assert sorted(r["tries"][0][1] for r in rows[3:5]) == ["primary", "secondary"]
    assert rows[5]["tries"] == [(1, "primary", "model-a", *OK)]


async def test_18b_a_failed_probe_opens_the_breaker_for_another_cooldown(
    primary: Upstream, secondary: Upstream, gate: Gate, clock: FakeClock
) -> None:
    primary.fake.default = Behavior(status=503)
    async with gate(registry(primary, secondary, policy=BREAKER)) as client:
        for _ in range(2):
            await chat(client)  # opens primary's breaker
        clock.advance(COOLDOWN)
        headers, _ = await chat(client)  # the probe fails: one failure is enough to reopen
        assert route(headers) == ("2", "true", "small", "model-b")
        clock.advance(COOLDOWN - 0.5)
        headers, _ = await chat(client)  # a whole new cooldown, counted from the failed probe
        assert route(headers) == ("1", "true", "small", "model-b")
        assert len(primary.fake.requests) == 3
        clock.advance(0.5)
        primary.fake.default = Behavior()
        headers, _ = await chat(client)  # half-open again: this probe succeeds
        assert route(headers) == ("1", "false", "small", "model-a")


async def test_19_with_every_breaker_open_the_target_reopening_first_is_still_tried(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    # Tier "solo" shares secondary::model-b, so its breaker can be opened before primary's.
    solo = {"solo": {"targets": ["secondary::model-b"]}}
    policy = {"retries": 0, "breaker": {"failures": 1, "cooldown_s": COOLDOWN}}
    reg = registry(primary, secondary, policy=policy, extra_tiers=solo)
    secondary.fake.push(Behavior(status=503))
    primary.fake.default = Behavior(status=503)
    async with gate(reg) as client:
        with pytest.raises(openai.InternalServerError):
            await chat(client, model="tier:solo")  # opens secondary::model-b, until 30 s
        clock.advance(5.0)
        with pytest.raises(openai.InternalServerError):
            await chat(client)  # opens primary::model-a, until 35 s; secondary is skipped
        assert (len(primary.fake.requests), len(secondary.fake.requests)) == (1, 1)
        headers, _ = await chat(client)  # both open: secondary reopens first, so it is tried
    assert route(headers) == ("1", "true", "small", "model-b")
    assert (len(primary.fake.requests), len(secondary.fake.requests)) == (1, 2)
    assert clock.sleeps == []  # neither an instant failure nor a wait for the cooldown
    rows = ledger(db)
    assert [r["tries"] for r in rows] == [
        [(1, "secondary", "model-b", *FAILED_503)],
        [(1, "primary", "model-a", *FAILED_503)],
        [(1, "secondary", "model-b", *OK)],
    ]
    assert summary(rows[2]) == (200, None, 1, 1, "upstream", "small", "model-b")


async def test_19b_a_half_open_probe_not_used_is_not_lost(
    primary: Upstream, secondary: Upstream, gate: Gate, clock: FakeClock
) -> None:
    reg = registry(primary, secondary, policy={"retries": 0, "breaker": {"failures": 1, "cooldown_s": COOLDOWN}})
    primary.fake.push(Behavior(status=503), Behavior(), Behavior(status=503))
    secondary.fake.push(Behavior(status=503))
    async with gate(reg) as client:
        with pytest.raises(openai.InternalServerError):
            await chat(client)  # both fail once: both breakers open
        clock.advance(COOLDOWN)  # both half-open
        headers, _ = await chat(client)  # primary's probe succeeds; secondary was never tried
        assert route(headers) == ("1", "false", "small", "model-a")
        headers, _ = await chat(client)  # primary fails: secondary's probe must still be available
    assert route(headers) == ("2", "true", "small", "model-b")
    assert (len(primary.fake.requests), len(secondary.fake.requests)) == (3, 2)


async def test_19c_client_errors_do_not_open_a_breaker(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path
) -> None:
    primary.fake.push(Behavior(status=400), Behavior(status=422))
    async with gate(registry(primary, secondary, policy=BREAKER)) as client:
        with pytest.raises(openai.BadRequestError):
            await chat(client)
        with pytest.raises(openai.UnprocessableEntityError):
            await chat(client)
        headers, _ = await chat(client)  # primary is healthy: it answered both
    assert route(headers) == ("1", "false", "small", "model-a")
    assert secondary.fake.requests == []


# --- 20-21: fallback tiers and policy layers ----------------------------------------------------------


async def test_20_when_every_target_of_the_tier_fails_the_fallback_tier_serves(
    primary: Upstream, secondary: Upstream, gate: Gate, db: Path, clock: FakeClock
) -> None:
    primary.fake.default = Behavior(status=503)
    secondary.fake = FakeOpenAI(choose=lambda body: Behavior(status=503) if body["model"] == "model-b" else None)
    async with gate(registry(primary, secondary, fallback_tier=True)) as client:
        headers, completion = await chat(client)
    assert route(headers) == ("5", "true", "mid", "model-c")
    assert completion.model == "model-c"
    assert secondary.models() == ["model-b", "model-b", "model-c"]
    assert clock.sleeps == [BACKOFF, BACKOFF]  # one retry on each target of the tier
    assert secondary.fake.requests[-1].body["temperature"] == 0.7  # mid's params for mid's target
    assert "temperature" not in primary.fake.requests[0].body
    [row] = ledger(db)
    assert row["tries"] == [
        (1, "primary", "model-a", *FAILED_503),
        (2, "primary", "model-a", *FAILED_503),
        (3, "secondary", "model-b", *FAILED_503),
        (4, "secondary", "model-b", *FAILED_503),
        (5, "secondary", "model-c", *OK),
    ]
    assert summary(row) == (200, None, 5, 1, "upstream", "mid", "model-c")
    conn = sqlite3.connect(db)
    try:
        tiers = [t for (t,) in conn.execute("SELECT tier FROM attempts ORDER BY n")]
    finally:
        conn.close()
    assert tiers == ["small"] * 4 + ["mid"]


@pytest.mark.parametrize(("task_policy", "primary_tries"), [(None, 2), ({"retries": 0}, 1)])
async def test_21_policy_layers_task_over_tier_over_global(
    primary: Upstream,
    secondary: Upstream,
    gate: Gate,
    db: Path,
    clock: FakeClock,
    task_policy: dict[str, Any] | None,
    primary_tries: int,
) -> None:
    primary.fake.default = Behavior(status=503)
    # global: 3 retries; the tier: 1 (so 2 tries); the task, when it sets one: 0 (so 1 try).
    reg = registry(primary, secondary, policy={"retries": 3}, tier_policy={"retries": 1}, task_policy=task_policy)
    async with gate(reg) as client:
        headers, _ = await chat(client)
    assert route(headers) == (str(primary_tries + 1), "true", "small", "model-b")
    assert len(primary.fake.requests) == primary_tries
    assert clock.sleeps == [BACKOFF] * (primary_tries - 1)
    [row] = ledger(db)
    assert [t[1] for t in row["tries"]] == ["primary"] * primary_tries + ["secondary"]
