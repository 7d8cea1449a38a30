"""Server-Sent Events: incremental parsing of an upstream's byte stream, and framing for the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An in-stream error; the openai SDK raises ``APIError`` on a ``data`` object with an ``error`` key."""
    return sse_event(orjson.dumps(body))


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """Yield ``(event, data)`` per SSE event as soon as its blank line arrives.

    ``event`` is ``""`` when the event has no ``event:`` field (OpenAI's chat stream); multi-line data
    is joined with ``\\n``; comments (``: ping``) and data-less events are skipped.
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            # CRLF framing is legal SSE; a CR split from its LF is fixed on the next chunk.
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            parsed = parse_block(block)
            if parsed is not None:
                yield parsed
    if buffer.strip():
        parsed = parse_block(buffer)
        if parsed is not None:
            yield parsed


def parse_block(block: bytes) -> tuple[str, bytes] | None:
    """One event block (without its trailing blank line) -> ``(event, data)``, or ``None``."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return "", block[6:]  # the common case: one data line, no event name
    event = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if not data:
        return None
    return event, b"\n".join(data)
