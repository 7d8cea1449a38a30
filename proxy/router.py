"""Which task, tier and targets serve a request: a pure function over the registry.

Policy lives in rules.yaml; this module only reads it. Order of decisions:
1. task: the ``X-Task-Type`` header if it names a task; an unknown name is a 400 (a typo must not be
   silently served on the default tier); no header -> ``default_task`` (never a silent downgrade).
2. tier: ``model`` = ``tier:<name>`` picks a tier directly; a model in the task's ``allow_models`` is
   honoured as-is (a user-facing model picker); anything else (``auto``, a legacy model name) -> the
   task's tier.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import InvalidRequest, UnknownTaskType
from proxy.registry import Registry, Target, Task, Tier

TIER_PREFIX = "tier:"


@dataclass(frozen=True, slots=True)
class Route:
    task: Task
    task_source: str  # "header" | "default"
    tier: Tier
    targets: tuple[Target, ...]
    requested_model: str
    reason: str  # "task" | "tier_selector" | "allowed_model"


def resolve(task_header: str | None, model: str, registry: Registry) -> Route:
    """Decide task, tier and ordered targets for one request. Raises ``InvalidRequest`` on bad selectors."""
    if task_header:
        task = registry.tasks.get(task_header.strip())
        if task is None:
            raise UnknownTaskType(
                f"Unknown X-Task-Type {task_header!r}. Known task types: {', '.join(sorted(registry.tasks))}.",
                param="X-Task-Type",
            )
        source = "header"
    else:
        task = registry.tasks[registry.default_task]
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
        return Route(task, source, tier, tier.targets, model, "tier_selector")

    if model in task.allow_models:
        found = registry.find_target(model)
        if found is not None:
            tier, target = found
            return Route(task, source, tier, (target,), model, "allowed_model")
        provider, _, name = model.partition("::")
        tier = registry.tiers[task.tier]
        return Route(task, source, tier, (Target(provider, name, {}),), model, "allowed_model")

    tier = registry.tiers[task.tier]
    return Route(task, source, tier, tier.targets, model, "task")
