"""``type: anthropic``: OpenAI chat requests translated to the Anthropic Messages API and back.

Clients keep speaking OpenAI chat. The adapter writes ``POST {base_url}/v1/messages`` and turns the
reply, a message or its ``event:`` stream, into OpenAI shapes:

- request: system/developer messages are hoisted into ``system``; same-role turns are merged; text,
  images (data and http URLs), PDFs, ``tool_calls`` and ``tool`` results become content blocks; tools,
  ``tool_choice``, ``parallel_tool_calls``, ``stop``, ``max_tokens``, ``response_format``,
  ``reasoning_effort``, ``user`` and the sampling params are mapped. A json_schema ``response_format``
  becomes ``output_config.format``; json_object (the Messages API has no schema-less JSON mode) becomes
  an instruction appended to ``system``, and an answer that is not a JSON object a failed, retryable
  attempt (``json_object``: 502 ``invalid_json_output`` when no try does better).
  The Messages API rejects fields it does not know, so everything else is dropped (logged at debug),
  except a few Messages-only fields a registry target may set as params (``request._NATIVE``).
  ``n > 1``, audio and file ids are a 400.
- response: text blocks are joined into ``content``, ``tool_use`` blocks become ``tool_calls``, thinking
  is dropped; usage counts cache reads and writes into ``prompt_tokens`` as OpenAI does.
- errors: Anthropic's ``{"type": "error", "error": {type, message}}`` keeps its status and its type as
  ``code``, except 529 (overloaded) which becomes a retryable 503.

Options: ``anthropic_version`` (default 2023-06-01), ``anthropic_beta``, ``default_max_tokens`` (4096).

Modules: ``request`` (OpenAI body -> Messages body), ``response`` (message -> ``chat.completion``, usage,
stop reasons), ``stream`` (``event:`` stream -> chunks), ``errors`` (error bodies -> ``UpstreamStatus``),
``json_object`` (the instruction and the check of ``response_format: json_object``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import ConfigError
from proxy.headers import passed_on, request_id
from proxy.providers.anthropic import json_object
from proxy.providers.anthropic.errors import error_from
from proxy.providers.anthropic.request import messages_request
from proxy.providers.anthropic.response import completion_body
from proxy.providers.anthropic.stream import _AnthropicStream
from proxy.providers.base import Call, ChunkStream, Completion, Provider, json_body
from proxy.upstream import UpstreamResponse

if TYPE_CHECKING:
    from proxy.redact import Redactor
    from proxy.registry import ProviderConfig
    from proxy.upstream import UpstreamClient


DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# Client headers meant for OpenAI, or set here from the provider's config.
_NOT_FORWARDED_PREFIXES = ("openai-", "anthropic-")


class Anthropic(Provider):
    """``type: anthropic``. Options: ``anthropic_version``, ``anthropic_beta``, ``default_max_tokens``."""

    default_price_id = "anthropic"
    genai_name = "anthropic"
    option_keys = frozenset({"price_provider", "anthropic_version", "anthropic_beta", "default_max_tokens"})

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> None:
        super().validate_options(options, path)
        max_tokens = options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ConfigError(f"{path}.default_max_tokens", f"expected an integer greater than 0, got {max_tokens!r}")
        if not isinstance(options.get("anthropic_version", DEFAULT_VERSION), str):
            raise ConfigError(f"{path}.anthropic_version", 'expected a date string such as "2023-06-01"')

    def __init__(self, config: ProviderConfig, http: UpstreamClient, redactor: Redactor) -> None:
        super().__init__(config, http, redactor)
        options = config.options
        self.version = str(options.get("anthropic_version", DEFAULT_VERSION))
        beta = options.get("anthropic_beta")
        self.beta = ",".join(map(str, beta)) if isinstance(beta, list) else str(beta) if beta else ""
        self.default_max_tokens: int = options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        base = config.base_url.rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    async def complete(self, call: Call) -> Completion:
        response = await self._send(call, stream=False)
        raw = await response.read()
        if response.status != 200:
            raise error_from(response.status, raw, response.headers, self.name, self.redactor)
        message = json_body(raw, self.name, "content", list, "a message")
        body, usage = completion_body(message)
        if json_object.asked(call.body):
            json_object.check_completion(body)
        return Completion(
            body=body,
            usage=usage,
            request_id=request_id(response.headers.get("request-id"), self.redactor),
            headers=passed_on(response.headers, self.redactor),
        )

    async def stream(self, call: Call) -> ChunkStream:
        response = await self._send(call, stream=True)
        if response.status != 200:
            raise error_from(response.status, await response.read(), response.headers, self.name, self.redactor)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            raw = await response.read()
            error = error_from(502, raw, response.headers, self.name, self.redactor, expected="an event stream")
            error.upstream_status = response.status
            raise error
        check = json_object.StreamCheck() if json_object.asked(call.body) else None
        return _AnthropicStream(response, self.redactor, check)

    async def _send(self, call: Call, *, stream: bool) -> UpstreamResponse:
        body = messages_request(call.body, version=self.version, default_max_tokens=self.default_max_tokens)
        body["stream"] = stream
        headers = {k: v for k, v in call.headers.items() if not k.lower().startswith(_NOT_FORWARDED_PREFIXES)}
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # compressed SSE would be buffered by the decoder
        headers["anthropic-version"] = self.version
        if self.beta:
            headers["anthropic-beta"] = self.beta
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return await self.http.post(
            self.url,
            headers,
            orjson.dumps(body),
            read_timeout=call.read_timeout,
            idle_timeout=call.idle_timeout,
            connect_timeout=call.connect_timeout,
        )
