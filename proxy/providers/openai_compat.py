"""OpenAI-compatible upstreams (OpenAI itself, vLLM, Together, Groq, ...): the body is already theirs.

Only three things change on the way out: the provider's key replaces the client's, the max-tokens field
gets the spelling the provider wants (OpenAI's reasoning models reject ``max_tokens``), and responses are
checked to be what the wire format promises. Embeddings go to ``{base_url}/embeddings`` as they came
(model replaced), and come back as they are (``encoding_format`` and ``dimensions`` are the upstream's to
honour).

Responses API calls go to the upstream's own ``/responses`` (``proxy.providers.openai_responses``),
unless ``options.responses: chat`` says the server has none (then ``proxy.responses`` translates them
to chat completions, as for any other adapter).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from proxy.errors import ConfigError, UpstreamProtocolError, UpstreamStatus, UpstreamUnreachable
from proxy.headers import passed_on, request_id
from proxy.providers.base import (
    Call,
    Chunk,
    ChunkStream,
    Completion,
    Provider,
    error_response,
    json_body,
    stream_event,
    upstream_status,
)
from proxy.providers.openai_responses import ResponsesStream, response_answer
from proxy.redact import Redactor
from proxy.upstream import UpstreamResponse
from proxy.usage import Usage

# genai-prices provider ids -> the GenAI conventions' names, for OpenAI-compatible providers that are not OpenAI
_GENAI_NAMES = {
    "azure": "azure.ai.openai",
    "deepseek": "deepseek",
    "google": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "perplexity": "perplexity",
    "x-ai": "x_ai",
    "cohere": "cohere",
}


class OpenAICompatible(Provider):
    """``type: openai``. Options: ``max_tokens_field`` (default ``max_completion_tokens``), ``responses``
    (``native``, the default: the server has ``/responses``; ``chat``: translate Responses calls)."""

    default_price_id = "openai"
    genai_name = "openai"
    option_keys = frozenset({"price_provider", "max_tokens_field", "responses"})
    kinds = frozenset({"chat", "embedding"})

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> None:
        super().validate_options(options, path)
        field = options.get("max_tokens_field", "max_completion_tokens")
        if field not in ("max_completion_tokens", "max_tokens"):
            raise ConfigError(
                f"{path}.max_tokens_field", f"expected max_completion_tokens or max_tokens, got {field!r}"
            )
        responses = options.get("responses", "native")
        if responses not in ("native", "chat"):
            raise ConfigError(f"{path}.responses", f"expected native or chat, got {responses!r}")

    @property
    def genai_provider(self) -> str:
        # The wire format is OpenAI's, the provider may be another (``price_provider`` says which).
        return _GENAI_NAMES.get(self.config.price_id or "", self.genai_name)

    @property
    def native_responses(self) -> bool:
        return bool(self.config.options.get("responses", "native") == "native")

    async def respond(self, call: Call) -> Completion:
        response = await self._send(call, "/responses", call.body)
        raw = await response.read()
        if response.status != 200:
            raise error_from(response.status, raw, response.headers, self.name, self.redactor)
        return response_answer(raw, response.headers, self.name, self.redactor)

    async def respond_stream(self, call: Call) -> ChunkStream:
        response = await self._send(call, "/responses", call.body)
        await self._check_stream(response)
        return ResponsesStream(response, self.redactor)

    async def complete(self, call: Call) -> Completion:
        return await self._whole(call, "/chat/completions", self._wire_body(call.body), "choices", "a chat completion")

    async def stream(self, call: Call) -> ChunkStream:
        response = await self._send(call, "/chat/completions", self._wire_body(call.body))
        await self._check_stream(response)
        return _OpenAIStream(response, self.redactor)

    async def _check_stream(self, response: UpstreamResponse) -> None:
        """Raise the upstream's error unless it answered 200 with an event stream."""
        if response.status != 200:
            raise error_from(response.status, await response.read(), response.headers, self.name, self.redactor)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            raw = await response.read()
            error = error_from(502, raw, response.headers, self.name, self.redactor, expected="an event stream")
            error.upstream_status = response.status
            raise error

    async def embed(self, call: Call) -> Completion:
        return await self._whole(call, "/embeddings", call.body, "data", "an embedding list")

    async def _whole(self, call: Call, path: str, body: dict[str, Any], field: str, what: str) -> Completion:
        """A non-streaming call to ``path``: the upstream's error, or its answer (a list in ``field``)."""
        response = await self._send(call, path, body)
        raw = await response.read()
        if response.status != 200:
            raise error_from(response.status, raw, response.headers, self.name, self.redactor)
        answer = json_body(raw, self.name, field, list, what)
        return Completion(
            body=answer,
            usage=Usage.from_openai(answer.get("usage")),
            request_id=request_id(response.headers.get("x-request-id"), self.redactor),
            headers=passed_on(response.headers, self.redactor),
            raw=raw,
        )

    async def _send(self, call: Call, path: str, body: dict[str, Any]) -> UpstreamResponse:
        headers = dict(call.headers)
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # compressed SSE would be buffered by the decoder
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        return await self.http.post(
            self.config.base_url + path,
            headers,
            orjson.dumps(body),
            read_timeout=call.read_timeout,
            idle_timeout=call.idle_timeout,
            connect_timeout=call.connect_timeout,
        )

    def _wire_body(self, body: dict[str, Any]) -> dict[str, Any]:
        field = str(self.config.options.get("max_tokens_field", "max_completion_tokens"))
        if "max_tokens" in body and field != "max_tokens":
            body = dict(body)
            body[field] = body.pop("max_tokens")
        return body


class _OpenAIStream(ChunkStream):
    def __init__(self, response: UpstreamResponse, redactor: Redactor) -> None:
        self._response = response
        self._redactor = redactor
        self.request_id = request_id(response.headers.get("x-request-id"), redactor)
        self.headers = passed_on(response.headers, redactor)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for _event, data in self._response.events():
            if data == b"[DONE]":
                return
            parsed = stream_event(data)
            if "error" in parsed:
                raise error_from(502, data, {}, "stream", self._redactor)
            yield Chunk(data, parsed)
        # A clean end without [DONE] is still a cut stream: the rest of the answer and its usage are missing.
        raise UpstreamUnreachable("The upstream provider closed the connection mid-response.")

    async def aclose(self) -> None:
        await self._response.aclose()


def error_from(
    status: int, raw: bytes, headers: Mapping[str, str], provider: str, redactor: Redactor, *, expected: str = ""
) -> UpstreamStatus | UpstreamProtocolError:
    """An upstream error response as an ``UpstreamStatus`` carrying its OpenAI-shaped error."""
    return error_response(status, raw, headers, provider, upstream_status, redactor, expected=expected)
