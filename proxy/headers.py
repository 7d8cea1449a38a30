"""Which headers cross the proxy, in each direction.

Client -> upstream: everything but hop-by-hop headers, credentials (the client's key is for tiergate;
the provider's key is added by the adapter) and tiergate's own headers.
Upstream -> client: only the rate-limit and retry hints an SDK acts on; tiergate sets its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_NOT_FORWARDED = frozenset(
    {
        # hop-by-hop (RFC 9110 7.6.1) and framing, which the upstream connection sets itself
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
        # credentials meant for tiergate, never for a provider
        "authorization",
        "api-key",
        "x-api-key",
        "cookie",
        # tiergate's own routing header
        "x-task-type",
    }
)

# Upstream response headers worth passing on: the SDKs read them to pace and retry.
PASSED_ON = ("retry-after", "retry-after-ms", "x-should-retry")
PASSED_ON_PREFIX = "x-ratelimit-"


def forwardable(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers that may go upstream (names lower-cased)."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower not in _NOT_FORWARDED and not lower.startswith("x-tiergate-"):
            out[lower] = value
    return out


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers a client should see."""
    out = {name: headers[name] for name in PASSED_ON if name in headers}
    for name, value in headers.items():
        if name.lower().startswith(PASSED_ON_PREFIX):
            out[name.lower()] = value
    return out
