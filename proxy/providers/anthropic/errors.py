"""Anthropic error bodies -> ``UpstreamStatus`` with an OpenAI-shaped error (529 becomes a retryable 503)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import UpstreamProtocolError, UpstreamStatus
from proxy.providers.base import error_response, upstream_status
from proxy.redact import Redactor

# Anthropic error type -> HTTP status, for errors that arrive inside a 200 stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def error_from(
    status: int, raw: bytes, headers: Mapping[str, str], provider: str, redactor: Redactor, *, expected: str = ""
) -> UpstreamStatus | UpstreamProtocolError:
    """An Anthropic error response as an ``UpstreamStatus`` carrying an OpenAI-shaped error."""
    return error_response(
        status, raw, headers, provider, status_error, redactor, expected=expected, client_status=_client_status
    )


def status_error(
    status: int, error: Mapping[str, Any], headers: Mapping[str, str], redactor: Redactor
) -> UpstreamStatus:
    """An Anthropic ``error`` object as an ``UpstreamStatus``; the Anthropic type is kept as ``code``."""
    kind = error.get("type") or "api_error"
    message = str(error.get("message") or f"The upstream provider returned HTTP {status}.")
    # OpenAI's code for an over-long prompt, which clients (and context_fallback) recognise.
    code = "context_length_exceeded" if message.startswith("prompt is too long") else redactor.identifier(kind)
    body = {"message": message, "type": kind, "param": None}
    return upstream_status(status, body, headers, redactor, client_status=_client_status(status), code=code)


def _client_status(status: int) -> int:
    # 529 is Anthropic's "overloaded"; OpenAI clients know 503 as retryable server overload.
    return 503 if status == 529 else status
