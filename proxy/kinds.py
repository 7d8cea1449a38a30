"""What a tier serves, chat or embeddings, and the checks that keep each kind's tiers, tasks and targets apart.

A tier's ``kind`` (``proxy.registry``: ``chat``, the default, or ``embedding``) decides the endpoint its
tasks answer. ``proxy.rules`` calls these while it builds a registry; each check raises a ``ConfigError``
naming the dotted path: an embedding tier takes no prompt variant, cache, max-tokens cap or max_tokens
param (no messages to reword, no output); its targets need a provider type that serves embeddings and a
model that is not one genai-prices prices output for; ``default_task`` and ``classify:`` rules are chat's,
``default_embedding_task`` is an embedding task. ``mixed_embedding_models`` is ``tiergate check``'s
warning about an embedding tier whose vectors would not be comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.errors import ConfigError
from proxy.providers import PROVIDER_TYPES, provider_class
from proxy.registry import CHAT, EMBEDDING, KINDS, ProviderConfig, Registry, Target, Task, article

# What an embedding tier or task cannot have: there are no messages to reword, no output to cap or store.
_CHAT_ONLY_TIER_KEYS = ("prompt", "max_tokens_cap", "cache")
_CHAT_ONLY_TASK_KEYS = ("prompts", "max_tokens_cap", "cache")
_MAX_TOKENS_PARAMS = ("max_tokens", "max_completion_tokens")


def tier_kind(spec: Mapping[str, Any], path: str) -> str:
    """A tier's ``kind`` (default ``chat``); an embedding tier's spec holds nothing only chat has."""
    kind = spec.get("kind", CHAT)
    if kind not in KINDS:
        raise ConfigError(f"{path}.kind", f"{kind!r} is not a tier kind ({', '.join(KINDS)})")
    if kind == EMBEDDING:
        _refuse_chat_only(spec, path, _CHAT_ONLY_TIER_KEYS, "an embedding tier")
    return str(kind)


def check_task(spec: Mapping[str, Any], path: str, kind: str) -> None:
    """A task on an embedding tier holds nothing only chat has."""
    if kind == EMBEDDING:
        _refuse_chat_only(spec, path, _CHAT_ONLY_TASK_KEYS, "a task on an embedding tier")


def default_task(doc: Mapping[str, Any], tasks: Mapping[str, Task], kind: str, key: str) -> str | None:
    """``default_task`` (chat) or ``default_embedding_task``: as set, else the first task of ``kind``."""
    of_kind = [name for name, task in tasks.items() if task.kind == kind]
    if key not in doc:
        return of_kind[0] if of_kind else None
    name = doc[key]
    if not isinstance(name, str) or name not in tasks:
        raise ConfigError(key, f"{name!r} is not a defined task ({_listed(tasks)})")
    if tasks[name].kind != kind:
        runs = f"runs on {tasks[name].kind} tier {tasks[name].tier!r}"
        raise ConfigError(key, f"{name!r} {runs}; {key} needs a task on {article(kind)} tier ({_listed(of_kind)})")
    return name


def check_classify_tasks(node: Any, tasks: Mapping[str, Task]) -> None:
    """``classify:`` rules place untagged chat calls: a rule naming an embedding task is a mistake."""
    for i, item in enumerate(node if isinstance(node, list) else ()):
        name = item.get("task") if isinstance(item, dict) else None
        task = tasks.get(name) if isinstance(name, str) else None
        if task is not None and task.kind != CHAT:
            raise ConfigError(
                f"classify[{i}].task",
                f"{task.name!r} runs on {task.kind} tier {task.tier!r}; classify rules place untagged chat calls "
                "(an untagged embeddings call runs as default_embedding_task)",
            )


def _refuse_chat_only(spec: Mapping[str, Any], path: str, keys: tuple[str, ...], what: str) -> None:
    for key in keys:
        if key in spec:
            raise ConfigError(f"{path}.{key}", f"{what} takes no {key} (it serves embeddings: no messages, no output)")
    for key in _MAX_TOKENS_PARAMS:
        if key in (spec.get("params") or {}):
            raise ConfigError(f"{path}.params.{key}", f"{what} takes no {key} (an embedding has no output tokens)")


def check_target(node: Any, target: Target, path: str, provider: ProviderConfig, kind: str) -> None:
    """A target must serve its tier's kind: its provider type, and (when genai-prices knows it) its model."""
    adapter = provider_class(provider.type)
    if kind not in adapter.kinds:
        raise ConfigError(
            f"{path}.provider",
            f"{target.provider!r} is a provider of type {provider.type}, which serves no {kind} calls "
            f"(provider types that do: {', '.join(t for t in sorted(PROVIDER_TYPES) if kind in provider_class(t).kinds)})",
        )
    if kind != EMBEDDING:
        return
    if isinstance(node, dict):
        _refuse_chat_only(node, path, ("max_tokens_cap",), "a target of an embedding tier")
    from proxy import pricing  # genai-prices' data (~0.2 s to load) only for registries with embedding tiers

    if pricing.writes_output(target.model, provider.price_id):
        raise ConfigError(
            f"{path}.model",
            f"{target.model!r} is a model that writes output (genai-prices prices its output tokens), not an "
            "embedding model; an embedding tier needs embedding models (text-embedding-3-small, ...)",
        )


def mixed_embedding_models(registry: Registry) -> list[str]:
    """A warning per embedding tier whose targets (its own, then its fallback tiers') are not all one model:
    vectors of different models are not comparable, so a fallback would mix them in one index."""
    warnings = []
    for name, tier in registry.tiers.items():
        if tier.kind != EMBEDDING:
            continue
        models, current = [], tier
        while True:
            models += [t.model for t in current.targets if t.model not in models]
            if current.fallback_tier is None:
                break
            current = registry.tiers[current.fallback_tier]
        if len(models) > 1:
            warnings.append(
                f"tiers.{name}: its targets embed with different models ({', '.join(models)}): their vectors are "
                "not comparable, so a fallback would mix them in one index; fall back only to the same model "
                "(e.g. on another provider)"
            )
    return warnings


def _listed(names: Iterable[str]) -> str:
    named = ", ".join(names)
    return f"defined: {named}" if named else "none defined"
