"""Client keys: who may call tiergate, and the non-secret id a caller is known by in the ledger.

Keys arrive as ``Authorization: Bearer <key>`` (what the OpenAI SDKs send) or ``api-key`` (Azure-style
clients). Every configured key is compared in constant time, so the time an answer takes says nothing
about how much of a key was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from proxy.errors import Unauthorized


class ClientKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The caller's id (``key:<hash prefix>``), ``None`` when no keys are configured; else 401."""
        if not self._keys:
            return None
        presented = _presented(headers).encode()
        # No early exit: every key is compared, whichever matches.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise Unauthorized("Invalid or missing API key for tiergate. Send it as 'Authorization: Bearer <key>'.")
        return "key:" + hashlib.sha256(presented).hexdigest()[:12]


def _presented(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("api-key", "")
