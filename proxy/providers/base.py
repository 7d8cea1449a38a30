"""The provider interface: what every adapter takes and returns.

An adapter receives a ``Call`` whose body is already an OpenAI chat request rewritten for its target
(model, params), speaks its provider's wire format, and hands back OpenAI shapes: a ``Completion`` or a
``ChunkStream`` of OpenAI chunks. Failures are raised as ``UpstreamError``s before the first chunk
when possible, so the dispatcher can fall back.

An adapter whose upstream serves OpenAI's Responses API itself says so (``native_responses``) and
implements ``respond`` / ``respond_stream``: the body is then a Responses request and the answers are
Responses shapes (a ``response`` object, a stream of typed events). For every other adapter,
``proxy.responses`` translates such calls to chat and back.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import ConfigError, UpstreamProtocolError, UpstreamStatus
from proxy.headers import passed_on
from proxy.redact import Redactor
from proxy.usage import Usage

log = logging.getLogger("tiergate.providers")

if TYPE_CHECKING:
    from proxy.registry import ProviderConfig, Target
    from proxy.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream attempt: the body rewritten for ``target`` and the client headers safe to forward."""

    target: Target
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None  # longest socket silence, the wait for the first byte included
    idle_timeout: float | None = None  # longest silence once the response has started
    connect_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer in OpenAI shape: a ``chat.completion`` (or, from ``respond``, a ``response``), or an
    embeddings ``list``."""

    body: dict[str, Any]
    usage: Usage | None
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # The upstream's own bytes when ``body`` is exactly them: relayed without re-encoding.
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One OpenAI ``chat.completion.chunk`` (or Responses stream event): ``payload`` is relayed byte for
    byte, ``data`` is inspected."""

    payload: bytes
    data: dict[str, Any]


class ChunkStream(ABC):
    """An open upstream stream of OpenAI chunks; iterate once, then ``aclose`` (idempotent)."""

    request_id: str | None = None
    headers: Mapping[str, str] = {}

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


def json_body(raw: bytes, provider: str, field: str, kind: type, what: str) -> dict[str, Any]:
    """A 200 body parsed as a JSON object whose ``field`` is a ``kind``, else ``UpstreamProtocolError``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("provider %s returned a body that is not JSON (%d bytes)", provider, len(raw))
        raise UpstreamProtocolError(
            "The upstream provider returned a response that is not valid JSON.", upstream_status=200
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get(field), kind):
        raise UpstreamProtocolError(
            f"The upstream provider returned a response that is not {what}.", upstream_status=200
        )
    return body


def stream_event(data: bytes) -> dict[str, Any]:
    """One stream event's data as a JSON object, else ``UpstreamProtocolError``."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("The upstream provider sent a stream event that is not JSON.") from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError("The upstream provider sent a stream event that is not an object.")
    return parsed


StatusError = Callable[[int, Mapping[str, Any], Mapping[str, str], Redactor], UpstreamStatus]


def upstream_status(
    status: int,
    error: Mapping[str, Any],
    headers: Mapping[str, str],
    redactor: Redactor,
    *,
    client_status: int | None = None,
    code: str | None = None,
) -> UpstreamStatus:
    """An upstream's ``error`` object as an ``UpstreamStatus``, every field through ``redactor`` first:
    the message masked and cut, ``type``/``code``/``param`` kept only when they are plain identifiers."""
    fields = {
        "message": redactor.text(str(error.get("message") or "")) or None,
        "type": redactor.identifier(error.get("type")),
        "param": redactor.identifier(error.get("param")),
        "code": code if code is not None else redactor.identifier(error.get("code")),
    }
    return UpstreamStatus(
        status if client_status is None else client_status,
        fields,
        headers=passed_on(headers, redactor),
        upstream_status=status,
    )


def error_response(
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
    provider: str,
    from_error: StatusError,
    redactor: Redactor,
    *,
    expected: str = "",
    client_status: Callable[[int], int] = lambda status: status,
) -> UpstreamStatus | UpstreamProtocolError:
    """An upstream error response as our error: ``from_error`` maps the body's ``error`` object (each
    wire format has its own); a body without one is a bare HTTP error, or a protocol error when the
    response was supposed to be ``expected``. A redirect is never followed and never relayed (the client
    would get a 3xx without its ``Location``): it is a bad response, most likely a wrong ``base_url``."""
    if 300 <= status < 400:
        log.warning("provider %s answered with a redirect (HTTP %d); redirects are not followed", provider, status)
        redirect = UpstreamProtocolError(
            f"The upstream provider answered with a redirect (HTTP {status}); tiergate does not follow redirects.",
            upstream_status=status,
        )
        redirect.retry_same_target = False  # it would redirect again
        return redirect
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return from_error(status, error, headers, redactor)
    log.warning(
        "provider %s answered HTTP %d with a body that is not its error format (%d bytes)", provider, status, len(raw)
    )
    if expected:
        return UpstreamProtocolError(f"The upstream provider did not return {expected}.", upstream_status=status)
    message = {"message": f"The upstream provider returned HTTP {status}."}
    return UpstreamStatus(client_status(status), message, headers=passed_on(headers, redactor), upstream_status=status)


class Provider(ABC):
    """An adapter for one provider type; one instance per configured provider, shared by all requests."""

    # genai-prices' provider id for pricing this adapter's models; ``options.price_provider`` overrides.
    default_price_id: ClassVar[str | None] = None
    # The provider's name in OpenTelemetry's GenAI conventions (``gen_ai.provider.name``).
    genai_name: ClassVar[str] = "_OTHER"
    # The ``options:`` keys this adapter reads; any other key is a registry error.
    option_keys: ClassVar[frozenset[str]] = frozenset({"price_provider"})
    # Whether the provider is reached at an http(s) ``base_url``, and whether its targets name a handler.
    needs_base_url: ClassVar[bool] = True
    runs_handlers: ClassVar[bool] = False
    # What its targets may serve (registry kinds): only these reach ``complete``/``stream`` or ``embed``.
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> None:
        """Reject unknown or malformed options at load, so ``tiergate check`` catches them."""
        for key in options:
            if key not in cls.option_keys:
                raise ConfigError(f"{path}.{key}", f"unknown option (allowed: {', '.join(sorted(cls.option_keys))})")
        price = options.get("price_provider")
        if price is not None and (not isinstance(price, str) or not price):
            raise ConfigError(f"{path}.price_provider", "expected a genai-prices provider id (a string)")

    def __init__(self, config: ProviderConfig, http: UpstreamClient, redactor: Redactor) -> None:
        self.config = config
        self.http = http
        # Every upstream byte that is not a successful answer's content passes through it (proxy.redact).
        self.redactor = redactor

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def genai_provider(self) -> str:
        """``gen_ai.provider.name`` for this provider's spans and metrics."""
        return self.genai_name

    @abstractmethod
    async def complete(self, call: Call) -> Completion:
        """Run a non-streaming call."""

    @abstractmethod
    async def stream(self, call: Call) -> ChunkStream:
        """Open a streaming call; return once the upstream has accepted it (status 200)."""

    @property
    def native_responses(self) -> bool:
        """Whether the upstream serves the Responses API itself (``respond``); else calls are translated."""
        return False

    async def respond(self, call: Call) -> Completion:
        """Run a non-streaming Responses API call natively: ``call.body`` is a Responses request."""
        raise NotImplementedError(f"provider {self.name} does not serve the Responses API natively")

    async def respond_stream(self, call: Call) -> ChunkStream:
        """Open a streaming Responses API call natively; the stream yields its typed events."""
        raise NotImplementedError(f"provider {self.name} does not serve the Responses API natively")

    async def embed(self, call: Call) -> Completion:
        """Run an embeddings call (``POST /v1/embeddings``'s body): the ``list`` in OpenAI shape.

        Only adapters whose ``kinds`` has ``embedding`` are given one: the registry refuses an embedding
        tier's target on any other provider type.
        """
        raise NotImplementedError(f"{type(self).__name__} serves no embeddings")
