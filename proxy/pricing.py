"""What a call cost, and what it would have cost on another target.

Prices come from ``genai-prices`` (pydantic's bundled, offline price data; its remote update is
opt-in and never started here) unless rules.yaml's ``prices:`` section overrides a model. Cached input
tokens are charged at the cached rate and cache writes at the cache-write rate; reasoning tokens are
already part of ``completion_tokens`` and so are charged as output. An unknown model has no price: the
ledger stores NULL and one warning is logged per model, never a silent 0.

Pricing runs in the ledger writer, off the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from proxy.registry import Price, Registry, Target
from proxy.usage import Usage

log = logging.getLogger("tiergate.pricing")
_PER_MILLION = 1_000_000.0
LOCAL = "local"
try:
    from importlib.metadata import version

    GENAI_PRICES = f"genai-prices {version('genai-prices')}"
except Exception:  # noqa: BLE001 - a version string is a nicety, not a requirement
    GENAI_PRICES = "genai-prices"


@dataclass(frozen=True, slots=True)
class Cost:
    usd: float
    source: str  # "override" or "genai-prices <version>"


class Pricer:
    """Prices usage on a target. ``price_ids`` maps a registry provider name to genai-prices' provider id.

    ``calc_price`` costs ~0.1 ms of CPU per call, the largest item of a ledger row. A model's price is
    affine in the token counts within one tier (genai-prices' tiers are cliffs on total input
    tokens), so the rates are read from genai-prices once per (model, tier) and reused: same numbers,
    about a hundredth of the work.
    """

    def __init__(self, overrides: Mapping[str, Price], price_ids: Mapping[str, str | None]) -> None:
        self._overrides = overrides
        self._price_ids = price_ids
        self._warned: set[str] = set()
        self._rates: dict[tuple[str | None, str], _Rates | None] = {}
        # (provider, model) -> the first tier's float rates and where it ends, or None (no fast path)
        self._fast: dict[tuple[str, str], _Fast | None] = {}

    def cost(self, target: Target, usage: Usage) -> Cost | None:
        """The cost of ``usage`` on ``target``, or ``None`` when no price is known for its model."""
        found = self.usd(target, usage)
        return None if found is None else Cost(*found)

    def usd(self, target: Target, usage: Usage) -> tuple[float, str] | None:
        """``cost`` as (dollars, price source), without a ``Cost`` per call: what a ledger row stores.

        Every ledger row is priced twice (served and baseline): a call within its model's first price
        tier is five multiplications on rates read once (~0.5 µs instead of ~4 µs through the general
        path), the same numbers to within float rounding."""
        key = (target.provider, target.model)
        fast = self._fast.get(key, _UNSEEN)
        if fast is _UNSEEN:
            fast = self._fast[key] = self._compile(target)
        if fast is not None and usage.prompt_tokens <= fast.upto:
            return _affine(fast.rates, usage, 1), fast.source
        cost = self.cost_of_calls(target, usage, 1, usage.prompt_tokens)
        return None if cost is None else (cost.usd, cost.source)

    def _compile(self, target: Target) -> _Fast | None:
        """``target``'s first-tier rates as floats, for ``cost``; None when it has none (unknown model)."""
        override = self._override(target)
        if override is not None:
            return _Fast("override", (
                0.0, override.input / _PER_MILLION,
                (override.input if override.cached_input is None else override.cached_input) / _PER_MILLION,
                (override.input if override.cache_write is None else override.cache_write) / _PER_MILLION,
                override.output / _PER_MILLION,
            ), float("inf"))  # fmt: skip
        if self._price_ids.get(target.provider) == LOCAL:
            return _Fast(LOCAL, (0.0, 0.0, 0.0, 0.0, 0.0), float("inf"))
        rates = self._rates_of(target)
        if rates is None:
            return None
        try:
            const, uncached, read, write, out = (float(r) for r in rates.tier(0))
        except (LookupError, ValueError):
            return None
        upto = float(rates.thresholds[0]) if rates.thresholds else float("inf")
        return _Fast(GENAI_PRICES, (const, uncached, read, write, out), upto)

    def tier_starts(self, target: Target) -> tuple[int, ...]:
        """The prompt sizes past which ``target``'s per-token prices change (genai-prices' long-context
        tiers: a call is in the tier after ``start`` when its prompt has more tokens than ``start``);
        empty when one set of prices covers every size (overrides, local handlers, unknown models)."""
        if self._override(target) is not None or self._price_ids.get(target.provider) == LOCAL:
            return ()
        rates = self._rates_of(target)
        return () if rates is None else rates.thresholds

    def cost_of_calls(self, target: Target, tokens: Usage, calls: int, prompt_tokens: int) -> Cost | None:
        """The cost of ``calls`` calls on ``target`` whose token counts add up to ``tokens``, every one of
        them in the price tier of a call with ``prompt_tokens`` prompt tokens (see ``tier_starts``), and
        none whose own counts ``Usage`` would clamp. Within one tier a price is affine in the counts (a
        per-call part, then per-token rates), so this is the sum of ``cost`` over those calls, exactly:
        what lets the audit's what-if price a million calls from their sums. ``None`` when no price is
        known for the model."""
        override = self._override(target)
        if override is not None:
            return Cost(_override_cost(override, tokens), "override")
        if self._price_ids.get(target.provider) == LOCAL:
            return Cost(0.0, LOCAL)  # a local handler: no provider bills it
        rates = self._rates_of(target)
        try:
            if rates is None:
                raise LookupError(target.model)
            return Cost(float(rates.cost(tokens, calls, prompt_tokens)), GENAI_PRICES)
        except (LookupError, ValueError):  # unknown model; or usage genai-prices rejects
            if target.key not in self._warned:
                self._warned.add(target.key)
                log.warning(
                    "no price known for %s: its cost is recorded as NULL (add it under `prices:` in rules.yaml)",
                    target.key,
                )
            return None

    def _override(self, target: Target) -> Price | None:
        return self._overrides.get(target.key) or self._overrides.get(target.model)

    def _rates_of(self, target: Target) -> _Rates | None:
        price_id = self._price_ids.get(target.provider)
        key = (price_id, target.model)
        if key not in self._rates:
            self._rates[key] = _Rates.read(target.model, price_id)
        return self._rates[key]


@dataclass(frozen=True, slots=True)
class _Fast:
    """One model's first price tier as float rates (USD per token), up to ``upto`` prompt tokens."""

    source: str
    rates: tuple[float, float, float, float, float]  # as ``_Rates``': per request, uncached, read, write, out
    upto: float


_UNSEEN = _Fast("", (0.0, 0.0, 0.0, 0.0, 0.0), 0.0)  # a marker: not compiled yet
N = TypeVar("N", float, Decimal)


def _affine(rates: tuple[N, N, N, N, N], usage: Usage, calls: int) -> N:
    """``calls`` calls adding up to ``usage`` at ``rates`` (per request, uncached input, cache read, cache
    write, output; USD per token): within one price tier a price is affine in the counts."""
    const, uncached, read, write, out = rates
    prompt, cached, written = usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens
    return (
        const * calls
        + uncached * (prompt - cached - written)
        + read * cached
        + write * written
        + out * usage.completion_tokens
    )


def _calc(model: str, price_id: str | None, usage: Usage) -> Decimal:
    return calc_price(
        PriceUsage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.completion_tokens,
        ),
        model_ref=model,
        provider_id=price_id,
    ).total_price


class _Rates:
    """One model's genai-prices price as per-token rates, for each tier of total input tokens."""

    def __init__(self, model: str, price_id: str | None, thresholds: tuple[int, ...]) -> None:
        self._model = model
        self._price_id = price_id
        self.thresholds = thresholds
        # bucket -> (per-request constant, uncached input, cache read, cache write, output), USD per token
        self._buckets: dict[int, tuple[Decimal, Decimal, Decimal, Decimal, Decimal]] = {}

    @classmethod
    def read(cls, model: str, price_id: str | None) -> _Rates | None:
        try:
            found = calc_price(PriceUsage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=price_id)
        except (LookupError, ValueError):
            return None
        starts: set[int] = set()
        for value in vars(found.model_price).values():
            for tier in getattr(value, "tiers", ()) or ():
                starts.add(int(tier.start))
        return cls(model, price_id, tuple(sorted(starts)))

    def cost(self, usage: Usage, calls: int, tier_of: int) -> Decimal:
        """``calls`` calls adding up to ``usage``, each in the tier of a ``tier_of``-token prompt."""
        bucket = sum(1 for start in self.thresholds if tier_of > start)  # genai-prices: tier when input > start
        return _affine(self.tier(bucket), usage, calls)

    def tier(self, bucket: int) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """A tier's rates (0: the first): (per request, uncached input, cache read, cache write, output)."""
        rates = self._buckets.get(bucket)
        if rates is None:
            rates = self._buckets[bucket] = self._fit(bucket)
        return rates

    def _fit(self, bucket: int) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """Probe genai-prices at two input sizes inside ``bucket`` to read off each rate."""
        n = 1 if bucket == 0 else self.thresholds[bucket - 1] + 1
        p0 = _calc(self._model, self._price_id, Usage(prompt_tokens=n))
        p0_next = _calc(self._model, self._price_id, Usage(prompt_tokens=n + 1))
        uncached = p0_next - p0
        const = p0 - uncached * n
        read = (_calc(self._model, self._price_id, Usage(prompt_tokens=n, cached_tokens=n)) - const) / n
        write = (_calc(self._model, self._price_id, Usage(prompt_tokens=n, cache_write_tokens=n)) - const) / n
        out = (_calc(self._model, self._price_id, Usage(prompt_tokens=n, completion_tokens=n)) - p0) / n
        return const, uncached, read, write, out


def writes_output(model: str, price_id: str | None) -> bool:
    """Whether genai-prices knows ``model`` and prices its output tokens: a model that writes (chat,
    images), not an embedding model. ``False`` when it does not know the model (nothing to tell)."""
    try:
        found = calc_price(PriceUsage(input_tokens=1), model_ref=model, provider_id=price_id)
    except (LookupError, ValueError):
        return False
    return found.model_price.output_mtok is not None


def price_ids(registry: Registry) -> dict[str, str | None]:
    """genai-prices' provider id per registry provider (resolved when the registry was loaded)."""
    return {name: provider.price_id for name, provider in registry.providers.items()}


def warm_up() -> None:
    """Load genai-prices' data now (about 0.2 s of CPU) rather than in the first ledger batch."""
    calc_price(PriceUsage(input_tokens=1, output_tokens=1), model_ref="gpt-4o", provider_id="openai")


def _override_cost(price: Price, usage: Usage) -> float:
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    uncached = max(usage.prompt_tokens - cached - written, 0)
    total = (
        uncached * price.input
        + cached * (price.input if price.cached_input is None else price.cached_input)
        + written * (price.input if price.cache_write is None else price.cache_write)
        + usage.completion_tokens * price.output
    )
    return total / _PER_MILLION
