"""OpenAI chat body -> Anthropic Messages body (``messages_request``); unmappable input is an ``InvalidRequest``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import InvalidRequest
from proxy.providers.anthropic import json_object

log = logging.getLogger("tiergate.providers.anthropic")

# From this API version on, temperature/top_p/top_k are rejected even at their default values.
_NO_SAMPLING_SINCE = "2026-10-21"
_SAMPLING = ("temperature", "top_p", "top_k")
# Messages-only fields passed through as-is (set as target params in rules.yaml, or via extra_body).
_NATIVE = ("thinking", "cache_control", "inference_geo")
# OpenAI fields this module reads; any other field is dropped.
_MAPPED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stream", "tools", "tool_choice", "n", "stop",
     "parallel_tool_calls", "response_format", "reasoning_effort", "user", "safety_identifier", "output_config",
     "stream_options",
     *_SAMPLING, *_NATIVE}
)  # fmt: skip
_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
# The Messages API has a JSON mode only with a schema; ``response_format: json_object`` asks for any
# JSON object, so it becomes an instruction after any hoisted system text (and a check of the answer).
JSON_OBJECT_INSTRUCTION = json_object.INSTRUCTION


def messages_request(body: Mapping[str, Any], *, version: str, default_max_tokens: int) -> dict[str, Any]:
    """The Messages body for an OpenAI chat body; raises ``InvalidRequest`` naming the field it cannot map."""
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest(
            "Invalid 'n': this tier's model (Anthropic) returns one choice per request; 'n' must be 1.",
            param="n",
            code="invalid_value",
        )
    system, turns = _turns(body.get("messages") or [])
    response_format = body.get("response_format")
    if json_object.asked(body):
        system = f"{system}\n\n{JSON_OBJECT_INSTRUCTION}" if system else JSON_OBJECT_INSTRUCTION
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or default_max_tokens
    out: dict[str, Any] = {"model": body["model"], "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = system
    out.update((name, body[name]) for name in _NATIVE if name in body)

    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise InvalidRequest("Invalid 'tools': expected an array.", param="tools", code="invalid_type")
        out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        choice, parallel = body.get("tool_choice"), body.get("parallel_tool_calls")
        if choice is not None or parallel is False:
            out["tool_choice"] = _tool_choice(choice, parallel)

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = stop
    elif stop is not None:
        raise InvalidRequest("Invalid 'stop': expected a string or an array of strings.", param="stop")

    output_config = dict(body["output_config"]) if isinstance(body.get("output_config"), dict) else {}
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest(
                "Invalid 'response_format.json_schema': expected an object with a 'schema'.",
                param="response_format.json_schema",
            )
        output_config["format"] = {"type": "json_schema", "schema": spec["schema"]}
    effort = body.get("reasoning_effort")
    if effort in _EFFORTS:
        output_config["effort"] = effort
    elif effort is not None:
        log.debug("dropped reasoning_effort %r: no Messages effort level matches it", effort)
    if output_config:
        out["output_config"] = output_config

    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}

    sampling = [name for name in _SAMPLING if body.get(name) is not None]
    if sampling and version >= _NO_SAMPLING_SINCE:
        log.debug("dropped %s: anthropic-version %s rejects sampling params", ", ".join(sampling), version)
    else:
        for name in sampling:
            out[name] = body[name]
        if isinstance(out.get("temperature"), int | float) and out["temperature"] > 1:
            out["temperature"] = 1.0  # OpenAI's range is 0-2, Anthropic's 0-1

    dropped = sorted(name for name in body if name not in _MAPPED)
    if dropped:
        log.debug("dropped fields with no Messages equivalent: %s", ", ".join(dropped))
    return out


def _turns(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the hoisted system text, the alternating user/assistant turns)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            blocks = _blocks(message.get("content"), where)
            if any(b["type"] != "text" for b in blocks):
                raise InvalidRequest(f"Invalid '{where}.content': a {role} message may only hold text.", param=where)
            system.extend(b["text"] for b in blocks)
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise InvalidRequest(
                f"Invalid '{where}.role': {role!r} is not supported by this tier's model (Anthropic); "
                "use tools and role 'tool'.",
                param=f"{where}.role",
                code="invalid_value",
            )
        if not blocks:
            continue  # empty text: the Messages API rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]  # the string shorthand
    return "\n".join(system), turns


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid '{where}.content': expected a string or an array.", param=f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{at}.image_url"))
        elif kind == "file":
            blocks.append(_document(part.get("file"), f"{at}.file"))
        elif kind == "refusal":
            continue  # an assistant's earlier refusal: no Messages block carries it
        else:
            raise InvalidRequest(
                f"Invalid '{at}': content of type {kind!r} is not supported by this tier's model (Anthropic).",
                param=at,
                code="invalid_value",
            )
    return blocks


def _image(spec: Any, where: str) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if isinstance(url, str) and url.startswith("data:"):
        media_type, data = _data_url(url, f"{where}.url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(f"Invalid '{where}.url': expected an http(s) or base64 data URL.", param=f"{where}.url")


def _document(spec: Any, where: str) -> dict[str, Any]:
    data = spec.get("file_data") if isinstance(spec, dict) else None
    if not isinstance(data, str):
        raise InvalidRequest(
            f"Invalid '{where}': this tier's model (Anthropic) needs the file inline as 'file_data' "
            "(a data:application/pdf;base64 URL); file ids are not supported.",
            param=where,
        )
    media_type, payload = _data_url(data, f"{where}.file_data")
    if media_type != "application/pdf":
        raise InvalidRequest(
            f"Invalid '{where}.file_data': only PDF files are supported by this tier's model, got {media_type!r}.",
            param=f"{where}.file_data",
        )
    source = {"type": "base64", "media_type": media_type, "data": payload}
    block: dict[str, Any] = {"type": "document", "source": source}
    if isinstance(spec.get("filename"), str) and spec["filename"]:
        block["title"] = spec["filename"]
    return block


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` -> (media type, data)."""
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type or not data:
        raise InvalidRequest(f"Invalid '{where}': expected a base64 data URL (data:<type>;base64,...).", param=where)
    return media_type.lower(), data


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), where)
    for j, call in enumerate(message.get("tool_calls") or ()):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"Invalid '{at}': expected a function call with a name.", param=at)
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidRequest(
                f"Invalid '{at}.function.arguments': expected a JSON object encoded as a string.",
                param=f"{at}.function.arguments",
                code="invalid_value",
            )
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": parsed})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(
            f"Missing required parameter: '{where}.tool_call_id'.",
            param=f"{where}.tool_call_id",
            code="missing_required_parameter",
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif blocks := _blocks(content, where):
        block["content"] = blocks
    return block


def _tool(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(
            f"Invalid '{where}': this tier's model (Anthropic) takes function tools only.", param=where
        )
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": function["name"], "input_schema": schema}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequest(
            "Invalid 'tool_choice': expected 'auto', 'required', 'none' or a named function.",
            param="tool_choice",
            code="invalid_value",
        )
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out
