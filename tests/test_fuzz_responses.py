"""Property: whatever a client sends to ``POST /v1/responses``, tiergate answers without a 5xx of its own
making and without a traceback, in the response or in any log.

As tests/test_fuzz.py does for chat: Hypothesis bodies (Responses requests whose every field may have
the wrong type or an odd value, arbitrary JSON, raw bytes) over real HTTP to tiergate in front of the fake
upstream, on tasks served natively (``summary``: OpenAI) and by translation (``classification``: the local
handler, then the small tier natively).
"""

from __future__ import annotations

import logging

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fuzz import _dumps, _json, _Tracebacks, served

__all__ = ["served"]  # the fixture: tiergate and its fake upstream on a loop of their own

_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "input_image", "input_file", "output_text", "refusal"]) | _json},
    optional={"text": _json, "image_url": _json, "file_id": _json, "file_data": _json, "refusal": _json},
)
_item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "item_reference"])
        | _json,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | _json,
        "content": st.text(max_size=40) | st.lists(_part, max_size=3) | _json,
        "call_id": st.text(max_size=8) | _json,
        "name": _json,
        "arguments": st.just("{}") | _json,
        "output": st.text(max_size=20) | st.lists(_part, max_size=2) | _json,
    },
)
_tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "web_search", "custom", "mcp"]) | _json},
    optional={"name": st.text(max_size=8) | _json, "parameters": _json, "strict": _json},
)
_responses = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "tier:small", "tier:nope", "gpt-5.5", ""]) | _json},
    optional={
        "input": st.text(max_size=60) | st.lists(_item, max_size=4) | _json,
        "instructions": st.text(max_size=30) | _json,
        "tools": st.lists(_tool, max_size=3) | _json,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | _json,
        "text": st.fixed_dictionaries({}, optional={"format": _json, "verbosity": _json}) | _json,
        "reasoning": st.fixed_dictionaries({}, optional={"effort": _json, "summary": _json}) | _json,
        "max_output_tokens": st.integers(min_value=-5, max_value=10**12) | _json,
        "stream": st.booleans() | _json,
        "store": st.booleans() | _json,
        "previous_response_id": _json,
        "include": _json,
        "metadata": _json,
        "temperature": _json,
    },
)
_body = _responses.map(_dumps) | _json.map(_dumps) | st.binary(max_size=64)
_task = st.sampled_from(["summary", "classification"])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_body, task=_task)
def test_no_responses_body_gets_a_5xx_of_tiergates_making(served: httpx.Client, body: bytes, task: str) -> None:
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    try:
        headers = {"content-type": "application/json", "x-task-type": task}
        response = served.post("/v1/responses", content=body, headers=headers)
    finally:
        logging.getLogger().removeHandler(tracebacks)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert tracebacks.seen == []
