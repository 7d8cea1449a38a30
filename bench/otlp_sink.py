"""A local OpenTelemetry collector stand-in for ``tiergate-traced``: OTLP/HTTP in, counted, dropped.

It is proxy.fakes.otlp's ``FakeCollector`` (the protobuf really is decoded, as a collector would) in
``count_only`` mode, served by uvicorn; ``GET /count`` answers ``{"spans": N, "exports": M}`` so the
harness can check that the spans it paid for arrived (a BatchSpanProcessor drops spans silently when its
queue is full).

    python bench/otlp_sink.py --port 4318
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from proxy.fakes.otlp import FakeCollector


class Sink:
    def __init__(self) -> None:
        self.collector = FakeCollector(count_only=True)
        self.exports = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/count":
            body = orjson.dumps({"spans": self.collector.span_count, "exports": self.exports})
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            self.exports += 1
        await self.collector(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Sink(), host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
