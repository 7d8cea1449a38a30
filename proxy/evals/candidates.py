"""Candidates are registries: the registry under test for one task, made from the current one.

``with_tier``: the task moved to another tier (``--tier``). ``with_model``: the task moved to a synthetic
one-target tier for one model (``--model provider::model``). Each candidate gets its own content hash
(the base's, plus the change), so an eval run names the exact registry it tested.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from types import MappingProxyType

from proxy.providers import provider_class
from proxy.registry import Registry, Target, Task, Tier

MODEL_TIER_PREFIX = "model:"  # the synthetic tier of ``--model openai::gpt-x`` is ``model:openai::gpt-x``


class CandidateError(ValueError):
    """A ``--tier``/``--model`` that names nothing runnable: one line for the CLI, exit code 2."""


def with_tier(registry: Registry, task: str, tier: str) -> Registry:
    """``registry`` with ``task`` running on ``tier``."""
    if tier not in registry.tiers:
        raise CandidateError(
            f"--tier: {tier!r} is not a tier of {registry.source} (tiers: {', '.join(registry.tiers)})"
        )
    spec = _task(registry, task)
    if spec.tier == tier:
        return registry
    return _derived(registry, task, tier, f"tasks.{task}.tier={tier}")


def with_model(registry: Registry, task: str, model: str) -> Registry:
    """``registry`` plus a one-target tier for ``model`` (``provider::model``), with ``task`` running on it.

    A model that already is a target of some tier keeps that target's params and cap; another runs bare
    (the task's params still apply). The synthetic tier has no fallback: the model is tested alone.
    """
    _task(registry, task)
    provider, sep, name = model.partition("::")
    if not sep or not provider or not name:
        raise CandidateError(f"--model: expected provider::model (e.g. openai::gpt-5.4-nano), got {model!r}")
    if provider not in registry.providers:
        raise CandidateError(
            f"--model: {provider!r} is not a provider of {registry.source} (providers: {', '.join(registry.providers)})"
        )
    found = registry.find_target(model)
    if found is not None:
        target = found[1]
    elif provider_class(registry.providers[provider].type).runs_handlers:
        raise CandidateError(f"--model: {model!r}: a target on a local provider needs a handler; name its tier")
    else:
        target = Target(provider, name, MappingProxyType({}))
    tier = Tier(name=MODEL_TIER_PREFIX + target.key, targets=(target,), description=f"{target.key} alone (eval)")
    widened = replace(registry, tiers=MappingProxyType({**registry.tiers, tier.name: tier}))
    return _derived(widened, task, tier.name, f"tiers.{tier.name}={target.key}")


def _task(registry: Registry, task: str) -> Task:
    spec = registry.tasks.get(task)
    if spec is None:
        raise CandidateError(f"{task!r} is not a task of {registry.source} (tasks: {', '.join(registry.tasks)})")
    return spec


def _derived(registry: Registry, task: str, tier: str, change: str) -> Registry:
    moved = replace(registry.tasks[task], tier=tier)
    digest = hashlib.sha256(f"{registry.content_hash}\n{change}".encode()).hexdigest()
    return replace(
        registry,
        tasks=MappingProxyType({**registry.tasks, task: moved}),
        source=f"{registry.source} ({change})",
        content_hash=digest,
    )
