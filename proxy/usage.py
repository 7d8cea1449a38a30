"""Token counts of one call, in OpenAI's sense, read from and written as OpenAI ``usage`` objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, in OpenAI's sense (cached tokens are a subset of prompt tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; ``None`` when absent or not an object."""
        if not isinstance(usage, dict):
            return None
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_int(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0),
            reasoning_tokens=_int(
                completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
            ),
            cache_write_tokens=_int(
                prompt_details.get("cache_write_tokens") if isinstance(prompt_details, dict) else 0
            ),
        )

    def to_openai(self) -> dict[str, Any]:
        """This usage as an OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
