"""Which task, tier and targets serve a request: a pure function over the registry.

Policy lives in rules.yaml; this module only reads it. Order of decisions:
1. task: the ``X-Task-Type`` header if it names a task; an unknown name is a 400 (a typo must not be
   silently served on the default tier); no header -> ``default_task`` (never a silent downgrade), or
   ``default_embedding_task`` for an embeddings call. A task runs on one endpoint, its tier's kind: a chat
   task sent to ``/v1/embeddings`` (or the other way round) is a 400 that names the right one.
2. tier: ``model`` = ``tier:<name>`` picks a tier directly; a model in the task's ``allow_models`` is
   honoured as-is (a user-facing model picker); anything else (``auto``, a legacy model name) -> the
   task's tier.
3. hops: the tier's targets in order, then each ``fallback_tier``'s, each with its policy (defaults <-
   global <- that hop's tier <- the task).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import InvalidRequest, UnknownTaskType
from proxy.policy import Policy, layered
from proxy.prompts import PromptVariant
from proxy.registry import CHAT, Registry, Target, Task, Tier, article

TIER_PREFIX = "tier:"


@dataclass(frozen=True, slots=True)
class Hop:
    """One target to try, with the tier it belongs to and the policy that governs trying it."""

    tier: str
    target: Target
    policy: Policy
    prompt: PromptVariant | None = None


@dataclass(frozen=True, slots=True)
class Route:
    task: Task
    task_source: str  # "header" | "rule:<name>" | "classifier" | "default"
    tier: Tier
    hops: tuple[Hop, ...]
    requested_model: str
    reason: str  # "task" | "tier_selector" | "allowed_model"

    @property
    def policy(self) -> Policy:
        """The policy of the route's own tier (its deadline bounds every hop)."""
        return self.hops[0].policy


class Router:
    """``resolve`` over one registry, with every (task, tier) plan of hops built once up front.

    Building a plan layers policies and picks prompt variants; doing it per request showed up in
    profiles. The plans are derived, immutable data: resolving stays a pure function of its inputs.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._plans = {
            (task.name, tier.name): _hops(tier, task, registry)
            for task in registry.tasks.values()
            for tier in registry.tiers.values()
        }

    def resolve(self, task_header: str | None, model: str, source: str = "header", kind: str = CHAT) -> Route:
        """Decide task, tier and ordered hops for one request. Raises ``InvalidRequest`` on bad selectors.

        ``task_header`` names the task (from the header, or as ``source`` says from a rule or the
        classifier); ``None`` is the registry's default task of ``kind`` (the endpoint's: chat or embedding).
        """
        registry = self.registry
        if task_header:
            task = registry.tasks.get(task_header.strip())
            if task is None:
                raise UnknownTaskType(
                    f"Unknown X-Task-Type {task_header!r}. Known task types: {', '.join(sorted(registry.tasks))}.",
                    param="X-Task-Type",
                )
            if task.kind != kind:
                raise InvalidRequest(
                    f"X-Task-Type {task.name!r} is a task of {task.kind} tier {task.tier!r}, served by "
                    f"{_endpoint(task.kind)}. Task types for {_endpoint(kind)}: "
                    f"{', '.join(registry.tasks_of(kind)) or 'none'}.",
                    param="X-Task-Type",
                    code="invalid_value",
                )
        else:
            default = registry.default_for(kind)
            if default is None:
                raise InvalidRequest(
                    f"No task in rules.yaml runs on {article(kind)} tier, so nothing can answer "
                    f"{_endpoint(kind)}: add a tier with `kind: {kind}` and a task on it.",
                    code="invalid_value",
                )
            task = registry.tasks[default]
            source = "default"

        if model.startswith(TIER_PREFIX):
            name = model[len(TIER_PREFIX) :]
            tier = registry.tiers.get(name)
            if tier is None:
                raise InvalidRequest(
                    f"Unknown tier {name!r} in model {model!r}. Known tiers: {', '.join(registry.tiers)}.",
                    param="model",
                    code="model_not_found",
                )
            if tier.kind != kind:
                raise InvalidRequest(
                    f"Tier {name!r} in model {model!r} is {article(tier.kind)} tier, served by {_endpoint(tier.kind)}.",
                    param="model",
                    code="model_not_found",
                )
            return Route(task, source, tier, self._plans[task.name, tier.name], model, "tier_selector")

        if model in task.allow_models:
            found = registry.find_target(model)
            if found is not None:
                tier, target = found
            else:
                provider, _, name = model.partition("::")
                tier, target = registry.tiers[task.tier], Target(provider, name, {})
            hop = Hop(tier.name, target, layered(registry.policy, tier.policy, task.policy), _prompt(tier, task))
            return Route(task, source, tier, (hop,), model, "allowed_model")

        tier = registry.tiers[task.tier]
        return Route(task, source, tier, self._plans[task.name, tier.name], model, "task")


def _endpoint(kind: str) -> str:
    return "POST /v1/chat/completions (or /v1/responses)" if kind == CHAT else "POST /v1/embeddings"


def resolve(task_header: str | None, model: str, registry: Registry) -> Route:
    """``Router(registry).resolve(...)``, for one-off use (the app keeps one ``Router``)."""
    return Router(registry).resolve(task_header, model)


def _hops(tier: Tier, task: Task, registry: Registry) -> tuple[Hop, ...]:
    hops: list[Hop] = []
    current: Tier | None = tier
    while current is not None:  # the registry guarantees fallback tiers form no cycle
        policy = layered(registry.policy, current.policy, task.policy)
        prompt = _prompt(current, task)
        hops.extend(Hop(current.name, target, policy, prompt) for target in current.targets)
        current = registry.tiers[current.fallback_tier] if current.fallback_tier else None
    return tuple(hops)


def _prompt(tier: Tier, task: Task) -> PromptVariant | None:
    return task.prompts.get(tier.name) or tier.prompt
