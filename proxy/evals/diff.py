"""Which tasks a registry change touches: the tasks whose calls would run differently.

A task changed when what its calls resolve to differs between two registries: its tier, the ordered
targets (provider, model, params, max-tokens caps, handlers) of the tier and its fallback tiers, the
prompt variant of each, the task's own params and caps, the reliability policy, or the configuration of
a provider those targets use (type, endpoint, options; never its key). A task only the candidate has is
changed too (it needs its eval before it ships); a task the candidate drops is not (nothing runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.registry import Registry
from proxy.router import Hop, Router


@dataclass(frozen=True)
class Change:
    task: str
    what: tuple[str, ...]  # short phrases: "tier small -> mid", "targets", "params", ...

    def describe(self) -> str:
        return f"{self.task}: {', '.join(self.what)}"


def changed_tasks(current: Registry, candidate: Registry) -> list[Change]:
    """The tasks of ``candidate`` that would run differently than under ``current``, in registry order."""
    now, then = Router(current), Router(candidate)
    changes = []
    for name in candidate.tasks:
        what = ("new task",) if name not in current.tasks else differences(current, candidate, name, now, then)
        if what:
            changes.append(Change(name, what))
    return changes


def same_route(a: Registry, b: Registry, task: str) -> bool:
    """Whether ``task``'s calls run alike under ``a`` and ``b`` (a description is not a difference)."""
    return not differences(a, b, task)


def differences(
    current: Registry, candidate: Registry, task: str, now: Router | None = None, then: Router | None = None
) -> tuple[str, ...]:
    """What differs in how ``task``'s calls run (both registries define it); empty when nothing does."""
    before, after = current.tasks[task], candidate.tasks[task]
    old_hops = (now or Router(current)).resolve(task, "auto", kind=before.kind).hops
    new_hops = (then or Router(candidate)).resolve(task, "auto", kind=after.kind).hops
    what: list[str] = []
    if before.tier != after.tier:
        what.append(f"tier {before.tier} -> {after.tier}")
    if [_target(h, current) for h in old_hops] != [_target(h, candidate) for h in new_hops]:
        what.append("targets")
    if [h.prompt for h in old_hops] != [h.prompt for h in new_hops]:
        what.append("prompt variant")
    if [h.policy for h in old_hops] != [h.policy for h in new_hops]:
        what.append("policy")
    if (before.params, before.max_tokens_cap) != (after.params, after.max_tokens_cap):
        what.append("task params")
    return tuple(what)


def _target(hop: Hop, registry: Registry) -> tuple[Any, ...]:
    target = hop.target
    provider = registry.providers.get(target.provider)
    where = None if provider is None else (provider.type, provider.base_url, dict(provider.options))
    return (hop.tier, target.provider, target.model, dict(target.params), target.max_tokens_cap, target.handler, where)
