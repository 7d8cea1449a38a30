"""Generation off the request path, through the official SDK against the fake upstream, whose request count
proves what reached it: keyed generations (hit, stale while one regeneration runs, failed regeneration,
restart), ``/v1/precompute`` and its 429, the exact cache (TTL, Cache-Control, temperature, coalescing),
stream replay checked against OpenAI's spec, and the ledger's cache rows and savings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import AsyncOpenAI

from proxy import rules
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.ledger import audit, report
from proxy.registry import Registry
from tests.conftest import CLIENT_KEY, CLOSED_URL, RULES, UPSTREAM_KEY, FakeClock, ProxyFactory, sdk
from tests.test_ledger import rows
from tests.test_openai_spec import assert_valid, post_stream

BOARD = {"X-Task-Type": "narrative", "X-Tiergate-Key": "dashboard:42:narrative"}
ASK = [{"role": "user", "content": "Tell the story of account 42 this week"}]
SUMMARY = {"X-Task-Type": "summary"}
TO_SUMMARISE = [{"role": "user", "content": "Summarise: the deploy paused and resumed, nothing was lost"}]


def _registry(upstream_url: str, **task_cache: dict[str, Any]) -> Registry:
    """The shipped rules.yaml on the fake, no retries or fallback tiers (the anthropic targets are a closed
    port, so an upstream fault is what the client sees), and ``cache:`` on the tasks named."""
    doc = yaml.safe_load(RULES.read_text())
    doc["policy"] = {"retries": 0}
    for tier in doc["tiers"].values():
        tier.pop("policy", None)
        tier.pop("fallback_tier", None)
    for task, policy in task_cache.items():
        doc["tasks"][task]["cache"] = policy
    env = {"OPENAI_BASE_URL": upstream_url + "/v1", "OPENAI_API_KEY": UPSTREAM_KEY, "ANTHROPIC_BASE_URL": CLOSED_URL}
    return rules.loads(yaml.safe_dump(doc, sort_keys=False), environ=env)


def _chats(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


async def _ask(client: AsyncOpenAI, version: str | None = None, **headers: str) -> tuple[str, str]:
    """One keyed dashboard read: (x-tiergate-cache, the answer's text)."""
    extra = {**BOARD, **({"X-Tiergate-Version": version} if version else {}), **headers}
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=ASK, extra_headers=extra)  # type: ignore[arg-type]
    return raw.headers["x-tiergate-cache"], raw.parse().choices[0].message.content or ""


async def _summary(client: AsyncOpenAI, **kwargs: Any) -> tuple[str, str]:
    headers = {**SUMMARY, **kwargs.pop("extra_headers", {})}
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=kwargs.pop("messages", TO_SUMMARISE), extra_headers=headers, **kwargs
    )
    return raw.headers["x-tiergate-cache"], raw.parse().choices[0].message.content or ""


def _http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10.0)


async def _until(check: Callable[[], Awaitable[bool]], what: str, tries: int = 500) -> None:
    """Poll ``check`` (background work finishing) a bounded number of times; no timing is asserted."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def _status(http: httpx.AsyncClient, key: str) -> dict[str, Any]:
    r = await http.get(f"/v1/precompute/{key}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _becomes(http: httpx.AsyncClient, key: str, *states: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen.update(await _status(http, key))
        return seen["status"] in states

    await _until(check, f"{key} {states}")
    return seen


# --- keyed generations ------------------------------------------------------------------------------


async def test_a_keyed_generation_is_made_once_then_served_from_the_store(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with start_proxy(_registry(upstream_url), db=str(db)) as url:
        client = sdk(url)
        first = await _ask(client, "v1")
        second = await _ask(client, "v1")
        unversioned = await _ask(client)  # no version asked: whatever is stored is the answer
        await client.close()
    assert [first[0], second[0], unversioned[0]] == ["miss", "hit", "hit"]
    assert first[1] == second[1] == unversioned[1] and first[1].startswith("Fake reply from gpt-5.4-mini")
    assert _chats(fake) == 1
    ledger = rows(db)
    assert [r["cache"] for r in ledger] == ["miss", "hit", "hit"]
    miss, hit, _ = ledger
    assert miss["cost_usd"] > 0 and miss["cost_avoided_usd"] is None
    # a hit bills nothing and avoided what the generation it replays cost
    assert hit["cost_usd"] == 0 and hit["cost_avoided_usd"] == pytest.approx(miss["cost_usd"])
    assert hit["usage_source"] == "cache" and hit["model"] == miss["model"]
    assert hit["prompt_tokens"] == miss["prompt_tokens"]


async def test_a_new_version_is_served_stale_at_once_while_one_regeneration_runs(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    async with start_proxy(_registry(upstream_url), db=str(tmp_path / "l.db")) as url, _http(url) as http:
        client = sdk(url)
        fake.push(Behavior(text="the week of v1"))
        assert await _ask(client, "v1") == ("miss", "the week of v1")
        gate = asyncio.Event()  # the regeneration's upstream answers only when the test says so
        fake.push(Behavior(text="the week of v2", delay_headers=gate))
        reads = await asyncio.gather(*(_ask(client, "v2") for _ in range(20)))
        assert reads == [("stale", "the week of v1")] * 20
        assert (await _status(http, "dashboard:42:narrative"))["status"] in ("queued", "running")
        gate.set()
        done = await _becomes(http, "dashboard:42:narrative", "ready")
        assert (done["version"], done["error"]) == ("v2", None)
        assert await _ask(client, "v2") == ("hit", "the week of v2")
        # an older version asked for now is served stale too, and regenerates again
        fake.push(Behavior(text="the week of v1 again"))
        assert await _ask(client, "v1") == ("stale", "the week of v2")
        await _becomes(http, "dashboard:42:narrative", "ready")
        await client.close()
    assert _chats(fake) == 3  # v1, one v2 regeneration for 20 readers, v1 again


async def test_a_failed_regeneration_keeps_serving_the_last_good_answer_and_says_why(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    wall = FakeClock(1_800_000_000.0)
    async with (
        start_proxy(_registry(upstream_url), db=str(tmp_path / "l.db"), wall=wall) as url,
        _http(url) as http,
    ):
        client = sdk(url)
        fake.push(Behavior(text="good"))
        assert await _ask(client, "v1") == ("miss", "good")
        fake.push(Behavior(status=503))
        assert await _ask(client, "v2") == ("stale", "good")
        failed = await _becomes(http, "dashboard:42:narrative", "failed")
        assert failed["version"] == "v2" and "Fake upstream error" in failed["error"]
        assert UPSTREAM_KEY not in json.dumps(failed)
        # readers keep the good answer, and a failing upstream is not asked again once per reader
        for _ in range(3):
            assert await _ask(client, "v2") == ("stale", "good")
        # no regeneration was queued (queuing one marks the key queued at once)
        assert (await _status(http, "dashboard:42:narrative"))["status"] == "failed"
        assert _chats(fake) == 2
        wall.advance(31)  # past the retry backoff: the next reader starts a new attempt
        fake.push(Behavior(text="better"))
        assert await _ask(client, "v2") == ("stale", "good")
        await _becomes(http, "dashboard:42:narrative", "ready")
        assert await _ask(client, "v2") == ("hit", "better")
        await client.close()
    assert _chats(fake) == 3


async def test_stored_generations_survive_a_restart(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = str(tmp_path / "l.db")
    async with start_proxy(_registry(upstream_url), db=db) as url:
        client = sdk(url)
        made = await _ask(client, "v1")
        await client.close()
    async with start_proxy(_registry(upstream_url), db=db) as url:
        client = sdk(url)
        again = await _ask(client, "v1")
        await client.close()
    assert (made[0], again) == ("miss", ("hit", made[1]))
    assert _chats(fake) == 1


async def test_a_stored_answer_is_replayed_to_a_streaming_client_and_every_chunk_is_valid(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    async with start_proxy(_registry(upstream_url), db=str(tmp_path / "l.db")) as url:
        client = sdk(url)
        state, text = await _ask(client, "v1")
        await client.close()
        body = {"model": "auto", "messages": ASK, "stream": True, "stream_options": {"include_usage": True}}
        chunks = await post_stream(url, body, **BOARD, **{"X-Tiergate-Version": "v1"})
        plain = await post_stream(url, {**body, "stream_options": None}, **BOARD)
    assert state == "miss"
    for chunk in chunks + plain:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c.get("usage") is None for c in plain)  # no usage chunk unless the client asked
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert _chats(fake) == 1


async def test_a_streamed_generation_is_stored_and_served_to_a_plain_request(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    async with start_proxy(_registry(upstream_url), db=str(tmp_path / "l.db")) as url:
        client = sdk(url)
        stream = await client.chat.completions.create(
            model="auto",
            messages=ASK,
            stream=True,
            extra_headers={**BOARD, "X-Tiergate-Version": "v1"},  # type: ignore[arg-type]
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert await _ask(client, "v1") == ("hit", streamed)
        await client.close()
    assert _chats(fake) == 1


# --- /v1/precompute ---------------------------------------------------------------------------------


async def test_precompute_answers_202_at_once_and_the_page_later_hits(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with start_proxy(_registry(upstream_url), db=str(db)) as url, _http(url) as http:
        gate = asyncio.Event()
        fake.push(Behavior(text="precomputed story", delay_headers=gate))
        posted = await http.post(
            "/v1/precompute",
            json={"model": "auto", "messages": ASK},
            headers={**BOARD, "X-Tiergate-Version": "2026-12-01"},
        )
        # answered while the generation is still held upstream
        assert posted.status_code == 202
        assert posted.json() == {"key": "dashboard:42:narrative", "version": "2026-12-01", "status": "queued"}
        assert (await _status(http, "dashboard:42:narrative"))["status"] in ("queued", "running")
        gate.set()
        ready = await _becomes(http, "dashboard:42:narrative", "ready")
        assert set(ready) == {"key", "version", "status", "updated_at", "error"} and ready["error"] is None
        client = sdk(url)
        assert await _ask(client, "2026-12-01") == ("hit", "precomputed story")
        await client.close()
        missing = await http.get("/v1/precompute/dashboard:7:narrative")
        no_key = await http.post("/v1/precompute", json={"model": "auto", "messages": ASK})
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert no_key.status_code == 400 and no_key.json()["error"]["param"] == "X-Tiergate-Key"
    assert _chats(fake) == 1
    generated = [r for r in rows(db) if r["request_id"] and r["request_id"].startswith("gen_")]
    assert len(generated) == 1 and generated[0]["task"] == "narrative" and generated[0]["cost_usd"] > 0


async def test_a_full_generation_queue_answers_429_with_retry_after(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    settings = {"db": str(tmp_path / "l.db"), "generation_concurrency": 1, "generation_queue": 1}
    async with start_proxy(_registry(upstream_url), **settings) as url, _http(url) as http:
        gate = asyncio.Event()
        fake.push(Behavior(delay_headers=gate), Behavior())

        async def post(n: int) -> httpx.Response:
            headers = {"X-Task-Type": "narrative", "X-Tiergate-Key": f"board:{n}"}
            return await http.post("/v1/precompute", json={"model": "auto", "messages": ASK}, headers=headers)

        assert (await post(1)).status_code == 202
        await _becomes(http, "board:1", "running")  # the one worker holds it: the queue is empty again
        assert (await post(2)).status_code == 202  # queued
        full = await post(3)
        again = await post(2)  # already queued: not queued twice, and not refused
        gate.set()
        await _becomes(http, "board:2", "ready")
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
    assert full.json()["error"]["code"] == "precompute_queue_full"
    assert full.json()["error"]["type"] == "rate_limit_error"
    assert again.status_code == 202
    assert _chats(fake) == 2


# --- the exact cache --------------------------------------------------------------------------------


async def test_equal_requests_are_answered_from_the_exact_cache_whatever_their_stream_mode(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(tmp_path / "l.db")) as url:
        client = sdk(url)
        first = await _summary(client)
        second = await _summary(client, user="someone-else")  # `user` does not change the answer
        other = await _summary(client, messages=[{"role": "user", "content": "Summarise: another text"}])
        streamed = await post_stream(url, {"model": "auto", "messages": TO_SUMMARISE, "stream": True}, **SUMMARY)
        untiered = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=TO_SUMMARISE,
            extra_headers={"X-Task-Type": "agent"},  # type: ignore[arg-type]
        )
        await client.close()
    assert [first[0], second[0], other[0]] == ["miss", "hit", "miss"]
    assert first[1] == second[1] != other[1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"]) == first[1]
    assert "x-tiergate-cache" not in untiered.headers  # a task without cache: no cache, no header
    assert _chats(fake) == 3  # first, other, agent


async def test_a_streamed_miss_fills_the_exact_cache_for_a_plain_request(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(tmp_path / "l.db")) as url:
        body = {"model": "auto", "messages": TO_SUMMARISE, "stream": True, "stream_options": {"include_usage": True}}
        chunks = await post_stream(url, body, **SUMMARY)
        client = sdk(url)
        plain = await _summary(client)
        await client.close()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert plain == ("hit", text)
    assert _chats(fake) == 1


async def test_an_entry_expires_after_its_ttl(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    wall = FakeClock(1_800_000_000.0)
    registry = _registry(upstream_url, summary={"ttl_s": 60})
    async with start_proxy(registry, db=str(tmp_path / "l.db"), wall=wall) as url:
        client = sdk(url)
        states = [(await _summary(client))[0]]
        wall.advance(59)
        states.append((await _summary(client))[0])
        wall.advance(2)
        states.append((await _summary(client))[0])
        await client.close()
    assert states == ["miss", "hit", "miss"]
    assert _chats(fake) == 2


async def test_cache_control_no_cache_no_store_and_max_age(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    wall = FakeClock(1_800_000_000.0)
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(tmp_path / "l.db"), wall=wall) as url:
        client = sdk(url)
        fake.push(Behavior(text="one"), Behavior(text="two"), Behavior(text="three"), Behavior(text="four"))
        got = [await _summary(client)]
        got.append(await _summary(client, extra_headers={"Cache-Control": "no-cache"}))  # fetched, then stored
        got.append(await _summary(client))
        got.append(await _summary(client, extra_headers={"Cache-Control": "no-store"}))  # neither read nor stored
        got.append(await _summary(client))
        wall.advance(100)
        got.append(await _summary(client, extra_headers={"Cache-Control": "max-age=300"}))  # 100 s old: fine
        got.append(await _summary(client, extra_headers={"Cache-Control": "max-age=50"}))  # too old: fetched
        got.append(await _summary(client))
        await client.close()
    assert got == [
        ("miss", "one"),
        ("miss", "two"),
        ("hit", "two"),
        ("bypass", "three"),
        ("hit", "two"),
        ("hit", "two"),
        ("miss", "four"),
        ("hit", "four"),
    ]
    assert _chats(fake) == 4


async def test_answers_that_vary_are_cached_only_when_the_task_says_so(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    strict = _registry(upstream_url, summary={"ttl_s": 3600})
    loose = _registry(upstream_url, summary={"ttl_s": 3600, "nondeterministic": True})
    states: dict[str, list[str]] = {}
    for name, registry in (("strict", strict), ("loose", loose)):
        async with start_proxy(registry, db=str(tmp_path / f"{name}.db")) as url:
            client = sdk(url)
            hot = [(await _summary(client, temperature=0.7))[0] for _ in range(2)]
            many = [(await _summary(client, n=2))[0] for _ in range(2)]
            cold = [(await _summary(client, temperature=0))[0] for _ in range(2)]
            states[name] = hot + many + cold
            await client.close()
    assert states["strict"] == ["bypass", "bypass", "bypass", "bypass", "miss", "hit"]
    assert states["loose"] == ["miss", "hit", "miss", "hit", "miss", "hit"]


async def test_a_hundred_equal_concurrent_misses_make_one_upstream_call(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url)
        gate = asyncio.Event()
        fake.push(Behavior(delay_headers=gate, text="the one answer"))
        calls = [asyncio.create_task(_summary(client)) for _ in range(100)]
        await _until(_returns(lambda: _chats(fake) == 1), "the leader reached the upstream")
        for _ in range(50):
            await asyncio.sleep(0)  # let the other 99 reach the flight
        gate.set()
        answers = await asyncio.gather(*calls)
        await client.close()
    assert _chats(fake) == 1
    assert {text for _, text in answers} == {"the one answer"}
    states = sorted(state for state, _ in answers)
    assert states.count("miss") == 1 and set(states) <= {"miss", "coalesced", "hit"}
    ledger = rows(db)
    assert len(ledger) == 100
    assert sum(r["cache"] == "miss" for r in ledger) == 1
    followers = [r for r in ledger if r["cache"] != "miss"]
    assert all(r["cost_usd"] == 0 and r["cost_avoided_usd"] > 0 for r in followers)


def _returns(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


# --- the audit --------------------------------------------------------------------------------------


async def test_the_audit_shows_cache_hits_and_what_they_saved_next_to_the_tier_savings(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url)
        for _ in range(4):
            await _summary(client)
        await client.close()
    ledger = rows(db)
    [summary] = [g for g in audit.summarize(str(db), "task").groups if g.key == "summary"]
    miss = ledger[0]
    assert summary.cached == 3
    assert summary.cache_saved_usd == pytest.approx(3 * miss["cost_usd"])
    # the tier's saving counts every call as generated on its tier; the cache's on top of it
    tier_saving = 4 * (miss["baseline_cost_usd"] - miss["cost_usd"])
    assert summary.savings_usd == pytest.approx(tier_saving)
    assert summary.cost_usd == pytest.approx(miss["cost_usd"])
    table = report.report(str(db))
    assert "cache saved" in table.splitlines()[3]
    as_json = json.loads(report.report(str(db), fmt="json"))
    assert as_json["total"]["cached"] == 3


async def test_stored_answers_belong_to_the_client_key_that_asked(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    keys = ("sk-app-one-0000000000", "sk-app-two-0000000000")
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    async with start_proxy(registry, db=str(tmp_path / "l.db"), api_keys=keys) as url:
        one, two = (AsyncOpenAI(base_url=url + "/v1", api_key=k, max_retries=0) for k in keys)
        fake.push(Behavior(text="one's story"), Behavior(text="two's story"))
        got = [await _ask(one, "v1"), await _ask(two, "v1"), await _ask(one, "v1")]
        exact = [(await _summary(one))[0], (await _summary(two))[0], (await _summary(two))[0]]
        await _ask(one, "v1", **{"X-Tiergate-Key": "one-only"})
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {keys[1]}"}) as http:
            seen_by_two = [(await http.get(f"/v1/precompute/{k}")).status_code for k in BOARD_AND_ONE_ONLY]
        for c in (one, two):
            await c.close()
    assert got == [("miss", "one's story"), ("miss", "two's story"), ("hit", "one's story")]
    assert exact == ["miss", "miss", "hit"]
    assert seen_by_two == [200, 404]  # its own generation is ready; one's is not two's to see


BOARD_AND_ONE_ONLY = ("dashboard:42:narrative", "one-only")


# --- tiergate precompute FILE.jsonl -----------------------------------------------------------------


async def test_the_precompute_command_posts_a_batch_and_waits_for_it(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    batch_file = tmp_path / "boards.jsonl"
    lines = [
        {"key": f"dashboard:{n}:narrative", "version": "d1", "task": "narrative",
         "body": {"model": "auto", "messages": [{"role": "user", "content": f"The week of account {n}"}]}}
        for n in (1, 2, 3)
    ]  # fmt: skip
    text = [json.dumps(line) for line in lines]
    text.insert(1, json.dumps({"version": "d1", "body": {"model": "auto", "messages": []}}))  # no key
    batch_file.write_text("\n".join(text) + "\n\n")
    async with start_proxy(_registry(upstream_url), db=str(tmp_path / "l.db")) as url:
        code, out = await asyncio.to_thread(_cli, ["precompute", str(batch_file), "--url", url, "--wait"])
        client = sdk(url)
        states = [(await _ask(client, "d1", **{"X-Tiergate-Key": f"dashboard:{n}:narrative"}))[0] for n in (1, 2, 3)]
        await client.close()
    assert code == 1  # one line was refused
    assert "posted 3 of 4 generations" in out and "ready 3, failed 0" in out
    assert "line 2: no 'key'" in out
    assert states == ["hit", "hit", "hit"]
    assert _chats(fake) == 3


async def test_the_batch_waits_out_a_full_queue_as_retry_after_says(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    from proxy.cache import batch

    gate = asyncio.Event()
    fake.default = Behavior(delay_headers=gate)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        gate.set()  # the upstream answers: the queue drains
        await asyncio.sleep(0.01)

    jobs, bad = batch.parse(
        json.dumps({"key": f"k{n}", "task": "narrative", "body": {"model": "auto", "messages": ASK}}) for n in range(4)
    )
    settings = {"db": str(tmp_path / "l.db"), "generation_concurrency": 1, "generation_queue": 1}
    async with start_proxy(_registry(upstream_url), **settings) as url:
        outcome = await batch.run(jobs, url, None, concurrency=4, wait=True, sleep=sleep)
    assert not bad and outcome.ok and (outcome.posted, outcome.ready) == (4, 4)
    assert 5.0 in slept  # the server's retry-after
    assert _chats(fake) == 4


def _cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    from proxy.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


async def test_hostile_cache_headers_get_an_answer_never_a_500(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    registry = _registry(upstream_url, summary={"ttl_s": 3600})
    odd = [
        {"X-Tiergate-Key": "k" * 10_000, "X-Tiergate-Version": "v" * 10_000},
        {"X-Tiergate-Key": "../../etc/passwd", "X-Tiergate-Version": "'; DROP TABLE cache; --"},
        {"Cache-Control": "max-age=-5, no-store=maybe, max-age=99999999999999999999"},
        {"Cache-Control": "max-age=abc,,,;;"},
    ]
    async with start_proxy(registry, db=str(tmp_path / "l.db")) as url, _http(url) as http:
        client = sdk(url)
        states = [(await _summary(client, extra_headers=headers))[0] for headers in odd]
        long_status = await http.get("/v1/precompute/" + "k" * 300)
        await client.close()
    assert states[0] == "miss" and states[1] == "miss"
    assert states[2] == "bypass" and states[3] in ("hit", "miss")
    assert long_status.status_code == 200  # the 10,000-character key was cut to 256 characters: those name it
