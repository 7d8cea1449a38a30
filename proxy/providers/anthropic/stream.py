"""Anthropic ``event:`` stream -> OpenAI ``chat.completion.chunk`` dicts, one stream's state at a time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from proxy.errors import UpstreamProtocolError, UpstreamUnreachable
from proxy.headers import passed_on, request_id
from proxy.providers.anthropic.errors import ERROR_STATUS, status_error
from proxy.providers.anthropic.json_object import StreamCheck
from proxy.providers.anthropic.response import finish_reason, usage_from
from proxy.providers.base import Chunk, ChunkStream, stream_event
from proxy.redact import Redactor
from proxy.upstream import UpstreamResponse


class _AnthropicStream(ChunkStream):
    def __init__(self, response: UpstreamResponse, redactor: Redactor, check: StreamCheck | None = None) -> None:
        self._response = response
        self._redactor = redactor
        self._check = check  # response_format json_object: the answer must be a JSON object
        self.request_id = request_id(response.headers.get("request-id"), redactor)
        self.headers = passed_on(response.headers, redactor)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        translator = ChunkTranslator(self._redactor)
        async for event, data in self._response.events():
            parsed = stream_event(data)
            for chunk in translator.feed(str(parsed.get("type") or event), parsed):
                if self._check is not None:
                    self._check.see(chunk)  # raises before a stray answer's finish chunk goes out
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

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}  # Anthropic's usage fields, latest value of each
        self.tools: dict[int, int] = {}  # content block index -> OpenAI tool call index
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
            index = event.get("index")
            if not isinstance(index, int):
                raise UpstreamProtocolError("The upstream provider sent a content block without an index.")
            k = self.tools[index] = len(self.tools)  # tools count, not content blocks
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
        usage = usage_from(self.usage).to_openai()
        return [{**self._chunk({}), "choices": [], "usage": usage}]

    def _on_error(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        error = _obj(event.get("error"))
        raise status_error(ERROR_STATUS.get(str(error.get("type")), 502), error, {}, self._redactor)

    def _note_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative; a field it leaves out (or nulls) keeps message_start's value.
        self.usage.update((k, v) for k, v in _obj(usage).items() if v is not None)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [choice]}  # fmt: skip


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
