"""A generated workload shaped like a real app's bill: ``calls(n, seed)`` and the fake's ``sized`` answers.

The shape (the README's "The demo's workload" states it too), per task of ``rules.yaml``:

- by call count, the small tier's micro-tasks (titles, labels, field extraction, yes/no relevance) are the
  overwhelming majority (~82%); mid prose (summaries, narratives, ad copy) ~13%; frontier agent
  conversations ~5%;
- by size, the opposite: an agent turn carries a long conversation (~9k prompt tokens, most of it a
  cached prefix) and writes ~700 words; a title reads ~300 tokens and writes ~8 words. So on the
  baseline (everything priced on the frontier model) the agent line and the small tier's micro-tasks
  are comparable, mid prose in between;
- some calls stream (narratives mostly, some agent turns); about 1% meet a simulated OpenAI outage and
  fall over to Anthropic; ticket labels go to the lookup table first (``proxy.handlers.ticket_labels``),
  which answers the tickets that name their topic (about 60% of them) and passes the rest to the small tier.

Sizes vary ±50% around each task's mean, deterministically from ``seed``; each task's share of the ``n``
calls is exact (largest remainder), so a test can count them. The fake cannot know the task (tiergate
does not forward the header), so a call asks for its reply's size in words in its last user message
("Answer in about 40 words."), as apps do; ``sized`` makes the fake answer with that many words (its
completion tokens are words) and report the messages before the last as a cached prompt prefix, as a
provider's prompt cache would once it is 1,024 tokens or more. Reusable by ``bench/``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.fakes import traffic
from proxy.fakes.openai import Behavior, count_prompt_tokens, message_text

OUTAGE = "[during an OpenAI outage]"  # proxy.demo.workload's marker: the fake answers 503
_SIZE = re.compile(r"Answer in about (\d+) words\.")
_CACHE_MIN, _CACHE_BLOCK = 1024, 128  # a prompt cache's smallest prefix and its granularity, in tokens
_CHARS_PER_WORD = 5.9  # the filler vocabulary's, space included (the fake counts len(text) // 4 tokens)


@dataclass(frozen=True)
class Shape:
    """One task's calls: its share of all calls, its mean sizes, how it is sent."""

    task: str
    tier: str  # the tier rules.yaml runs it on (said in the README; the audit reads the ledger's)
    share: float
    prompt: int  # prompt tokens, mean
    reply: int  # completion tokens (words) asked for, mean
    system: str
    ask: str  # the user message's opening
    stream: float = 0.0  # the share of its calls that stream
    turns: int = 0  # earlier turns of the conversation sent along (agent)
    max_tokens: int | None = None


SHAPES: tuple[Shape, ...] = (
    Shape("title_generation", "small", 0.22, 300, 8, "You write conversation titles: 3 to 8 words.",
          "Suggest a title for this conversation:", max_tokens=32),
    Shape("classification", "rules", 0.20, 250, 2, "Label the support ticket as bug, billing or feature.",
          "Ticket:", max_tokens=16),
    Shape("extraction", "small", 0.22, 900, 60, "Extract the requested fields as JSON. Use null for a missing field.",
          "Fields: customer, order_id, amount, due_date. Text:"),
    Shape("relevance", "small", 0.18, 700, 1, "Answer yes or no: is the document relevant to the query?",
          "Query and document:", max_tokens=8),
    Shape("summary", "mid", 0.06, 2500, 250, "You summarise support threads for the on-call engineer.",
          "Summarise this thread:"),
    Shape("ad_copy", "mid", 0.04, 300, 120, "You write punchy marketing copy for a product launch.",
          "Write three headline variants and a two-line ad for:"),
    Shape("narrative", "mid", 0.03, 800, 600, "You write the weekly report as a story for the whole team.",
          "Write this week's narrative from these notes:", stream=0.25),
    Shape("agent", "frontier", 0.05, 9000, 700, "You are the operations assistant: investigate, plan, and explain each step.",
          "Next step, given everything above:", stream=0.1, turns=6),
)  # fmt: skip

# Ticket wordings: the first name their topic in the lookup table's words, the last do not.
_TICKETS_KNOWN = ("I was charged twice, please refund the duplicate payment", "the invoice PDF is blank",
                  "the app crashes when I open settings", "please add an export to spreadsheets",
                  "my subscription price changed without notice", "upload fails with an exception")  # fmt: skip
_TICKETS_VAGUE = ("it does not behave as I expected since yesterday", "something is off with my account page")
_KNOWN_SHARE = 0.6


@dataclass(frozen=True)
class Generated:
    """One call of the generated workload: its X-Task-Type, messages, and how it is sent."""

    task: str
    messages: list[dict[str, Any]]
    stream: bool = False
    max_tokens: int | None = None


def calls(n: int, seed: int = 0, shapes: Sequence[Shape] = SHAPES, outage_share: float = 0.01) -> list[Generated]:
    """``n`` calls in the shape of ``shapes``, in a seeded random order; each task's count is exact."""
    rng = random.Random(seed)
    counts = _apportion(n, [s.share for s in shapes])
    order = [shape for shape, count in zip(shapes, counts, strict=True) for _ in range(count)]
    rng.shuffle(order)
    found = [_call(shape, rng) for shape in order]
    # The outage meets calls of model-served tasks (a lookup-table label has no upstream to lose).
    served = [i for i, c in enumerate(found) if c.task != "classification"]
    for i in rng.sample(served, min(len(served), round(n * outage_share))):
        last = found[i].messages[-1]
        last["content"] = f"{OUTAGE} {last['content']}"
    return found


def _apportion(n: int, shares: Sequence[float]) -> list[int]:
    """``n`` split by ``shares``, largest remainder first: the counts add up to ``n`` exactly."""
    total = sum(shares)
    exact = [n * s / total for s in shares]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _call(shape: Shape, rng: random.Random) -> Generated:
    prompt = max(20, round(shape.prompt * rng.uniform(0.5, 1.5)))
    reply = max(1, round(shape.reply * rng.uniform(0.5, 1.5)))
    messages: list[dict[str, Any]] = [{"role": "system", "content": shape.system}]
    # The earlier turns take most of the prompt; the last user message the rest.
    history = prompt * 3 // 4 if shape.turns else 0
    for turn in range(shape.turns):
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": _text(rng, history // shape.turns)})
    if shape.task == "classification":
        tickets = _TICKETS_KNOWN if rng.random() < _KNOWN_SHARE else _TICKETS_VAGUE
        body = f"{rng.choice(tickets)}. {_text(rng, prompt - 40)}"
    else:
        body = _text(rng, prompt - history - count_prompt_tokens(messages[:1]))
    messages.append({"role": "user", "content": f"{shape.ask} {body}\nAnswer in about {reply} words."})
    return Generated(shape.task, messages, rng.random() < shape.stream, shape.max_tokens)


def _text(rng: random.Random, tokens: int) -> str:
    """Filler of about ``tokens`` of the fake's tokens (words of the shared vocabulary, ~4 chars a token)."""
    return traffic.filler(rng, max(1, round(max(tokens, 1) * 4 / _CHARS_PER_WORD)))


def sized(body: dict[str, Any]) -> Behavior | None:
    """The fake's answer to a generated call: as many words as it asked for, and the messages before the
    last reported as a cached prefix once they are ``_CACHE_MIN`` tokens (in ``_CACHE_BLOCK`` steps)."""
    messages = body.get("messages") or []
    asked = _SIZE.search(message_text(messages[-1])) if messages else None
    if asked is None:
        return None
    prefix = count_prompt_tokens(messages[:-1])
    cached = prefix // _CACHE_BLOCK * _CACHE_BLOCK if prefix >= _CACHE_MIN else 0
    words = int(asked[1])
    return Behavior(text=traffic.filler(random.Random(words), words), cached_tokens=cached)
