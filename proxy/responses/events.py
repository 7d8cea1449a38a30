"""A chat chunk stream as a Responses API event stream, for a call a translated target serves.

``response.created`` and ``response.in_progress`` open it once the first chunk has arrived (so the
dispatcher still sees a failure before it, and falls over). Text deltas open an assistant ``message``
item and its ``output_text`` part (``response.output_item.added``, ``response.content_part.added``) and
become ``response.output_text.delta`` events; each tool call opens a ``function_call`` item whose
argument fragments become ``response.function_call_arguments.delta``. When the chat stream ends every
open item is closed in output order (``...done`` events carrying the whole text or arguments), then
``response.completed`` (or ``response.incomplete``) carries the whole response and its usage. Every
event has the next ``sequence_number``, from 0.

A chat stream that breaks raises through here unchanged: the relay ends the client's stream with an
``error`` event, and no terminal event is made up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.providers.base import Chunk, ChunkStream
from proxy.responses.answer import (
    call_item,
    finished,
    item_status_for,
    message_item,
    new_id,
    skeleton,
    text_part,
)
from proxy.usage import Usage


class TranslatedStream(ChunkStream):
    """Responses events from an open chat ``ChunkStream`` of ``request`` (the Responses body echoed)."""

    def __init__(self, chat: ChunkStream, request: Mapping[str, Any]) -> None:
        self._chat = chat
        self._events = Events(request)
        self.request_id = chat.request_id
        self.headers = chat.headers

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        events = self._events
        async for chunk in self._chat:
            for event in events.feed(chunk.data):
                yield Chunk(orjson.dumps(event), event)
        for event in events.finish():
            yield Chunk(orjson.dumps(event), event)

    async def aclose(self) -> None:
        await self._chat.aclose()


@dataclass(slots=True)
class _Item:
    """One output item being streamed: a message (text and refusal parts) or a function call."""

    index: int
    id: str
    kind: str  # "message" | "function_call"
    parts: dict[str, int] = field(default_factory=dict)  # "output_text" / "refusal" -> content index
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Events:
    """Chat chunks in, Responses events out (one stream's state): ``feed`` each chunk, then ``finish``."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self._request = request
        self._response: dict[str, Any] | None = None
        self._sequence = 0
        self._items: list[_Item] = []
        self._message: _Item | None = None  # the message item text goes to, while it is the last item
        self._calls: dict[int, _Item] = {}  # chat tool call index -> its item
        self._finish_reason: Any = None
        self.usage: Usage | None = None

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk makes (the opening ones before the first)."""
        events = self._open(chunk) if self._response is None else []
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, events)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The closing events: every item done, then the terminal event with the whole response."""
        events = self._open({}) if self._response is None else []
        assert self._response is not None
        status = item_status_for(self._finish_reason)
        output = []
        for item in self._items:
            output.append(self._close(item, status, events))
        response = finished(self._response, output, self._finish_reason, self.usage)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        events.append(self._event(kind, response=response))
        return events

    # --- inside ---------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def _open(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        created = chunk.get("created")
        model = chunk.get("model") or self._request.get("model") or ""
        self._response = skeleton(
            self._request, new_id("resp"), str(model), created if isinstance(created, int) else int(time.time())
        )
        return [
            self._event("response.created", response=self._response),
            self._event("response.in_progress", response=self._response),
        ]

    def _delta(self, delta: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            piece = delta.get(key)
            if isinstance(piece, str) and piece:
                self._text(kind, piece, events)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._call(call, events)

    def _text(self, kind: str, piece: str, events: list[dict[str, Any]]) -> None:
        item = self._message
        if item is None or self._items[-1] is not item:
            # Text after a tool call starts a new message, as the model's output order has it.
            item = self._message = self._add(_Item(len(self._items), new_id("msg"), "message"), events)
        if kind not in item.parts:
            item.parts[kind] = len(item.parts)
            part = text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            events.append(self._part_event("response.content_part.added", item, kind, part))
        index = item.parts[kind]
        if kind == "output_text":
            item.text.append(piece)
            events.append(
                self._event(
                    "response.output_text.delta", item_id=item.id, output_index=item.index, content_index=index,
                    delta=piece, logprobs=[],
                )
            )  # fmt: skip
        else:
            item.refusal.append(piece)
            events.append(
                self._event(
                    "response.refusal.delta", item_id=item.id, output_index=item.index, content_index=index,
                    delta=piece,
                )
            )  # fmt: skip

    def _call(self, call: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        index = call.get("index", 0)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        item = self._calls.get(index) if isinstance(index, int) else None
        if item is None:
            item = _Item(len(self._items), new_id("fc"), "function_call")
            item.call_id = str(call.get("id") or new_id("call"))
            item.name = str(function.get("name") or "")
            self._calls[index if isinstance(index, int) else len(self._calls)] = self._add(item, events)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.arguments.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item.id, output_index=item.index,
                    delta=arguments,
                )
            )  # fmt: skip

    def _add(self, item: _Item, events: list[dict[str, Any]]) -> _Item:
        self._items.append(item)
        events.append(self._event("response.output_item.added", output_index=item.index, item=self._shape(item)))
        return item

    def _close(self, item: _Item, status: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The done events of ``item``; its final shape."""
        if item.kind == "message":
            for kind, index in item.parts.items():
                common = {"item_id": item.id, "output_index": item.index, "content_index": index}
                if kind == "output_text":
                    text = "".join(item.text)
                    events.append(self._event("response.output_text.done", **common, text=text, logprobs=[]))
                    part = text_part(text)
                else:
                    refusal = "".join(item.refusal)
                    events.append(self._event("response.refusal.done", **common, refusal=refusal))
                    part = {"type": "refusal", "refusal": refusal}
                events.append(self._part_event("response.content_part.done", item, kind, part))
            shape = self._shape(item, status)
        else:
            shape = self._shape(item, "completed")
            events.append(
                self._event(
                    "response.function_call_arguments.done", item_id=item.id, name=item.name,
                    output_index=item.index, arguments=shape["arguments"],
                )
            )  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=item.index, item=shape))
        return shape

    def _part_event(self, kind: str, item: _Item, part_kind: str, part: dict[str, Any]) -> dict[str, Any]:
        return self._event(
            kind, item_id=item.id, output_index=item.index, content_index=item.parts[part_kind], part=part
        )

    @staticmethod
    def _shape(item: _Item, status: str | None = None) -> dict[str, Any]:
        """The item as an output item: as opened (no ``status``: in progress, no content), or as closed."""
        if item.kind == "message":
            if status is None:
                return message_item(item.id, None, None, "in_progress")
            text = "".join(item.text) if "output_text" in item.parts else None
            refusal = "".join(item.refusal) if "refusal" in item.parts else None
            shaped = message_item(item.id, text, refusal, status)
            # The parts in the order they were opened (their content indexes).
            shaped["content"].sort(key=lambda p: item.parts["output_text" if p["type"] == "output_text" else "refusal"])
            return shaped
        # A call with no arguments streamed still closes with a JSON object, as OpenAI's always do.
        arguments = ("".join(item.arguments) or "{}") if status is not None else ""
        return call_item(item.id, item.call_id, item.name, arguments, status or "in_progress")
