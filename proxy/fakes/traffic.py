"""A SIMULATED app's chat traffic, labelled by task: for training the classifier in tests and benchmarks.

An app's call sites each send one template (a system prompt and a user message with blanks) filled
with whatever the user typed. ``SITES`` holds a few call sites per task, some sharing a generic
system prompt (as a team's "You are a helpful assistant." does), so the user message has to tell them
apart; the blanks are filled with words from one shared vocabulary, so the filler says nothing about
the task. ``calls(n, seed)`` draws ``n`` calls, round-robin over the call sites, deterministically.

``unlike_any(seed)`` is a request that resembles no call site (words no template or filler uses): the
classifier should abstain on it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

GENERIC = "You are a helpful assistant."


@dataclass(frozen=True)
class CallSite:
    task: str
    system: str
    user: str  # with {filler} (a few sentences) and {n} (a number) blanks
    extras: dict[str, Any] = field(default_factory=dict)  # body fields the call site always sends


SITES: tuple[CallSite, ...] = (
    CallSite("summary", "You summarise support threads for the on-call engineer.",
             "Summarise this thread in {n} sentences:\n{filler}"),
    CallSite("summary", GENERIC, "TL;DR of the following, please, keep it short: {filler}"),
    CallSite("summary", "Condense the meeting notes into key points and decisions.",
             "Notes from today's sync:\n{filler}\nList the decisions and owners."),
    CallSite("title_generation", "You write conversation titles: 3 to 8 words, no quotes, no final period.",
             "Suggest a title for this conversation: {filler}", {"max_tokens": 32}),
    CallSite("title_generation", GENERIC, "Give me a short title for a chat that starts with: {filler}",
             {"max_tokens": 32}),
    CallSite("title_generation", "Name the document in a few words.", "Document opening: {filler}"),
    CallSite("extraction", "Extract the requested fields as JSON. Use null for a missing field.",
             "Fields: customer, order_id, amount. Text: {filler} Order {n}.",
             {"response_format": {"type": "json_object"}}),
    CallSite("extraction", GENERIC, "Pull the invoice number, due date and total out of this email: {filler}",
             {"response_format": {"type": "json_object"}}),
    CallSite("extraction", "You turn free text into structured records.",
             "Parse the address and phone number from: {filler}"),
    CallSite("relevance", "Answer yes or no: is the document relevant to the query?",
             "Query: {filler}\nDocument: {filler}", {"max_tokens": 8}),
    CallSite("relevance", GENERIC, "Does this passage answer the question? Reply yes or no.\n{filler}",
             {"max_tokens": 8}),
    CallSite("ad_copy", "You write punchy marketing copy for a product launch.",
             "Write {n} headline variants for: {filler}"),
    CallSite("ad_copy", GENERIC, "Draft a tagline and a two-line ad for our new feature: {filler}"),
    CallSite("ad_copy", "Copywriter for social media posts; upbeat, no hashtags.",
             "Post announcing: {filler}"),
    CallSite("agent", "You are an operations agent. Use the tools to investigate and fix incidents.",
             "Incident {n}: {filler} Investigate and remediate.",
             {"tools": [{"type": "function", "function": {"name": "run_query", "parameters": {"type": "object"}}}]}),
    CallSite("agent", GENERIC, "Plan the steps, call the tools you need, then report back: {filler}",
             {"tools": [{"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}}]}),
)  # fmt: skip

# The filler's vocabulary: everyday product and support words, shared by every task.
_WORDS = (
    "the customer says checkout fails after the deploy and retries succeed sometimes while latency doubled "
    "our billing team moved the cron job to a queue which fixed the duplicate charges reported last week "
    "users on mobile cannot upload photos larger than ten megabytes and the error message is confusing "
    "we plan to launch dark mode next month with a new onboarding flow and a faster search index "
    "the warehouse shipped order late because the label printer jammed during the night shift "
    "please check the dashboard the graph shows a spike in signups from the partner campaign in europe "
    "invoice attached for march services total due on receipt contact accounts payable with questions "
    "the meeting agreed to freeze features until the audit passes and to hire two support engineers"
).split()

# Words no call site and no filler uses: a request made of them is like no task.
_STRANGE = (
    "quasar velvet nebula orchid tundra basalt falcon ember lagoon prism glacier meadow cobalt saffron "
    "zephyr obsidian marigold canyon harbor juniper sequoia topaz willow mosaic"
).split()


def calls(
    n: int, seed: int = 0, tasks: Sequence[str] | None = None, sites: Sequence[CallSite] = SITES
) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (task, chat body) pairs, round-robin over the ``sites`` of ``tasks`` (default: all)."""
    sites = [s for s in sites if tasks is None or s.task in tasks]
    rng = random.Random(seed)
    return [(site.task, body(site, rng)) for site in (sites[i % len(sites)] for i in range(n))]


def body(site: CallSite, rng: random.Random) -> dict[str, Any]:
    """One call from ``site``, its blanks filled from ``rng``."""
    user = site.user.format_map(_Blanks(rng))
    return {
        "model": "auto",
        "messages": [{"role": "system", "content": site.system}, {"role": "user", "content": user}],
        **site.extras,
    }


def filler(rng: random.Random, words: int | None = None) -> str:
    """A run of ``words`` (default 8 to 30) vocabulary words: what a user typed into a template."""
    count = words if words is not None else rng.randint(8, 30)
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def unlike_any(seed: int = 0) -> dict[str, Any]:
    """A request that resembles no call site: a system prompt and a question of words none of them uses."""
    rng = random.Random(seed)
    system = " ".join(rng.choice(_STRANGE) for _ in range(8))
    user = " ".join(rng.choice(_STRANGE) for _ in range(20))
    return {"model": "auto", "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


class _Blanks(dict[str, str]):
    """``str.format_map`` blanks: each ``{filler}`` a fresh run of words, each ``{n}`` a fresh number."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng

    def __missing__(self, key: str) -> str:
        return filler(self._rng) if key == "filler" else str(self._rng.randint(2, 9999))
