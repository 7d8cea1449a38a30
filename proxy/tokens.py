"""Offline token estimates, for the rare call whose upstream never reported usage.

Exact usage comes from the upstream (the body, or the stream's usage chunk that tiergate always asks
for). Only a cut stream or an upstream that ignores ``include_usage`` lands here. Counting uses
``bpe-openai`` (OpenAI's o200k/cl100k BPE files, bundled, no download) and OpenAI's chat framing of
3 tokens per message plus 3 to prime the reply. For non-OpenAI models it is an approximation; without
the package it falls back to ~4 characters per token. The ledger marks such rows
``usage_source = 'estimated'``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

_PER_MESSAGE = 3
_REPLY_PRIMING = 3


# A BPE table costs ~75 MB of memory once loaded, so it is loaded on the first estimate (in the
# ledger writer's thread), not at start-up: most processes never need one.
@lru_cache(maxsize=8)
def _encoder(model: str) -> Callable[[str], int]:
    if model == APPROXIMATE:
        return _approx
    try:
        import bpe_openai  # type: ignore[import-untyped]  # ships no type information
    except ImportError:  # pragma: no cover - the package is a dependency; keep estimates working anyway
        return _approx
    name = "cl100k_base" if model.startswith(("gpt-4-", "gpt-3.5")) or model == "gpt-4" else "o200k_base"
    encoding = bpe_openai.get_encoding(name)
    # encode_ordinary: text that spells a special token ("<|endoftext|>") is counted as text; encode()
    # would raise on it.
    return lambda text: sum(len(encoding.encode_ordinary(piece)) for piece in pieces(text))


APPROXIMATE = "~4-chars-per-token"  # a model name that selects the heuristic, not a BPE table


def _approx(text: str) -> int:
    return (len(text) + 3) // 4


# bpe-openai refuses one call of 1,000,000 characters or more, or of more than 200,000 tokens. A piece
# of 32,768 characters stays under both (even at 4 byte-level tokens a character, 131,072 tokens).
PIECE = 32_768


def pieces(text: str, size: int = PIECE) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters whose token counts add up to the whole's.

    A cut goes just before a single space between two non-space characters, in the second half of
    the piece: the tokenizer's pre-split never joins across such a space (the space starts the next
    word), so counting the pieces gives the same total as counting the whole. Text with no such space
    there (a run of 16,000 letters) is cut at the limit, where a token or two may differ.
    """
    if len(text) <= size:
        return [text]
    out: list[str] = []
    start = 0
    while len(text) - start > size:
        end = start + size
        floor = start + size // 2
        cut = text.rfind(" ", floor, end)
        while cut >= 0 and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.rfind(" ", floor, cut)
        if cut < 0:
            cut = end
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def count(text: str, model: str) -> int:
    """Tokens in ``text`` for ``model`` (o200k for current models)."""
    return _encoder(model)(text) if text else 0


def estimate_completion(text: str, model: str) -> int:
    return count(text, model)


def estimate_prompt(messages: Any, model: str) -> int:
    """Tokens of a chat prompt, OpenAI framing included; unreadable parts are skipped."""
    if not isinstance(messages, list):
        return 0
    total = _REPLY_PRIMING
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += _PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += count(content, model)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += count(part["text"], model)
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                fn = call["function"]
                total += count(str(fn.get("name", "")), model) + count(str(fn.get("arguments", "")), model)
    return total
