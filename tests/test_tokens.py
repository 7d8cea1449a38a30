"""Offline token estimates: any length of text, any content, the same count as the tokenizer's own."""

from __future__ import annotations

import random

import bpe_openai

from proxy.tokens import count, pieces

O200K = bpe_openai.get_encoding("o200k_base")
MODEL = "gpt-5.4-mini"  # an o200k model


def mixed_text(seed: int, words: int) -> str:
    """Text with what tokenizers split on: runs of spaces, newlines, digits, punctuation, CJK, emoji."""
    vocabulary = ["the", "Quick", "brown", "fox,", "it's", "dog.", "123", "45678", "世界", "émigré", "🙂", "x" * 9]
    separators = [" ", " ", " ", "  ", "\n", "\n\n", "", " \n "]
    rnd = random.Random(seed)
    return "".join(rnd.choice(vocabulary) + rnd.choice(separators) for _ in range(words))


def test_pieces_count_the_same_as_the_whole() -> None:
    for seed in range(5):
        text = mixed_text(seed, 20_000)
        cut = pieces(text, size=1000)
        assert "".join(cut) == text and len(cut) > 50 and max(len(p) for p in cut) <= 1000
        assert sum(len(O200K.encode_ordinary(p)) for p in cut) == len(O200K.encode_ordinary(text))


def test_a_text_longer_than_the_tokenizer_takes_is_counted() -> None:
    paragraph = "Each piece is counted on its own, and the counts add up to the whole.\n"
    repeats = 40_000  # ~2.8 MB; bpe-openai refuses 1,000,000 characters in one call
    assert count(paragraph * repeats, MODEL) == repeats * len(O200K.encode_ordinary(paragraph))


def test_a_text_of_many_tokens_per_character_is_counted() -> None:
    text = "🙂" * 300_000  # under the character limit but over 200,000 tokens, bpe-openai's other limit
    assert count(text, MODEL) == 3 * len(O200K.encode_ordinary("🙂" * 100_000))


def test_text_that_spells_a_special_token_is_counted_as_text() -> None:
    assert count("the reply said <|endoftext|> and went on", MODEL) > 5
