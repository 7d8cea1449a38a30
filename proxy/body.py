"""A request body read within a size cap: memory stays near the cap however much a client sends.

The cap is checked against ``Content-Length`` before reading (a declared 100 MB upload is refused
without reading a byte of it), and again while the body arrives (a chunked upload has no declared
length). The bytes accumulate in one ``bytearray``, which orjson parses without a copy.
"""

from __future__ import annotations

from starlette.requests import Request

from proxy.errors import PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body, or ``PayloadTooLarge`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise _too_large(limit)
        body += chunk
    return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body exceeds tiergate's limit of {limit // 2**20} MiB (TIERGATE_MAX_BODY_MB).",
        param=None,
    )
