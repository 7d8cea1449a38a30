"""Pricing: the cached per-tier rates give exactly genai-prices' numbers; overrides and local win."""

from __future__ import annotations

import logging
import random

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from proxy.pricing import Pricer
from proxy.registry import Price, Target
from proxy.usage import Usage

MODELS = [
    ("openai", "gpt-5.5"),  # tiered: every rate changes above 272k input tokens
    ("openai", "gpt-5.4-mini"),
    ("openai", "gpt-5.4-nano"),
    ("anthropic", "claude-opus-5-5"),
    ("anthropic", "claude-sonnet-5-5"),
    ("anthropic", "claude-haiku-5-5"),
]


def genai(provider: str, model: str, u: Usage) -> float:
    usage = PriceUsage(
        input_tokens=u.prompt_tokens,
        cache_read_tokens=u.cached_tokens,
        cache_write_tokens=u.cache_write_tokens,
        output_tokens=u.completion_tokens,
    )
    return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)


@pytest.mark.parametrize(("provider", "model"), MODELS)
def test_cached_rates_equal_genai_prices_across_tiers(provider: str, model: str) -> None:
    pricer = Pricer({}, {provider: provider})
    target = Target(provider, model, {})
    rng = random.Random(model)
    for _ in range(200):
        prompt = rng.choice([rng.randint(0, 4000), rng.randint(150_000, 400_000), 200_000, 200_001, 272_000, 272_001])
        cached = rng.randint(0, prompt)
        written = rng.randint(0, prompt - cached) if provider == "anthropic" else 0
        usage = Usage(prompt, rng.randint(0, 8000), cached, 0, written)
        cost = pricer.cost(target, usage)
        assert cost is not None
        assert cost.usd == pytest.approx(genai(provider, model, usage), rel=1e-12, abs=1e-15)


def test_known_prices_by_hand() -> None:
    pricer = Pricer({}, {"openai": "openai"})
    usage = Usage(prompt_tokens=1_000, completion_tokens=100, cached_tokens=400)
    # gpt-5.4-nano: $0.20 input, $0.02 cached input, $1.25 output per 1M tokens
    cost = pricer.cost(Target("openai", "gpt-5.4-nano", {}), usage)
    assert cost is not None and cost.usd == pytest.approx((600 * 0.20 + 400 * 0.02 + 100 * 1.25) / 1e6)
    # gpt-5.5 above its 272k tier: $10 input, $45 output
    big = pricer.cost(Target("openai", "gpt-5.5", {}), Usage(prompt_tokens=300_000, completion_tokens=1_000))
    assert big is not None and big.usd == pytest.approx((300_000 * 10 + 1_000 * 45) / 1e6)


def test_overrides_local_and_unknown_models(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tiergate.pricing")
    pricer = Pricer(
        {"house-7b": Price(input=1.0, output=2.0, cached_input=0.5), "openai::gpt-5.5": Price(input=0, output=0)},
        {"openai": "openai", "local": "local"},
    )
    usage = Usage(prompt_tokens=1_000, completion_tokens=500, cached_tokens=200)
    house = pricer.cost(Target("openai", "house-7b", {}), usage)
    assert house is not None and house.source == "override"
    assert house.usd == pytest.approx((800 * 1.0 + 200 * 0.5 + 500 * 2.0) / 1e6)
    free = pricer.cost(Target("openai", "gpt-5.5", {}), usage)
    assert free is not None and free.usd == 0.0 and free.source == "override"
    local = pricer.cost(Target("local", "proxy.handlers.ticket_labels:classify", {}), usage)
    assert local is not None and local.usd == 0.0
    assert pricer.cost(Target("openai", "gpt-nonexistent-9", {}), usage) is None
    assert pricer.cost(Target("openai", "gpt-nonexistent-9", {}), usage) is None
    assert caplog.text.count("no price known for openai::gpt-nonexistent-9") == 1  # warned once


@pytest.mark.parametrize(("provider", "model"), MODELS)
def test_calls_priced_from_their_sums_cost_what_they_cost_one_by_one(provider: str, model: str) -> None:
    """The what-if prices a run of calls from its token sums: exact within one price tier, as genai-prices
    prices each call (its tiers are cliffs on the prompt size, so the tier is the one thing to keep apart)."""
    pricer = Pricer({}, {provider: provider})
    target = Target(provider, model, {})
    starts = pricer.tier_starts(target)
    if model == "gpt-5.5":
        assert starts == (272_000,)  # its long-context tier
    rng = random.Random(f"sums {model}")
    for bounds in zip((0, *starts), (*starts, 1_000_000), strict=True):
        calls = []
        for _ in range(50):
            prompt = rng.randint(bounds[0] + 1, bounds[1])
            cached = rng.choice([0, rng.randint(0, prompt)])
            written = rng.randint(0, prompt - cached) if provider == "anthropic" else 0
            calls.append(Usage(prompt, rng.randint(0, 8000), cached, 0, written))
        tokens = Usage(
            prompt_tokens=sum(u.prompt_tokens for u in calls),
            completion_tokens=sum(u.completion_tokens for u in calls),
            cached_tokens=sum(u.cached_tokens for u in calls),
            cache_write_tokens=sum(u.cache_write_tokens for u in calls),
        )
        one_by_one = sum(genai(provider, model, u) for u in calls)
        summed = pricer.cost_of_calls(target, tokens, len(calls), calls[0].prompt_tokens)
        assert summed is not None and summed.usd == pytest.approx(one_by_one, rel=1e-12)


def test_overrides_and_local_handlers_are_one_line_at_every_size() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5, cache_write=2.5)
    pricer = Pricer({"acme-1": price}, {"openai": "openai", "local": "local"})
    for target in (Target("openai", "acme-1", {}), Target("local", "proxy.handlers.x:y", {})):
        assert pricer.tier_starts(target) == ()
        calls = [Usage(1000, 10, 300, 0, 200), Usage(900_000, 5, 0, 0, 0)]
        one_by_one = sum(c.usd for c in (pricer.cost(target, u) for u in calls) if c is not None)
        summed = pricer.cost_of_calls(target, Usage(901_000, 15, 300, 0, 200), 2, 0)
        assert summed is not None and summed.usd == pytest.approx(one_by_one, rel=1e-12)
    assert pricer.tier_starts(Target("openai", "no-such-model-7", {})) == ()
    assert pricer.cost_of_calls(Target("openai", "no-such-model-7", {}), Usage(1, 1), 1, 1) is None
