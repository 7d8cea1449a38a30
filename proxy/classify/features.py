"""A request as the classifier sees it: a set of hashed features, kept by the ledger instead of text.

Word unigrams and bigrams of the system prompt and of the last user message (their first ``WORDS``
words, lower-cased, digits folded to ``0`` so a template's filled-in numbers do not matter), each tagged
with where it came from, plus structural facts (tools offered and their names, the response_format type,
the message count and the max_tokens bucket). Each feature is hashed with a per-ledger seed into
``BUCKETS`` buckets: a bag of bucket numbers, no word order, no text, many words per bucket. That is not
encryption, but the prompt cannot be read back out of it; raw text capture is a separate opt-in.

Speed: a system prompt is usually one of a few templates, so its features are cached by its text, as
are the structural ones (and the classifier keeps ``site_features`` per call site, proxy.classify.sites);
the user message's are a regex split and a running CRC per word and word pair (about ten microseconds
for a typical request; bench/classify.py measures it).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from proxy.classify.conditions import RequestView

BUCKETS = 1 << 18
WORDS = 64  # words read from each text
_MASK = BUCKETS - 1
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d")
# The same two steps over ASCII bytes, where \w and \d mean exactly what they mean over an ASCII str.
_ASCII_WORD = re.compile(rb"\w+")
_ASCII_DIGITS = bytes.maketrans(b"123456789", b"000000000")


@dataclass(frozen=True, slots=True)
class Template:
    """The features a call site sends every time: its system prompt's and the request's structure.

    The ledger stores them once, under ``digest``, and each row only the features its user message adds.
    """

    ids: frozenset[int]
    blob: bytes  # encode(sorted(ids))
    digest: bytes  # 8 bytes of blake2b over blob: the ledger's key for it


def template_of(ids: frozenset[int]) -> Template:
    """A call site's features as the ledger keeps them: once, under a digest of their encoding."""
    blob = encode(sorted(ids))
    return Template(ids, blob, hashlib.blake2b(blob, digest_size=8).digest())


def features(view: RequestView, seed: int) -> tuple[int, ...]:
    """The request's feature ids, sorted and unique: ``site_features`` and ``user_features`` together."""
    ids = set(_template_features("s", view.system, seed))
    ids.update(user_features(view, seed))
    ids.update(_structure_of(view, seed))
    return tuple(sorted(ids))


def site_features(view: RequestView, seed: int) -> frozenset[int]:
    """The features a call site's template fixes: its system prompt's and the request's structure.

    They depend on nothing but the system prompt, the message count, the response_format type, the tools
    offered (when any) and max_tokens (``classify.sites.site_key``), so its calls can share them.
    """
    return frozenset(_template_features("s", view.system, seed)).union(_structure_of(view, seed))


def user_features(view: RequestView, seed: int) -> tuple[int, ...]:
    """The last user message's features (repeats possible): the part of a request that is its own."""
    return _text_features("u", view.last_user, seed)


def _structure_of(view: RequestView, seed: int) -> tuple[int, ...]:
    tools = tuple(sorted(view.tool_names)) if view.has_tools else None
    tokens = None if view.max_tokens is None else _bucket(view.max_tokens)
    return _structure(_bucket(len(view.messages)), view.response_format, tools, tokens, seed)


def _text_features(field: str, text: str, seed: int) -> tuple[int, ...]:
    """Unigrams then bigrams of ``text``'s first words, as ``f"{field}:{a}"`` / ``f"{field}:{a} {b}"`` hashed.

    A gram's hash is computed as a running CRC (``crc32(b, crc32(a, seed)) == crc32(a + b, seed)``): the
    field prefix once, each word once, each bigram from its first word's running value.
    """
    lowered = text[: WORDS * 16].lower()
    if lowered.isascii():
        words = _ASCII_WORD.findall(lowered.encode().translate(_ASCII_DIGITS))[:WORDS]
    else:
        words = [w.encode() for w in _WORD.findall(_DIGITS.sub("0", lowered))[:WORDS]]
    prefix = zlib.crc32(field.encode() + b":", seed)
    crc32 = zlib.crc32
    running = [crc32(w, prefix) for w in words]
    running += [crc32(b" " + b, a) for a, b in zip(running, words[1:], strict=False)]
    return tuple([c & _MASK for c in running])


# A system prompt is usually one of a few templates: its features are worth keeping (the user's text
# almost never repeats, so caching it would only evict them).
_template_features = lru_cache(maxsize=4096)(_text_features)


@lru_cache(maxsize=1024)
def _structure(
    messages: int, response_format: str, tools: tuple[str, ...] | None, max_tokens: int | None, seed: int
) -> tuple[int, ...]:
    """The message count's bucket, the response_format type, tools offered and their names, max_tokens' bucket."""
    structure = [f"m:{messages}", f"f:{response_format}"]
    if tools is not None:
        structure.append("t:tools")
        structure.extend(f"t:{name}" for name in tools)
    if max_tokens is not None:
        structure.append(f"k:{max_tokens}")
    return tuple(_hash(structure, seed))


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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Every delta under 2**14 (one or two bytes) encoded once: a request's gaps between sorted ids are
# mostly that small, so encoding is a join of table entries rather than a loop of byte arithmetic.
_SHORT: tuple[bytes, ...] = tuple(_varint(delta) for delta in range(1 << 14))
# Between runs (see ``decode``): a zero in two bytes, which the encoder never writes (it writes 0 as one).
RUN_SEPARATOR = b"\x80\x00"


def encode(ids: Sequence[int]) -> bytes:
    """Sorted feature ids as delta varints (about 2 bytes a feature) for the ledger."""
    deltas = [b - a for a, b in zip((0, *ids), ids, strict=False)]
    short = _SHORT
    if not deltas or max(deltas) < len(short):
        return b"".join([short[d] for d in deltas])
    return b"".join([short[d] if d < len(short) else _varint(d) for d in deltas])


def decode(data: bytes) -> list[int]:
    """``encode``'s inverse, sorted and unique. ``data`` may hold several encoded runs joined by
    ``RUN_SEPARATOR`` (the ledger's ``requests.features``: the call site's template, then the call's own
    features): each run starts again from 0."""
    ids, value, shift, previous = [], 0, 0, 0
    runs = 1
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        if value == 0 and shift:  # the separator: a new run
            previous, shift, runs = 0, 0, runs + 1
            continue
        previous += value
        ids.append(previous)
        value, shift = 0, 0
    return ids if runs == 1 else sorted(set(ids))
