"""The registry: the whole routing policy as frozen values (providers, tiers, tasks, prices, policy).

Providers say where calls go, tiers hold ordered targets (the order is the fallback order), tasks say
which tier each task type runs on. A tier has a ``kind``: ``chat`` (``POST /v1/chat/completions``, the
default) or ``embedding`` (``POST /v1/embeddings``); its tasks, targets and fallback tiers are of that
kind too. ``proxy.rules`` builds one from rules.yaml; everything else only
reads it. This module depends on nothing of tiergate's but prompt variants, so adapters, the router
and the ledger can all use these types without depending on each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proxy.prompts import PromptVariant

# What a tier's models do, and so which endpoint its tasks answer: chat completions or embeddings.
CHAT = "chat"
EMBEDDING = "embedding"
KINDS = (CHAT, EMBEDDING)


def article(kind: str) -> str:
    """A kind with its article, for messages: "a chat", "an embedding"."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


@dataclass(frozen=True)
class ProviderConfig:
    """Where calls go: a provider type (adapter) plus its endpoint and credentials."""

    name: str
    type: str
    base_url: str
    api_key: str = field(repr=False)  # never printed: repr, logs and errors leave it out
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # genai-prices' provider id: ``options.price_provider``, else the adapter type's default (resolved at load).
    price_id: str | None = None


@dataclass(frozen=True)
class Target:
    """One model on one provider, with the body defaults that go with it."""

    provider: str
    model: str
    params: Mapping[str, Any]
    max_tokens_cap: int | None = None
    handler: str | None = None  # local targets: "package.module:function"

    @property
    def key(self) -> str:
        """``provider::model``, the target's name in logs and headers."""
        return f"{self.provider}::{self.model}"


@dataclass(frozen=True)
class CachePolicy:
    """``cache:`` on a tier or a task (the task's wins): exact answers kept ``ttl_s`` seconds."""

    ttl_s: float
    # Answers to requests with temperature > 0 or n > 1 vary: kept only when this says so.
    nondeterministic: bool = False


@dataclass(frozen=True)
class Tier:
    name: str
    targets: tuple[Target, ...]
    description: str = ""
    fallback_tier: str | None = None  # where to continue when every target of this tier failed
    policy: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # a policy layer
    prompt: PromptVariant | None = None
    cache: CachePolicy | None = None
    kind: str = CHAT  # CHAT or EMBEDDING: what its targets serve


@dataclass(frozen=True)
class Task:
    name: str
    tier: str
    baseline: str
    params: Mapping[str, Any]
    max_tokens_cap: int | None = None
    allow_models: tuple[str, ...] = ()
    description: str = ""
    policy: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # a policy layer
    # Per-tier prompt variants for this task; they beat the tier's own.
    prompts: Mapping[str, PromptVariant] = field(default_factory=lambda: MappingProxyType({}))
    cache: CachePolicy | None = None  # beats the tier's
    kind: str = CHAT  # its tier's kind: the endpoint it answers


@dataclass(frozen=True)
class Price:
    """A per-model price override, USD per 1M tokens; it wins over genai-prices."""

    input: float
    output: float
    cached_input: float | None = None  # default: the input price
    cache_write: float | None = None  # default: the input price


@dataclass(frozen=True)
class Condition:
    """A test over one request (``proxy.classify.conditions`` evaluates it), or ``all``/``any``/``not`` of others.

    ``kind`` names the test: ``system``, ``last_user``, ``any_message`` (``pattern`` over that text),
    ``tools`` (``present``, and ``values`` as tool names of which one must be offered), ``response_format``
    (``values``: accepted types), ``max_tokens`` / ``messages`` (the ``low``..``high`` range, inclusive),
    ``metadata`` / ``header`` (``pattern`` over the value of ``key``), ``all`` / ``any`` / ``not``
    (``children``), ``always``.
    """

    kind: str
    pattern: re.Pattern[str] | None = None
    key: str | None = None
    values: tuple[str, ...] = ()
    present: bool | None = None
    low: int | None = None
    high: int | None = None
    children: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class ClassifyRule:
    """``classify:`` in rules.yaml: the first rule whose condition holds decides an untagged call's task."""

    name: str
    task: str
    when: Condition


@dataclass(frozen=True)
class ClassifierSettings:
    """``classifier:`` in rules.yaml: the model learned from tagged traffic, and when it may decide."""

    model: str  # path of the trained model file (``tiergate classifier train --out``)
    min_confidence: float = 0.7  # below it the classifier abstains and the default task applies
    capture_text: bool = False  # also keep the raw system prompt and last user message in the ledger


@dataclass(frozen=True)
class LedgerPolicy:
    """``ledger:`` in rules.yaml: how long the ledger keeps its rows."""

    # None: forever. Else every whole UTC day older than this many days is rolled up into ``daily`` (its
    # totals per task, tier, provider and model) and its rows deleted, by the serving process.
    retain_days: int | None = None


@dataclass(frozen=True)
class Registry:
    default_task: str
    providers: Mapping[str, ProviderConfig]
    tiers: Mapping[str, Tier]
    tasks: Mapping[str, Task]
    source: str = "<memory>"
    # Keyed by model name or provider::model.
    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    policy: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # the global layer
    # sha256 of what the registry was built from (rules.yaml's text, else the document's canonical JSON):
    # an eval run records it, so a verdict names the exact registry it was reached under.
    content_hash: str = ""
    classify: tuple[ClassifyRule, ...] = ()  # in order: the first that matches wins
    classifier: ClassifierSettings | None = None
    ledger: LedgerPolicy = field(default_factory=LedgerPolicy)
    # The task of an untagged embeddings call; None when no tier serves embeddings.
    default_embedding_task: str | None = None

    def default_for(self, kind: str) -> str | None:
        """The task an untagged call of ``kind`` runs as."""
        return self.default_task if kind == CHAT else self.default_embedding_task

    def tasks_of(self, kind: str) -> list[str]:
        """The names of the tasks of ``kind``, in the file's order."""
        return [name for name, task in self.tasks.items() if task.kind == kind]

    def find_target(self, model: str) -> tuple[Tier, Target] | None:
        """The first tier and target that run ``model`` (plain name or ``provider::model``)."""
        for tier in self.tiers.values():
            for target in tier.targets:
                if model in (target.model, target.key):
                    return tier, target
        return None
