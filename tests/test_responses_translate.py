"""The Responses <-> chat translation on its own: shapes the fakes do not produce, each event spec-checked.

The end-to-end tests (tests/test_responses.py) run the common shapes through real servers; these feed
the translators chat shapes an upstream may send (text after a tool call, a refusal, a cut-off answer,
no usage) and Responses inputs a client may send, and check every event against the spec.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.responses.answer import response_body
from proxy.responses.events import Events
from proxy.responses.request import chat_request, chat_view
from proxy.responses.state import bound_by
from proxy.usage import Usage
from tests.responses_spec import assert_event, assert_response

REQUEST: dict[str, Any] = {"model": "auto", "input": "Hi"}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices,
            **extra}  # fmt: skip


def run(chunks: list[dict[str, Any]], request: dict[str, Any] = REQUEST) -> list[dict[str, Any]]:
    events = Events(request)
    out = [e for c in chunks for e in events.feed(c)] + events.finish()
    for event in out:
        assert_event(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_text_then_tool_calls_then_text_keep_their_order() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": ""}}
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Let me look. "}),
            chunk({"tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "other", "arguments": "{}"}}]}),
            chunk({"content": "Done."}),
            chunk({}, "tool_calls"),
            chunk(None, usage=Usage(prompt_tokens=10, completion_tokens=7, cache_write_tokens=4).to_openai()),
        ]
    )
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert [(i["type"], i.get("name")) for i in final["output"]] == [
        ("message", None),
        ("function_call", "look"),
        ("function_call", "other"),
        ("message", None),
    ]
    assert final["output"][1]["arguments"] == '{"q":"x"}' and final["output"][1]["call_id"] == "call_1"
    assert [p["text"] for p in final["output"][0]["content"]] == ["Let me look. "]
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 4}
    assert final["usage"]["total_tokens"] == 17
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1, 2, 3]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"q":', '"x"}', "{}"]


def test_a_refusal_and_a_cut_off_answer() -> None:
    events = run([chunk({"content": "I can"}), chunk({"refusal": "No."}), chunk({}, "length")])
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"} and "usage" not in final
    (message,) = final["output"]
    assert message["status"] == "incomplete"
    assert message["content"] == [
        {"type": "output_text", "text": "I can", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "No."},
    ]
    assert "response.refusal.done" in [e["type"] for e in events]


def test_an_empty_stream_still_opens_and_completes() -> None:
    events = run([])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]


def test_a_whole_completion_becomes_a_response() -> None:
    completion = {
        "id": "chatcmpl-1",
        "created": 5,
        "model": "claude",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Looking.",
                    "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
            }
        ],
    }
    request = {"model": "auto", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    body = response_body(request, completion, Usage(prompt_tokens=3, completion_tokens=2))
    response = assert_response(body)
    assert response.output_text == "Looking." and response.created_at == 5 and response.model == "claude"
    assert [i.type for i in response.output] == ["message", "function_call"]
    assert body["tools"][0]["strict"] is True  # echoed with the spec's required fields


def test_input_items_become_chat_messages() -> None:
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"city":"P"}'},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"city":"L"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        ],
        "text": {"format": {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 100,
        "tool_choice": {"type": "function", "name": "w"},
        "store": False,
        "include": [],
        "prompt_cache_key": "k",
    }
    chat = chat_request(body, "anthropic::claude")
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"P"}'}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city":"L"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
    ]
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": True},
    }
    assert (chat["reasoning_effort"], chat["max_tokens"]) == ("low", 100)
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}


def test_the_lenient_view_leaves_out_what_it_cannot_translate() -> None:
    body = {
        "model": "auto",
        "previous_response_id": "resp_1",
        "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}],
        "input": [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "Hi"}],
    }
    view = chat_view(body)
    assert view["messages"] == [{"role": "user", "content": "Hi"}]
    assert view["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(InvalidRequest) as caught:
        chat_request(body, "anthropic::claude")
    assert caught.value.param == "previous_response_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": {"id": "conv_1"}}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "mcp", "server_label": "x"}]}, "tools[1]"),
        ({"input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}]}, "input[1]"),
        ({"store": False, "tools": [{"type": "custom", "name": "grammar"}]}, None),
        ({"store": None, "input": "x"}, None),
    ],
)
def test_what_binds_a_request_to_its_provider(body: dict[str, Any], field: str | None) -> None:
    assert bound_by({"model": "auto", **body}) == field
