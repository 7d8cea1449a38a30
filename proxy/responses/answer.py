"""A chat completion as a Responses API ``response`` object, for a call a translated target served.

The object echoes the request's parameters as OpenAI's does (``instructions``, ``tools``, ``text``,
``metadata``, sampling params...), with the served model, the output items (an assistant ``message``
with its ``output_text`` or ``refusal`` part, then a ``function_call`` per tool call) and the usage in
Responses terms. ``finish_reason: length`` is an ``incomplete`` response (``max_output_tokens``), as is a
content filter's stop. Nothing stores it: ``store`` is false.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from proxy.usage import Usage

# chat finish_reason -> (status, incomplete_details.reason)
_ENDINGS = {"length": ("incomplete", "max_output_tokens"), "content_filter": ("incomplete", "content_filter")}


def new_id(prefix: str) -> str:
    """An id for a response or an output item tiergate made (``resp_...``, ``msg_...``, ``fc_...``)."""
    return f"{prefix}_{os.urandom(12).hex()}"


def skeleton(request: Mapping[str, Any], response_id: str, model: str, created_at: int) -> dict[str, Any]:
    """The ``response`` object of ``request``, still ``in_progress`` and without output."""
    tools = request.get("tools")
    text = request.get("text")
    reasoning = request.get("reasoning")
    metadata = request.get("metadata")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": None,
        },
        "store": False,
        "temperature": _number(request.get("temperature"), 1.0),
        "text": text if isinstance(text, dict) and text.get("format") else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [echoed_tool(t) for t in tools] if isinstance(tools, list) else [],
        "top_p": _number(request.get("top_p"), 1.0),
        "truncation": "disabled",
        "metadata": metadata if isinstance(metadata, dict) else {},
        **({"user": request["user"]} if isinstance(request.get("user"), str) else {}),
    }


def echoed_tool(tool: Any) -> Any:
    """A request's tool as a response echoes it: a function tool with every field the spec requires
    (``strict`` defaults to true in the Responses API), any other tool as it came."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    strict = tool.get("strict")
    return {
        **tool,
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": strict if isinstance(strict, bool) else True,
    }


def finished(
    response: dict[str, Any], output: list[dict[str, Any]], finish_reason: Any, usage: Usage | None
) -> dict[str, Any]:
    """``response`` with its output, its final status and its usage."""
    ending = _ENDINGS.get(finish_reason) if isinstance(finish_reason, str) else None
    done = {**response, "status": ending[0] if ending else "completed", "output": output}
    if ending is None:
        done["completed_at"] = int(time.time())
    else:
        done["incomplete_details"] = {"reason": ending[1]}
    if usage is not None:  # no usage is no field: the spec has no null for it
        done["usage"] = usage.to_responses()
    return done


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    """An assistant ``message`` output item with its ``output_text`` (and ``refusal``) part."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append(text_part(text))
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_body(request: Mapping[str, Any], completion: Mapping[str, Any], usage: Usage | None) -> dict[str, Any]:
    """The ``response`` object for a whole chat ``completion`` of ``request``."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason")
    item_status = item_status_for(finish)
    output: list[dict[str, Any]] = []
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(content, str) and content or isinstance(refusal, str) and refusal:
        text = content if isinstance(content, str) and content else None
        output.append(message_item(new_id("msg"), text, refusal if isinstance(refusal, str) else None, item_status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        call_id = str(call.get("id") or new_id("call"))
        name, arguments = str(function.get("name") or ""), str(function.get("arguments") or "")
        output.append(call_item(new_id("fc"), call_id, name, arguments, "completed"))
    created = completion.get("created")
    created_at = created if isinstance(created, int) else int(time.time())
    model = str(completion.get("model") or request.get("model") or "")
    return finished(skeleton(request, new_id("resp"), model, created_at), output, finish, usage)


def item_status_for(finish_reason: Any) -> str:
    """A message item's status for the chat ``finish_reason`` that ended it."""
    return "incomplete" if isinstance(finish_reason, str) and finish_reason in _ENDINGS else "completed"


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def as_completion(response: Mapping[str, Any]) -> dict[str, Any]:
    """A ``response`` object read as a chat completion (id, model, text, finish reason): what the
    telemetry, which speaks chat, records of it."""
    texts: list[str] = []
    calls = False
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        calls = calls or item.get("type") == "function_call"
        content = item.get("content") if item.get("type") == "message" else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "output_text":
                texts.append(str(part.get("text") or ""))
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    finish = {"max_output_tokens": "length", "content_filter": "content_filter"}.get(str(reason))
    message = {"role": "assistant", "content": "".join(texts) if texts else None}
    choice = {"index": 0, "message": message, "finish_reason": finish or ("tool_calls" if calls else "stop")}
    return {"id": response.get("id"), "model": response.get("model"), "choices": [choice]}
