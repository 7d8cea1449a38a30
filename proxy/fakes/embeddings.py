"""The fake OpenAI upstream's ``POST /v1/embeddings``: deterministic vectors from the input text.

A vector is a bag of hashed words: each lower-cased word (``\\w+``; each token id of a token array)
adds +-1 at 16 positions chosen by its BLAKE2b digest, and the sum is scaled to length 1, as OpenAI's
embeddings are. The same text always gets the same vector, and texts sharing words point the same way,
so a cosine similarity on the fake's vectors means something (a newcomer's semantic search works).

- ``dimensions`` sets the length (default 1536; 3072 for ``text-embedding-3-large``);
- ``encoding_format: base64`` sends each vector as the base64 of its little-endian float32s (what the
  openai SDK asks for by default, and decodes itself);
- ``usage.prompt_tokens`` (= ``total_tokens``): ``len(text) // 4 + 1`` per string, the length of each
  token array.

``problem`` says what the real API would answer 400 to (no model, an empty or mistyped input, ...).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_DIMENSIONS = 1536
_DIMENSIONS = {"text-embedding-3-large": 3072}
_HITS = 16  # positions each word touches
_MAX_INPUTS = 2048  # OpenAI's own bound on inputs per request
_WORD = re.compile(r"\w+")


def problem(request: Any) -> str | None:
    """What OpenAI would reject this embeddings request for, if anything."""
    if not isinstance(request, dict):
        return "The request body must be a JSON object"
    if not isinstance(request.get("model"), str) or not request["model"]:
        return "you must provide a model parameter"
    if _inputs(request.get("input")) is None:
        return "'input' must be a non-empty string, array of strings, array of tokens or array of token arrays"
    dimensions = request.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        return "'dimensions' must be an integer greater than 0"
    if request.get("encoding_format", "float") not in ("float", "base64"):
        return "'encoding_format' must be 'float' or 'base64'"
    return None


def answer(request: Mapping[str, Any], *, usage: bool = True) -> dict[str, Any]:
    """The ``list`` of embeddings for a request ``problem`` found nothing wrong with."""
    inputs = _inputs(request["input"]) or []
    model = str(request["model"])
    dimensions = request.get("dimensions") or _DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        values = vector(item, dimensions)
        encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode() if as_base64 else values
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if usage:
        tokens = sum(count_tokens(item) for item in inputs)
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return body


def vector(item: str | Sequence[int], dimensions: int) -> list[float]:
    """The unit vector of one input (a text, or a token array)."""
    if isinstance(item, str):
        words = _WORD.findall(item.lower()) or [item]  # punctuation alone still gets its own vector
    else:
        words = [f"#{t}" for t in item]
    sums = [0.0] * dimensions
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=2 * _HITS).digest()
        for k in range(_HITS):
            bits = int.from_bytes(digest[2 * k : 2 * k + 2], "little")
            sums[(bits >> 1) % dimensions] += 1.0 if bits & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in sums)) or 1.0
    return [x / norm for x in sums]


def count_tokens(item: str | Sequence[int]) -> int:
    """The fake's token count of one input."""
    return len(item) // 4 + 1 if isinstance(item, str) else len(item)


def _inputs(value: Any) -> list[str | list[int]] | None:
    """The inputs of ``input`` (a string, strings, a token array, token arrays); ``None`` if malformed."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value or len(value) > _MAX_INPUTS:
        return None
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(_is_token(v) for v in value):
        return [list(value)]
    if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
        return [list(v) for v in value]
    return None


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
