"""Relay a Responses API event stream to the client: typed events, usage from the terminal one.

Each event goes out as it arrived, framed with its ``event: <type>`` line as OpenAI frames it. Usage
arrives only in the terminal event (``response.completed``, ``response.incomplete``, ``response.failed``);
a stream cut before it keeps none, and the ledger estimates it from the text streamed so far. Time to
first token is taken at the first event past the lifecycle ones (``response.created`` arrives before
the model has produced anything). The stream ends after its last event: there is no ``[DONE]``.

A failure after the first event ends the stream with an ``error`` event numbered after the last one
relayed. It carries the spec's fields (``code``, ``message``, ``param`` at the top) and the ``error``
object OpenAI itself sends, on which the openai SDK raises ``APIError``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from proxy.errors import TiergateError
from proxy.providers.openai_responses import TERMINAL_EVENTS
from proxy.sse import named_event, sse_event
from proxy.streaming import Relay
from proxy.usage import Usage

log = logging.getLogger("tiergate.streaming")

_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})
# Deltas of what the model wrote: the text a cut stream's usage is estimated from.
_DELTAS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta", "response.refusal.delta"})
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ResponsesRelay(Relay):
    """SSE bytes for the client from one stream of Responses events."""

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        stream, stats, observe = self._stream, self._stats, self._observe
        sequence = -1
        try:
            async for chunk in stream:
                data = chunk.data
                if observe is not None:
                    observe(data)
                kind = data.get("type")
                kind = kind if isinstance(kind, str) else None
                number = data.get("sequence_number")
                if isinstance(number, int) and not isinstance(number, bool):
                    sequence = number
                if kind in TERMINAL_EVENTS:
                    response = data.get("response")
                    response = response if isinstance(response, dict) else {}
                    stats.usage = Usage.from_responses(response.get("usage"))
                    if kind == "response.failed":
                        stats.error = _failed(response)
                if kind not in _LIFECYCLE:
                    if stats.first_chunk_at is None:
                        stats.first_chunk_at = time.perf_counter()
                    stats.chunks += 1
                if kind in _DELTAS and isinstance(data.get("delta"), str):
                    stats.streamed += data["delta"].encode("utf-8", "replace")
                # An event name is one line: an upstream's odd ``type`` goes out as a plain data event.
                named = kind is not None and kind.isprintable() and kind
                yield named_event(named, chunk.payload) if named else sse_event(chunk.payload)
            stats.completed = True
        except TiergateError as exc:
            # Headers are gone already: the error can only travel as an event.
            stats.error = exc
            yield error_event(exc, sequence + 1)
        except Exception:  # noqa: BLE001 - a bug mid-stream still ends the stream cleanly for the client
            log.exception("relaying a Responses stream failed after %d events", stats.chunks)
            stats.error = TiergateError("tiergate hit an internal error; it has been logged.", code="internal_error")
            yield error_event(stats.error, sequence + 1)
        finally:
            await stream.aclose()


def error_event(error: TiergateError, sequence: int) -> bytes:
    """An ``error`` stream event for ``error``, numbered ``sequence``."""
    body = error.body()["error"]
    event = {
        "type": "error",
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "sequence_number": sequence,
        "error": body,
    }
    return named_event("error", orjson.dumps(event))


def _failed(response: Mapping[str, Any]) -> TiergateError:
    """What the ledger records of a ``response.failed`` (relayed to the client as it came)."""
    error = response.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    named = code if isinstance(code, str) and _IDENTIFIER.match(code) else "response_failed"
    return TiergateError("The upstream provider reported the response failed.", code=named)
