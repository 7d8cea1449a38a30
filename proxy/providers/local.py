"""``type: local``: a Python handler answers instead of an LLM (see ``proxy.handlers``).

The answer is wrapped as a normal ``chat.completion`` (or a stream of chunks), with usage counted
offline so the ledger shows the traffic, priced at zero, provider ``local``. A handler that raises
is a failed attempt like a failing upstream (retryable: the next target answers); one that returns
``None`` declines, which moves on without counting against the handler's breaker.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.handlers import Handler, load_handler
from proxy.providers.base import Call, Chunk, ChunkStream, Completion, Provider
from proxy.tokens import APPROXIMATE, count, estimate_prompt
from proxy.usage import Usage

log = logging.getLogger("tiergate.providers.local")


class HandlerFailed(UpstreamError):
    status = 502
    code = "handler_failed"


class HandlerDeclined(UpstreamError):
    status = 502
    code = "handler_declined"
    counts_against_target = False  # declining is the handler's design, not an outage
    retry_same_target = False  # it would decline again


class Local(Provider):
    default_price_id = "local"  # priced at zero by proxy.pricing
    genai_name = "tiergate.local"  # no provider: a Python function in this process
    needs_base_url = False
    runs_handlers = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers: dict[str, Handler] = {}

    async def complete(self, call: Call) -> Completion:
        message = await self._answer(call)
        body = _completion(call, message)
        return Completion(body=body, usage=Usage.from_openai(body["usage"]), request_id=body["id"])

    async def stream(self, call: Call) -> ChunkStream:
        message = await self._answer(call)
        return _LocalStream(call, message)

    async def _answer(self, call: Call) -> dict[str, Any]:
        assert call.target.handler is not None  # the registry requires it for local targets
        handler = self._handlers.get(call.target.handler)
        if handler is None:
            handler = self._handlers[call.target.handler] = load_handler(call.target.handler)
        try:
            result = handler(call.body)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - any handler bug becomes a failed attempt
            reason = self.redactor.text(str(exc))  # a handler may have read a secret from its environment
            log.warning("handler %s raised %s: %s", call.target.handler, type(exc).__name__, reason)
            raise HandlerFailed(f"The local handler for {call.target.model} failed.") from None
        if result is None:
            raise HandlerDeclined(f"The local handler for {call.target.model} declined this request.")
        if isinstance(result, str):
            return {"role": "assistant", "content": result, "refusal": None}
        if isinstance(result, dict) and isinstance(result.get("content"), str | None):
            return {"role": "assistant", "content": None, "refusal": None, **result}
        log.warning(
            "handler %s returned %s, not str | None | a message dict with text content",
            call.target.handler,
            type(result).__name__,
        )
        raise HandlerFailed(f"The local handler for {call.target.model} returned an invalid answer.")


def _completion(call: Call, message: dict[str, Any]) -> dict[str, Any]:
    model = call.target.model
    # Nobody bills these tokens: a cheap count keeps a local answer fast (no BPE table to load).
    prompt = estimate_prompt(call.body.get("messages"), APPROXIMATE)
    # tool-call arguments are output tokens too, as an LLM would have billed them
    calls = "".join(str(c.get("function", {}).get("arguments", "")) for c in message.get("tool_calls") or ())
    completion = count(str(message.get("content") or "") + calls, APPROXIMATE)
    return {
        "id": "chatcmpl-local-" + os.urandom(8).hex(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                "logprobs": None,
            }
        ],
        "usage": Usage(prompt_tokens=prompt, completion_tokens=completion).to_openai(),
    }


class _LocalStream(ChunkStream):
    def __init__(self, call: Call, message: dict[str, Any]) -> None:
        self._body = _completion(call, message)
        self.request_id = self._body["id"]

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        body = self._body
        base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
        choice = body["choices"][0]
        message = choice["message"]
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        for data in (
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]},
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"], "logprobs": None}],
            },
            {**base, "choices": [], "usage": body["usage"]},
        ):
            yield Chunk(orjson.dumps(data), data)

    async def aclose(self) -> None:
        return None
