"""The cache's parts on their own: a stream assembled into its completion and a completion replayed as a
stream are inverse (on generated completions), replayed chunks are valid OpenAI chunks, and the SQLite
store persists, expires, and keeps to its size bound oldest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.answer import Answer, Assembler, replay
from proxy.cache.store import Entry, SQLiteCacheStore, Status
from proxy.usage import Usage
from tests.test_openai_spec import assert_valid

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
CALL = st.fixed_dictionaries(
    {"id": st.from_regex(r"call_[a-z0-9]{4}", fullmatch=True), "name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
     "arguments": st.sampled_from(["{}", '{"city": "Paris"}', '{"n": [1, 2]}'])}
)  # fmt: skip


@st.composite
def completions(draw: st.DrawFn) -> dict[str, Any]:
    choices = []
    for index in range(draw(st.integers(1, 3))):
        calls = draw(st.lists(CALL, max_size=2))
        content = None if calls and draw(st.booleans()) else draw(TEXT)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls
            ]
        finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
    return {
        "id": "chatcmpl-" + draw(st.from_regex(r"[A-Za-z0-9]{8}", fullmatch=True)),
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": "gpt-5.4-mini",
        "choices": choices,
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


@settings(max_examples=60, deadline=None)
@given(completions(), st.booleans())
def test_replaying_a_completion_and_assembling_the_stream_gives_it_back(body: dict[str, Any], usage: bool) -> None:
    chunks = replay(body, include_usage=usage)
    assembler = Assembler()
    for chunk in chunks:
        assembler.feed(chunk)
    again = assembler.completion()
    assert again is not None
    assert again["choices"] == body["choices"]
    assert (again["id"], again["model"], again["created"]) == (body["id"], body["model"], body["created"])
    assert again.get("usage") == (body["usage"] if usage else None)


@settings(max_examples=30, deadline=None)
@given(completions())
def test_every_replayed_chunk_is_a_valid_stream_chunk(body: dict[str, Any]) -> None:
    for chunk in replay(body, include_usage=True):
        assert_valid("CreateChatCompletionStreamResponse", chunk)


def test_a_stream_that_never_finished_is_not_a_completion() -> None:
    assembler = Assembler()
    assembler.feed({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hal"}}]})
    assert assembler.completion() is None
    assert Assembler().completion() is None


def _entry(text: str, created: float, expires: float | None = None, version: str | None = None) -> Entry:
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}  # fmt: skip
    return Entry(Answer(body, Usage(3, len(text)), "openai", "m", "small", created), version, expires)


async def test_the_store_persists_entries_and_statuses_across_instances(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    store = SQLiteCacheStore(path)
    await store.put("a", _entry("alpha", 100.0, version="v1"))
    await store.set_status(Status("gen::a", "v1", "ready", 100.0))
    await store.aclose()
    again = SQLiteCacheStore(path)
    got = await again.get("a")
    status = await again.status("gen::a")
    missing = await again.get("b")
    await again.aclose()
    assert got is not None and got.version == "v1" and got.answer.body["choices"][0]["message"]["content"] == "alpha"
    assert got.answer.usage == Usage(3, 5) and got.answer.created == 100.0
    assert status == Status("gen::a", "v1", "ready", 100.0)
    assert missing is None


async def test_prune_drops_what_expired_then_the_oldest_beyond_the_size_bound(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    size = len(_entry("x" * 100, 0.0).answer.to_bytes())
    store = SQLiteCacheStore(path, max_bytes=3 * size + 50)  # room for three, whatever their digits
    await store.put("expired", _entry("x" * 100, 10.0, expires=50.0))
    for i, created in enumerate((20.0, 30.0, 40.0, 60.0, 70.0)):
        await store.put(f"k{i}", _entry("x" * 100, created))
    dropped = await store.prune(now=55.0)
    left = {k: await store.get(k, shared=True) is not None for k in ("expired", "k0", "k1", "k2", "k3", "k4")}
    in_memory = store.peek("k0")
    await store.aclose()
    assert dropped == 3  # the expired one, then the two oldest, to fit three entries
    assert left == {"expired": False, "k0": False, "k1": False, "k2": True, "k3": True, "k4": True}
    assert in_memory is None  # pruned from the memory front too


async def test_the_memory_front_is_bounded_and_the_file_still_has_everything(tmp_path: Path) -> None:
    store = SQLiteCacheStore(str(tmp_path / "l.db"), memory=2)
    for key in ("a", "b", "c"):
        await store.put(key, _entry(key, 1.0))
    held = [store.peek(k) is not None for k in ("a", "b", "c")]
    from_file = await store.get("a")
    await store.aclose()
    assert held == [False, True, True]
    assert from_file is not None and from_file.answer.body["choices"][0]["message"]["content"] == "a"


def test_freshness_honours_expiry_and_max_age() -> None:
    entry = _entry("t", created=100.0, expires=200.0)
    assert entry.fresh(150.0) and not entry.fresh(200.0)
    assert entry.fresh(150.0, max_age=60) and not entry.fresh(150.0, max_age=40)
    assert _entry("keyed", created=0.0).fresh(10**12)  # no expiry: keyed generations
