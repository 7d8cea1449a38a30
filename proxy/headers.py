"""Which headers cross the proxy, in each direction: allow-lists both ways, values checked.

Client -> upstream: only what identifies the client software (``User-Agent`` and the SDKs'
``X-Stainless-*``). Credentials, organisation and project selectors (``OpenAI-Organization`` would let
a client choose which organisation the shared key bills), cookies and everything else stay here; the
adapter adds the provider's own key and version headers.

Upstream -> client: only the pacing and retry hints an SDK acts on, each value checked for its shape
and bounds (a ``retry-after: -5`` or ``retry-after-ms: nan`` is dropped, not relayed); tiergate sets its
own headers beside them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from proxy.redact import Redactor

_FORWARDED = frozenset({"user-agent"})
_FORWARDED_PREFIXES = ("x-stainless-",)
_MAX_FORWARDED_VALUE = 256

_MAX_WAIT_S = 86_400.0  # a day: longer is not a hint, it is noise
# OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens}, and Anthropic's own spelling
# (anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}).
_RATE_LIMIT = re.compile(r"^x-ratelimit-(limit|remaining|reset)-(requests|tokens)$")
_ANTHROPIC_RATE_LIMIT = re.compile(
    r"^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)$"
)
_COUNT = re.compile(r"^\d{1,12}$")
_DURATION = re.compile(r"^(?:\d{1,6}(?:\.\d{1,6})?(?:ms|h|m|s))+$")  # 12ms, 6m0s, 1h2m3.5s
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def forwardable(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers that may go upstream (names lower-cased)."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if (lower in _FORWARDED or lower.startswith(_FORWARDED_PREFIXES)) and len(value) <= _MAX_FORWARDED_VALUE:
            out[lower] = value
    return out


def passed_on(headers: Mapping[str, str], redactor: Redactor) -> dict[str, str]:
    """The upstream response headers a client should see, each value checked (bad ones dropped)."""
    out: dict[str, str] = {}
    for raw_name, value in headers.items():
        name = raw_name.lower()
        value = value.strip()
        if name == "retry-after":
            ok = _retry_after(value)
        elif name == "retry-after-ms":
            ok = _seconds(value, scale=0.001)
        elif name == "x-should-retry":
            ok = value in ("true", "false")
        elif _RATE_LIMIT.match(name):
            ok = bool(_DURATION.match(value)) or _seconds(value) if "-reset-" in name else bool(_COUNT.match(value))
        elif _ANTHROPIC_RATE_LIMIT.match(name):
            ok = _timestamp(value) if name.endswith("-reset") else bool(_COUNT.match(value))
        else:
            continue
        if ok and redactor.text(value) == value:
            out[name] = value
    return out


def request_id(value: str | None, redactor: Redactor) -> str | None:
    """An upstream's request id, when it is a short token that holds no secret; else ``None``."""
    if value is None or not _REQUEST_ID.match(value):
        return None
    return value if redactor.text(value) == value else None


def _retry_after(value: str) -> bool:
    # RFC 9110: delay-seconds (digits) or an HTTP-date; LLM APIs also send fractional seconds.
    return _seconds(value) or _future_date(value)


def _seconds(value: str, scale: float = 1.0) -> bool:
    try:
        seconds = float(value) * scale
    except ValueError:
        return False
    return math.isfinite(seconds) and 0.0 <= seconds <= _MAX_WAIT_S


def _future_date(value: str) -> bool:
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return -60.0 <= moment - time.time() <= _MAX_WAIT_S  # a minute of clock skew either way


def _timestamp(value: str) -> bool:
    """An RFC 3339 moment (Anthropic's reset times) within bounds."""
    try:
        moment = datetime.fromisoformat(value).timestamp()
    except ValueError:
        return False
    return -60.0 <= moment - time.time() <= _MAX_WAIT_S
