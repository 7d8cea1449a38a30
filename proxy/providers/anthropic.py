"""``type: anthropic``: the Anthropic Messages API.

The OpenAI <-> Messages translation lands with the providers issue. Until then a call that reaches an
Anthropic target fails with a clear OpenAI-shaped 501 (never a crash), and the shipped rules.yaml puts
Anthropic targets only behind OpenAI ones.
"""

from __future__ import annotations

from proxy.errors import NotImplementedByProvider
from proxy.providers.base import Call, ChunkStream, Completion, Provider


class Anthropic(Provider):

    default_price_id = "anthropic"
    async def complete(self, call: Call) -> Completion:
        raise self._not_yet(call)

    async def stream(self, call: Call) -> ChunkStream:
        raise self._not_yet(call)

    def _not_yet(self, call: Call) -> NotImplementedByProvider:
        return NotImplementedByProvider(
            f"Target {call.target.key} uses provider type 'anthropic', whose adapter is not available in this "
            "version of tiergate. Route this tier to an OpenAI-compatible target first."
        )
