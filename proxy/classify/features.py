"""A request as the classifier sees it: a set of hashed features, kept by the ledger instead of text.

Word unigrams and bigrams of the system prompt and of the last user message (their first ``WORDS``
words, lower-cased, digits folded to ``0`` so a template's filled-in numbers do not matter), each tagged
with where it came from, plus structural facts (tools offered and their names, the response_format type,
the message count and the max_tokens bucket). Each feature is hashed with a per-ledger seed into
``BUCKETS`` buckets: a bag of bucket numbers, no word order, no text, many words per bucket. That is not
encryption, but the prompt cannot be read back out of it; raw text capture is a separate opt-in.

Speed: a system prompt is usually one of a few templates, so its features are cached by its text; the
rest is a regex split and a CRC per word pair (tens of microseconds for a typical request).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson

from proxy.classify.conditions import RequestView

BUCKETS = 1 << 18
WORDS = 64  # words read from each text
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d")


def features(view: RequestView, seed: int) -> tuple[int, ...]:
    """The request's feature ids, sorted and unique."""
    ids = set(_text_features("s", view.system, seed))
    ids.update(_text_features("u", view.last_user, seed))
    structure = [f"m:{_bucket(len(view.messages))}", f"f:{view.response_format}"]
    if view.has_tools:
        structure.append("t:tools")
        structure.extend(f"t:{name}" for name in sorted(view.tool_names))
    if view.max_tokens is not None:
        structure.append(f"k:{_bucket(view.max_tokens)}")
    ids.update(_hash(structure, seed))
    return tuple(sorted(ids))


@lru_cache(maxsize=4096)
def _text_features(field: str, text: str, seed: int) -> tuple[int, ...]:
    words = _WORD.findall(_DIGITS.sub("0", text[: WORDS * 16].lower()))[:WORDS]
    grams = [f"{field}:{w}" for w in words]
    grams += [f"{field}:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return tuple(_hash(grams, seed))


def marker_ids(seed: int) -> frozenset[int]:
    """Ids of which every request's features hold at least one under ``seed``: its response_format type
    (``f:text``, ...) and its message-count bucket. A ledger row holding none was hashed under another
    seed (``TIERGATE_FEATURE_KEY`` changed since it was written): its features mean nothing to a model."""
    formats = [f"f:{kind}" for kind in ("text", "json_object", "json_schema")]
    return frozenset(_hash([*formats, *(f"m:{_bucket(n)}" for n in range(1 << 12))], seed))


def _hash(grams: Iterable[str], seed: int) -> list[int]:
    return [zlib.crc32(g.encode(), seed) & (BUCKETS - 1) for g in grams]


def _bucket(n: int) -> int:
    """0, 1, 2, 3-4, 5-8, 9-16, ...: sizes that differ in kind, not in degree."""
    return n if n < 3 else 1 << (n - 1).bit_length()


def captured_text(body: Mapping[str, Any]) -> str:
    """The raw system prompt and last user message as JSON, for a registry that opts in (``capture_text``)."""
    view = RequestView(body, {})
    return orjson.dumps({"system": view.system, "user": view.last_user}).decode()


def seed_of(key: str) -> int:
    """The feature seed for a key (``TIERGATE_FEATURE_KEY``): the buckets a word falls in depend on it."""
    return zlib.crc32(key.encode()) if key else 0


def encode(ids: Iterable[int]) -> bytes:
    """Sorted feature ids as delta varints (about 2 bytes a feature) for the ledger."""
    out = bytearray()
    previous = 0
    for value in ids:
        delta = value - previous
        previous = value
        while delta >= 0x80:
            out.append((delta & 0x7F) | 0x80)
            delta >>= 7
        out.append(delta)
    return bytes(out)


def decode(data: bytes) -> list[int]:
    """``encode``'s inverse."""
    ids, value, shift, previous = [], 0, 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        previous += value
        ids.append(previous)
        value, shift = 0, 0
    return ids
