"""The exception tree, and the only place that knows what each error looks like on the wire.

    TiergateError                 an error a client sees; carries status, type, code, param
    ├── InvalidRequest            400 invalid_request_error (bad JSON, bad fields)
    │   ├── UnknownTaskType       400 code=unknown_task_type
    │   └── PayloadTooLarge       413 code=request_too_large (a body over --max-body-mb)
    ├── Unauthorized              401 (client key missing or wrong)
    ├── QueueFull                 429 code=precompute_queue_full (background generations), retry-after
    ├── NotFound                  404 (unknown route or model id)
    └── UpstreamError             talking to a target went wrong
        ├── UpstreamStatus        the upstream answered 4xx/5xx; its status and error are passed on
        ├── UpstreamUnreachable   502 connect/reset before a response
        ├── UpstreamTimeout       504 connect/read timeout
        ├── UpstreamProtocolError 502 a response that is not what the wire format promises
        └── HandlerFailed, HandlerDeclined   502 a local handler raised / declined (providers/local.py)

    ConfigError                   a rules.yaml problem: one line that starts with the dotted path

Lower layers raise these (translating httpx/aiohttp errors at the upstream boundary with
``raise ... from exc``); ``app.py`` renders them once. Messages are written for the client: they never
carry upstream URLs, keys or stack traces (those go to the log).
"""

from __future__ import annotations

from typing import Any


class TiergateError(Exception):
    """An error rendered to the client as ``{"error": {message, type, param, code}}``."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False  # whether trying again (here or elsewhere) can help

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        # Extra response headers, e.g. retry-after on a passed-on 429.
        self.headers: dict[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TiergateError):
    status = 400
    type = "invalid_request_error"


class UnknownTaskType(InvalidRequest):
    code = "unknown_task_type"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class QueueFull(TiergateError):
    """429: the background generation queue is full; the client may try again after ``retry-after``."""

    status = 429
    type = "rate_limit_error"
    code = "precompute_queue_full"


class Unauthorized(TiergateError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(TiergateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class UpstreamError(TiergateError):
    """Base of every failure while talking to a target; ``retryable`` drives fallback."""

    status = 502
    type = "upstream_error"
    retryable = True
    counts_against_target = True  # whether it feeds the target's circuit breaker
    retry_same_target = True  # False: the same target would answer the same (move on at once)
    # The HTTP status the upstream itself answered, when it answered at all (a 200 whose body was
    # not the wire format is a protocol error with upstream_status 200; a connect error has none).
    upstream_status: int | None = None


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status; its OpenAI-shaped error is passed on.

    ``error``'s fields come from upstream bytes and must have passed through the provider's
    ``Redactor`` (``providers.base.upstream_status`` does that). A 401/403 is about tiergate's provider
    key, not the client's, so its message (which may quote part of that key) is replaced outright.
    """

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        upstream_status: int | None = None,
    ) -> None:
        if status in (401, 403):
            message = (
                f"The upstream provider refused tiergate's credentials (HTTP {status}); "
                "check the provider key tiergate is configured with."
            )
        else:
            message = str(error.get("message") or f"upstream returned HTTP {status}")
        super().__init__(
            message,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            code=error.get("code") if isinstance(error.get("code"), str) else None,
            status=status,
            headers=headers,
        )
        self.type = str(error.get("type") or ("invalid_request_error" if status < 500 else "upstream_error"))
        self.retryable = status in RETRYABLE_STATUSES
        self.upstream_status = status if upstream_status is None else upstream_status


class UpstreamUnreachable(UpstreamError):
    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    status = 502
    code = "upstream_bad_response"

    def __init__(self, message: str, *, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class ConfigError(Exception):
    """A registry problem. ``str(err)`` is one line: ``dotted.path: what is wrong``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


# Statuses after which another try (same target later, or the next target) can help.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
