"""``tiergate fake-upstream``: the fake OpenAI and Anthropic upstreams on one port, standalone.

For trying tiergate with no keys and no network: ``/openai/...`` is the fake OpenAI API (chat
completions, the Responses API, embeddings, models: base URL ``http://HOST:PORT/openai/v1``), ``/anthropic/...`` the fake
Messages API (base URL ``http://HOST:PORT/anthropic``, as ``ANTHROPIC_BASE_URL`` takes it). Each fake
sees its own paths, as behind its real base URL; ``GET /`` says where each one is.
``examples/rules.fake.yaml`` points the shipped registry at them.

The answers are the fakes' (``proxy.fakes.openai``, ``proxy.fakes.anthropic``): deterministic text that
quotes the prompt, JSON valid against a requested schema, tool calls with valid arguments, ``n``
choices, embeddings from the input's words, usage for every call.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TextIO

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI, error_body, respond
from proxy.loopback import serve

OPENAI_PREFIX = "/openai"
ANTHROPIC_PREFIX = "/anthropic"
DEFAULT_PORT = 4001


class FakeUpstreams:
    """ASGI app: each fake under its path prefix."""

    def __init__(self, openai: FakeOpenAI | None = None, anthropic: FakeAnthropic | None = None) -> None:
        self.openai = openai or FakeOpenAI()
        self.anthropic = anthropic or FakeAnthropic()
        self._mounts: dict[str, ASGIApp] = {OPENAI_PREFIX: self.openai, ANTHROPIC_PREFIX: self.anthropic}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.openai(scope, receive, send)  # the fakes keep no state to start or stop
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        for prefix, app in self._mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix) :] or "/"
                child = {
                    **scope,
                    "path": rest,
                    "raw_path": rest.encode(),
                    "root_path": scope.get("root_path", "") + prefix,
                }
                await app(child, receive, send)
                return
        await _index(scope, send, path)


def base_urls(url: str) -> dict[str, str]:
    """The base URL of each fake under the server at ``url``, as the providers' ``base_url`` takes it."""
    return {"openai": url + OPENAI_PREFIX + "/v1", "anthropic": url + ANTHROPIC_PREFIX}


async def _index(scope: Scope, send: Send, path: str) -> None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    url = f"http://{headers.get('host', 'localhost')}"
    if path == "/" and scope["method"] == "GET":
        await respond(send, 200, {"content-type": "application/json"}, orjson.dumps(base_urls(url)))
        return
    where = ", ".join(f"{name} at {base}" for name, base in base_urls(url).items())
    await respond(send, 404, {"content-type": "application/json"}, error_body(404, f"Unknown path {path}: {where}"))


async def run(host: str, port: int, out: TextIO) -> None:
    """Serve the fakes on ``host:port`` (0: a free port) until SIGINT or SIGTERM; say where on ``out``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with serve(FakeUpstreams(), host=host, port=port) as url:
            urls = base_urls(url)
            print(f"tiergate fake upstreams on {url} (no keys, no network; Ctrl-C stops them)", file=out)
            print(f"  OpenAI-compatible  {urls['openai']}  (chat completions, responses, embeddings, models)", file=out)
            print(f"  Anthropic          {urls['anthropic']}  (messages)", file=out)
            # examples/rules.fake.yaml expects them at the default address; elsewhere, it is told where.
            env = "" if url == f"http://127.0.0.1:{DEFAULT_PORT}" else f"FAKE_UPSTREAM_URL={url} "
            print(
                f"serve tiergate against them: {env}.venv/bin/tiergate serve --config examples/rules.fake.yaml",
                file=out,
            )
            out.flush()
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
