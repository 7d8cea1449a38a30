"""Token counts of one call, in OpenAI's sense, read from and written as OpenAI ``usage`` objects
(Chat Completions' ``prompt_tokens``/``completion_tokens``, or the Responses API's ``input_tokens``/
``output_tokens``: the same counts under other names).

One rule holds for every ``Usage``, however it was made: cached and cache-written tokens are parts
of the prompt, so together they never exceed ``prompt_tokens``. Upstreams do break it (a gateway that
reports cached tokens of the whole conversation, say); such counts are clamped and ``clamped`` is set,
so pricing can never go negative and the ledger can flag the row.
"""

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
    clamped: bool = False  # the counts broke the rule above and were clamped to it

    def __post_init__(self) -> None:
        cached = min(self.cached_tokens, self.prompt_tokens)
        written = min(self.cache_write_tokens, self.prompt_tokens - cached)
        reasoning = min(self.reasoning_tokens, self.completion_tokens)
        if (cached, written, reasoning) != (self.cached_tokens, self.cache_write_tokens, self.reasoning_tokens):
            # frozen: the one place a Usage is corrected, before anybody has seen it
            object.__setattr__(self, "cached_tokens", cached)
            object.__setattr__(self, "cache_write_tokens", written)
            object.__setattr__(self, "reasoning_tokens", reasoning)
            object.__setattr__(self, "clamped", True)

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

    @classmethod
    def from_responses(cls, usage: Any) -> Usage | None:
        """Read a Responses API ``usage`` object; ``None`` when absent or not an object."""
        if not isinstance(usage, dict):
            return None
        input_details = usage.get("input_tokens_details")
        output_details = usage.get("output_tokens_details")
        return cls(
            prompt_tokens=_int(usage.get("input_tokens")),
            completion_tokens=_int(usage.get("output_tokens")),
            cached_tokens=_int(input_details.get("cached_tokens") if isinstance(input_details, dict) else 0),
            reasoning_tokens=_int(output_details.get("reasoning_tokens") if isinstance(output_details, dict) else 0),
            cache_write_tokens=_int(input_details.get("cache_write_tokens") if isinstance(input_details, dict) else 0),
        )

    def to_responses(self) -> dict[str, Any]:
        """This usage as a Responses API ``usage`` object."""
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

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
