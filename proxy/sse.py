"""Server-Sent Events: incremental parsing of an upstream's byte stream, and framing for the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import UpstreamProtocolError

DONE_EVENT = b"data: [DONE]\n\n"
MAX_EVENT = 8 * 2**20  # bytes of one upstream event; the biggest real ones (tool arguments) are far smaller


def sse_event(payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"


def named_event(name: str, payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE event with an ``event:`` line (the Responses API's typed events)."""
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An in-stream error; the openai SDK raises ``APIError`` on a ``data`` object with an ``error`` key."""
    return sse_event(orjson.dumps(body))


async def iter_events(chunks: AsyncIterator[bytes], max_event: int = MAX_EVENT) -> AsyncIterator[tuple[str, bytes]]:
    """Yield ``(event, data)`` per SSE event as soon as its blank line arrives.

    ``event`` is ``""`` when the event has no ``event:`` field (OpenAI's chat stream); multi-line data
    is joined with ``\\n``; comments (``: ping``) and data-less events are skipped. CRLF and lone CR line
    ends are read as LF, even when a CR and its LF arrive in different chunks.

    Linear in the stream's length: each byte is searched for a boundary once (the search resumes where
    the last one stopped) and the buffer only grows at its end and shrinks at its start. An event larger
    than ``max_event`` bytes, or bytes that never end an event, is ``UpstreamProtocolError``.
    """
    buffer = bytearray()
    searched = 0  # buffer[:searched] holds no boundary
    held_cr = False  # a chunk ended in CR: its LF, if any, starts the next chunk
    async for chunk in chunks:
        if held_cr:
            chunk, held_cr = b"\r" + chunk, False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, held_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer += chunk
        while True:
            end = buffer.find(b"\n\n", max(searched - 1, 0))
            if end < 0:
                searched = len(buffer)
                if searched > max_event:
                    raise _too_large(max_event)
                break
            if end > max_event:
                raise _too_large(max_event)
            block = bytes(memoryview(buffer)[:end])
            del buffer[: end + 2]
            searched = 0
            parsed = parse_block(block)
            if parsed is not None:
                yield parsed
    if held_cr:
        buffer += b"\n"
    if buffer.strip():
        parsed = parse_block(bytes(buffer))
        if parsed is not None:
            yield parsed


def _too_large(max_event: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"The upstream provider sent a stream event larger than {max_event // 2**20} MiB (TIERGATE_MAX_EVENT_MB)."
    )


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
