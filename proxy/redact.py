"""The one redaction step for upstream bytes that are not a successful answer's content.

An upstream's error message, ``type``, ``code`` and ``param``, its passed-on headers and its request id
reach the client, the log and the ledger. Upstreams echo what they were sent (some gateways and
misconfigured servers quote the ``Authorization`` header back), so each of those passes through a
``Redactor`` at the provider boundary, before anything else sees it: the exact secrets tiergate holds
(every provider key and every client key, whatever their shape) and key-shaped strings become ``***``.
Identifier fields (``type``, ``code``, ``param``, request ids) must also look like identifiers; anything
else is dropped rather than relayed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Shapes of credentials seen in the wild: OpenAI/Anthropic/Groq/xAI/OpenRouter style prefixed keys,
# Google API keys, AWS access key ids, GitHub and Slack tokens, JWTs, and a bearer token after its scheme.
_KEY_SHAPED = re.compile(
    r"\b(?:sk|rk|pk|gsk|xai|sess)[-_][A-Za-z0-9_\-*.]{6,}"
    r"|\bkey-[A-Za-z0-9]{16,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{12,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
)
_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9_\-.~+/=]{8,}")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:\-\[\]]{1,96}$")
MESSAGE_LIMIT = 1_000  # characters of an upstream error message passed on


class Redactor:
    """Masks ``secrets`` (shorter than 8 characters they are too common to mask) and key-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        exact = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, exact))) if exact else None

    def text(self, value: str, limit: int = MESSAGE_LIMIT) -> str:
        """``value`` with every secret and key-shaped string masked, cut to ``limit`` characters."""
        if self._exact is not None:
            value = self._exact.sub(MASK, value)
        value = _BEARER.sub(r"\1" + MASK, _KEY_SHAPED.sub(MASK, value))
        return value if len(value) <= limit else value[: limit - 1] + "…"

    def identifier(self, value: object) -> str | None:
        """``value`` when it is a short identifier that holds no secret, else ``None`` (dropped)."""
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            return None
        return value if self.text(value) == value else None
