"""Property: whatever a client sends to ``POST /v1/chat/completions``, tiergate answers without a 5xx of
its own making and without a traceback, in the response or in any log.

Hypothesis generates bodies (arbitrary JSON, chat requests whose every field may have the wrong type
or an odd value, raw bytes) and headers; they are sent over real HTTP to tiergate on loopback in front of
the fake upstream. Both servers run on an event loop of their own in a background thread, so the
property itself is a plain synchronous function, as Hypothesis wants.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.fakes.openai import FakeOpenAI
from proxy.loopback import serve
from proxy.settings import Settings
from tests.conftest import RULES, shipped_registry


def _dumps(value: Any) -> bytes:
    # the stdlib writes integers of any size (orjson stops at 64 bits): clients may send them
    return json.dumps(value).encode()


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_role = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | st.text(max_size=8)
_content = (
    st.text(max_size=60)
    | st.none()
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "input_audio", "file"]) | st.text(max_size=6)},
            optional={"text": _json, "image_url": _json, "file": _json},
        ),
        max_size=3,
    )
    | _json
)
_message = st.fixed_dictionaries(
    {"role": _role}, optional={"content": _content, "tool_calls": _json, "tool_call_id": _json, "name": _json}
)
_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "tier:small", "tier:nope", "gpt-5.5", ""]) | _json},
    optional={
        "messages": st.lists(_message, max_size=4) | _json,
        "stream": st.booleans() | _json,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": _json}) | _json,
        "max_tokens": st.integers(min_value=-5, max_value=10**12) | _json,
        "max_completion_tokens": st.integers(min_value=-5, max_value=10**12) | _json,
        "temperature": _json,
        "n": _json,
        "tools": _json,
        "tool_choice": _json,
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["json_object", "json_schema"])}) | _json,
        "user": _json,
        "metadata": _json,
    },
)
_body = _chat.map(_dumps) | _json.map(_dumps) | st.binary(max_size=64)
_task = st.none() | st.sampled_from(["summary", "classification", "agent", "nope"]) | st.text(max_size=12)


@pytest.fixture(scope="module")
def served() -> Iterator[httpx.Client]:
    """tiergate and its fake upstream on a loop in a background thread; yields a client of tiergate."""
    ready: dict[str, str] = {}
    started, stop = threading.Event(), threading.Event()

    async def main() -> None:
        async with serve(FakeOpenAI()) as upstream:
            settings = Settings(config=str(RULES), ledger=False)
            async with serve(create_app(settings, shipped_registry(upstream))) as url:
                ready["url"] = url
                started.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30)
    with httpx.Client(base_url=ready["url"], timeout=30) as http:
        yield http
    stop.set()
    thread.join(30)


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info or "Traceback" in text:
            self.seen.append(text)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_body, task=_task)
def test_no_body_gets_a_5xx_of_tiergates_making(served: httpx.Client, body: bytes, task: str | None) -> None:
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    try:
        headers = {"content-type": "application/json"}
        if task and task.isprintable() and task.isascii() and task == task.strip():  # what a client can send
            headers["x-task-type"] = task
        response = served.post("/v1/chat/completions", content=body, headers=headers)
    finally:
        logging.getLogger().removeHandler(tracebacks)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert tracebacks.seen == []
