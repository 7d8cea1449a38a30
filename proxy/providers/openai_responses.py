"""OpenAI's Responses API spoken natively (``POST {base_url}/responses``): what comes back, checked.

The body goes out as the caller wrote it (``proxy.responses.rewrite`` already set the model and the
tier's params); this module reads the answer: a ``response`` object, or its typed event stream
(``event: <type>`` + ``data:``, a ``sequence_number`` on each, no ``[DONE]``). A stream is over at its
terminal event (``response.completed``, ``response.incomplete``, ``response.failed``); one that stops
before it was cut. An ``error`` event becomes an ``UpstreamStatus`` like any upstream error (redacted),
whichever of its two spellings arrives: the spec's (``code``/``message``/``param`` at the top) or the
one OpenAI sends (an ``error`` object inside the event).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from proxy.errors import UpstreamStatus, UpstreamUnreachable
from proxy.headers import passed_on, request_id
from proxy.providers.base import Chunk, ChunkStream, Completion, json_body, stream_event, upstream_status
from proxy.redact import Redactor
from proxy.upstream import UpstreamResponse
from proxy.usage import Usage

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def response_answer(raw: bytes, headers: Mapping[str, str], provider: str, redactor: Redactor) -> Completion:
    """A 200 ``response`` body as a ``Completion`` (relayed as its own bytes), else ``UpstreamProtocolError``."""
    body = json_body(raw, provider, "output", list, "a response")
    return Completion(
        body=body,
        usage=Usage.from_responses(body.get("usage")),
        request_id=request_id(headers.get("x-request-id"), redactor),
        headers=passed_on(headers, redactor),
        raw=raw,
    )


class ResponsesStream(ChunkStream):
    """An upstream's Responses event stream, event by event, up to its terminal event."""

    def __init__(self, response: UpstreamResponse, redactor: Redactor) -> None:
        self._response = response
        self._redactor = redactor
        self.request_id = request_id(response.headers.get("x-request-id"), redactor)
        self.headers = passed_on(response.headers, redactor)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for _event, data in self._response.events():
            if data == b"[DONE]":
                break  # some OpenAI-compatible servers end with chat's terminator: no terminal event came
            parsed = stream_event(data)
            kind = parsed.get("type")
            kind = kind if isinstance(kind, str) else None  # relayed as it came; only a string names an event
            if kind == "error":
                raise event_error(parsed, self._redactor)
            yield Chunk(data, parsed)
            if kind in TERMINAL_EVENTS:
                return
        # No terminal event: the rest of the answer and its usage are missing.
        raise UpstreamUnreachable("The upstream provider closed the connection mid-response.")

    async def aclose(self) -> None:
        await self._response.aclose()


def event_error(event: Mapping[str, Any], redactor: Redactor) -> UpstreamStatus:
    """An ``error`` stream event as an ``UpstreamStatus`` (502: the stream had answered 200)."""
    nested = event.get("error")
    error = nested if isinstance(nested, dict) else event
    fields = {key: error.get(key) for key in ("message", "type", "param", "code")}
    fields["type"] = fields["type"] if fields["type"] != "error" else None  # the event's own type, not a kind
    return upstream_status(502, fields, {}, redactor)
