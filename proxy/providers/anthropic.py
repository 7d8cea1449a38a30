"""``type: anthropic``: OpenAI chat requests translated to the Anthropic Messages API and back.

Clients keep speaking OpenAI chat. The adapter writes ``POST {base_url}/v1/messages`` and turns the
reply, a message or its ``event:`` stream, into OpenAI shapes:

- request: system/developer messages are hoisted into ``system``; same-role turns are merged; text,
  images (data and http URLs), PDFs, ``tool_calls`` and ``tool`` results become content blocks; tools,
  ``tool_choice``, ``parallel_tool_calls``, ``stop``, ``max_tokens``, ``response_format`` (json_schema),
  ``reasoning_effort``, ``user`` and the sampling params are mapped. The Messages API rejects fields it
  does not know, so everything else is dropped (logged at debug), except a few Messages-only fields a
  registry target may set as params (``_NATIVE``). ``n > 1``, audio and file ids are a 400.
- response: text blocks are joined into ``content``, ``tool_use`` blocks become ``tool_calls``, thinking
  is dropped; usage counts cache reads and writes into ``prompt_tokens`` as OpenAI does.
- errors: Anthropic's ``{"type": "error", "error": {type, message}}`` keeps its status and its type as
  ``code``, except 529 (overloaded) which becomes a retryable 503.

Options: ``anthropic_version`` (default 2023-06-01), ``anthropic_beta``, ``default_max_tokens`` (4096).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import ConfigError, InvalidRequest, UpstreamProtocolError, UpstreamStatus, UpstreamUnreachable
from proxy.headers import passed_on
from proxy.providers.base import Call, Chunk, ChunkStream, Completion, Provider
from proxy.sse import iter_events
from proxy.upstream import UpstreamResponse
from proxy.wire import Usage

if TYPE_CHECKING:
    from proxy.registry import Provider as ProviderConfig
    from proxy.upstream import UpstreamClient

log = logging.getLogger("tiergate.providers.anthropic")

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
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
# Client headers meant for OpenAI, or set here from the provider's config.
_NOT_FORWARDED_PREFIXES = ("openai-", "anthropic-")

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error type -> HTTP status, for errors that arrive inside a 200 stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class Anthropic(Provider):
    """``type: anthropic``. Options: ``anthropic_version``, ``anthropic_beta``, ``default_max_tokens``."""

    default_price_id = "anthropic"

    def __init__(self, config: ProviderConfig, http: UpstreamClient) -> None:
        super().__init__(config, http)
        options = config.options
        self.version = str(options.get("anthropic_version", DEFAULT_VERSION))
        beta = options.get("anthropic_beta")
        self.beta = ",".join(map(str, beta)) if isinstance(beta, list) else str(beta) if beta else ""
        self.default_max_tokens = options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(self.default_max_tokens, int) or self.default_max_tokens < 1:
            path = f"providers.{config.name}.options.default_max_tokens"
            raise ConfigError(path, f"expected an integer greater than 0, got {self.default_max_tokens!r}")
        base = config.base_url.rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    async def complete(self, call: Call) -> Completion:
        response = await self._send(call, stream=False)
        raw = await response.read()
        if response.status != 200:
            raise error_from(response.status, raw, response.headers, self.name)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("provider %s returned a body that is not JSON (%d bytes)", self.name, len(raw))
            raise UpstreamProtocolError("The upstream provider returned a response that is not valid JSON.") from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamProtocolError("The upstream provider returned a response that is not a message.")
        body, usage = completion_body(message)
        return Completion(
            body=body, usage=usage, request_id=response.headers.get("request-id"), headers=passed_on(response.headers)
        )

    async def stream(self, call: Call) -> ChunkStream:
        response = await self._send(call, stream=True)
        if response.status != 200:
            raise error_from(response.status, await response.read(), response.headers, self.name)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            raw = await response.read()
            raise error_from(502, raw, response.headers, self.name, expected="an event stream")
        return _AnthropicStream(response)

    async def _send(self, call: Call, *, stream: bool) -> UpstreamResponse:
        body = messages_request(call.body, version=self.version, default_max_tokens=self.default_max_tokens)
        body["stream"] = stream
        headers = {k: v for k, v in call.headers.items() if not k.lower().startswith(_NOT_FORWARDED_PREFIXES)}
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # compressed SSE would be buffered by the decoder
        headers["anthropic-version"] = self.version
        if self.beta:
            headers["anthropic-beta"] = self.beta
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return await self.http.post(
            self.url,
            headers,
            orjson.dumps(body),
            read_timeout=call.read_timeout,
            idle_timeout=call.idle_timeout,
            connect_timeout=call.connect_timeout,
        )


# --- request: OpenAI chat -> Messages -------------------------------------------------------------


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
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest(
                "Invalid 'response_format.json_schema': expected an object with a 'schema'.",
                param="response_format.json_schema",
            )
        output_config["format"] = {"type": "json_schema", "schema": spec["schema"]}
    elif isinstance(response_format, dict) and response_format.get("type") == "json_object":
        log.debug("dropped response_format json_object: the Messages API has no schema-less JSON mode")
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


# --- response: Messages -> OpenAI chat ------------------------------------------------------------


def completion_body(message: Mapping[str, Any]) -> tuple[dict[str, Any], Usage]:
    """An OpenAI ``chat.completion`` and its usage for a Messages response."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()  # compact, like OpenAI's
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        # thinking, redacted_thinking and server-tool blocks have no OpenAI slot
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    usage = usage_from(message.get("usage"))
    finish = finish_reason(message.get("stop_reason"))
    choice = {"index": 0, "message": reply, "finish_reason": finish, "logprobs": None}
    body = {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(message.get("model") or ""),
        "choices": [choice],
        "usage": openai_usage(usage),
    }
    return body, usage


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason``; unknown reasons read as ``stop``."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from(raw: Any) -> Usage:
    """Anthropic usage in OpenAI's sense: cache reads and writes are part of the prompt."""
    raw = raw if isinstance(raw, dict) else {}
    fresh, read, written, output = (
        _count(raw.get(key))
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")
    )
    details = raw.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=fresh + read + written,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=thinking,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    """An OpenAI ``usage`` object, with ``cache_write_tokens`` (``Usage.to_openai`` leaves it out)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# --- streaming ---------------------------------------------------------------------------------------


class _AnthropicStream(ChunkStream):
    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self.request_id = response.headers.get("request-id")
        self.headers = passed_on(response.headers)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        translator = ChunkTranslator()
        async for event, data in iter_events(self._response.iter_bytes()):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError("The upstream provider sent a stream event that is not JSON.") from None
            if not isinstance(parsed, dict):
                raise UpstreamProtocolError("The upstream provider sent a stream event that is not an object.")
            for chunk in translator.feed(str(parsed.get("type") or event), parsed):
                yield Chunk(orjson.dumps(chunk), chunk)
            if translator.finished:
                return
        # A clean end without message_stop is still a cut stream: the answer and its usage are missing.
        raise UpstreamUnreachable("The upstream provider closed the connection mid-response.")

    async def aclose(self) -> None:
        await self._response.aclose()


class ChunkTranslator:
    """Messages stream events in, OpenAI ``chat.completion.chunk`` dicts out (one stream's state).

    Each event type has an ``_on_<type>`` method; ``ping``, ``content_block_stop`` and event types
    added later have none and yield nothing.
    """

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}  # Anthropic's usage fields, latest value of each
        self.tools: dict[Any, int] = {}  # content block index -> OpenAI tool call index
        self.finished = False

    def feed(self, kind: str, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one event; raises the mapped ``UpstreamStatus`` on an ``error`` event."""
        handler = getattr(self, f"_on_{kind}", None)
        return handler(event) if handler is not None else []

    def _on_message_start(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        message = _obj(event.get("message"))
        self.id, self.model = str(message.get("id") or ""), str(message.get("model") or "")
        self._note_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        block = _obj(event.get("content_block"))
        if block.get("type") == "tool_use":
            k = self.tools[event.get("index")] = len(self.tools)  # tools count, not content blocks
            function = {"name": block.get("name"), "arguments": ""}
            return [self._chunk({"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                                                 "function": function}]})]  # fmt: skip
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": str(block["text"])})]
        return []

    def _on_content_block_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta, index = _obj(event.get("delta")), event.get("index")
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": str(delta["text"])})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and index in self.tools:
            call = {"index": self.tools[index], "function": {"arguments": str(delta["partial_json"])}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citations deltas have no OpenAI slot

    def _on_message_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._note_usage(event.get("usage"))
        return [self._chunk({}, finish_reason(_obj(event.get("delta")).get("stop_reason")))]

    def _on_message_stop(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.finished = True
        # Always sent: the relay records it, and drops it for clients that did not ask for usage.
        usage = openai_usage(usage_from(self.usage))
        return [{**self._chunk({}), "choices": [], "usage": usage}]

    def _on_error(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        error = _obj(event.get("error"))
        raise status_error(ERROR_STATUS.get(str(error.get("type")), 502), error, {})

    def _note_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative; a field it leaves out (or nulls) keeps message_start's value.
        self.usage.update((k, v) for k, v in _obj(usage).items() if v is not None)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [choice]}  # fmt: skip


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- errors --------------------------------------------------------------------------------------------


def error_from(
    status: int, raw: bytes, headers: Mapping[str, str], provider: str, *, expected: str = ""
) -> UpstreamStatus | UpstreamProtocolError:
    """Turn an Anthropic error response into an ``UpstreamStatus`` carrying an OpenAI-shaped error."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return status_error(status, error, headers)
    log.warning("provider %s answered HTTP %d with a non-Anthropic body (%d bytes)", provider, status, len(raw))
    if expected:
        return UpstreamProtocolError(f"The upstream provider did not return {expected}.")
    message = {"message": f"The upstream provider returned HTTP {status}."}
    return UpstreamStatus(_client_status(status), message, headers=passed_on(headers))


def status_error(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> UpstreamStatus:
    """An Anthropic ``error`` object as an ``UpstreamStatus``; the Anthropic type is kept as ``code``."""
    kind = str(error.get("type") or "api_error")
    message = str(error.get("message") or f"The upstream provider returned HTTP {status}.")
    # OpenAI's code for an over-long prompt, which clients (and context_fallback) recognise.
    code = "context_length_exceeded" if message.startswith("prompt is too long") else kind
    body = {"message": message, "type": kind, "param": None, "code": code}
    return UpstreamStatus(_client_status(status), body, headers=passed_on(headers))


def _client_status(status: int) -> int:
    # 529 is Anthropic's "overloaded"; OpenAI clients know 503 as retryable server overload.
    return 503 if status == 529 else status
