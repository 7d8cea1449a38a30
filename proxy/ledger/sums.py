"""What a run sums, in SQL: the aggregates the audit's scan (``proxy.ledger.runs``) and the kept sums
(``proxy.ledger.materialize``) both compute, over ``ledger_requests``, in one order (``SUMMED``).
"""

from __future__ import annotations

DAY_MS = 86_400_000
# ``ts`` (epoch ms) as the views show it. Only ever selected for people to read: filters and orders use
# ``ts`` itself, the key of its index (``ledger_requests_ts``), which orders the rows as this text does.
ISO_TS = "strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch')"
LATENCY = "latency_us"  # a run's latencies in whole µs; the view's latency_ms is this / 1000.0
SUMS = (
    "count(*)", f"count({LATENCY})", "coalesce(sum(prompt_tokens), 0)",
    "coalesce(sum(completion_tokens), 0)", "total(cost_usd)", "count(cost_usd)", "total(baseline_cost_usd)",
    "count(baseline_cost_usd)", "total(cost_avoided_usd)", "count(cost_avoided_usd)",
)  # fmt: skip
CONFIDENCE_SUMS = ("total(task_confidence)", "count(task_confidence)")  # the classifier report's
# What the what-if adds: the token parts it prices, the largest prompt (a price tier starts past some
# size), and how many rows break Usage's rule (cached + cache-written > prompt, or a negative count):
# those are priced one by one, as Usage would clamp them.
ODD = (
    "coalesce(cached_tokens, 0) + coalesce(cache_write_tokens, 0) > coalesce(prompt_tokens, 0) OR min("
    "coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), coalesce(cached_tokens, 0), "
    "coalesce(cache_write_tokens, 0)) < 0"
)
TOKEN_SUMS = (
    "coalesce(sum(cached_tokens), 0)", "coalesce(sum(cache_write_tokens), 0)", "coalesce(max(prompt_tokens), 0)",
    f"count(*) FILTER (WHERE {ODD})",
)  # fmt: skip
# About 1 in 16 latencies, picked by the arrival's millisecond (unrelated to how long the call took),
# read in the same pass: what ``ranks`` estimates a large group's percentiles from.
SAMPLE_EVERY = 16
SAMPLE = f"group_concat({LATENCY}) FILTER (WHERE ts % {SAMPLE_EVERY} = 5 AND {LATENCY} IS NOT NULL)"

# The scan's sums, in its SELECT's order after the key: ``Run``'s fields of those names.
SUMMED = (
    "calls", "latencies", "prompt_tokens", "completion_tokens", "cost_usd", "priced", "baseline_cost_usd",
    "baselined", "cost_avoided_usd", "avoided", "confidence", "confident", "cached_tokens",
    "cache_write_tokens", "largest_prompt", "odd", "sample",
)  # fmt: skip
