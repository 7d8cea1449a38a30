"""Run a routed request against its targets.

The router decided *which* targets, in order; this module decides *how*: it rewrites the body for each
target and calls that target's provider. Retries, fallbacks and circuit breakers (the reliability issue)
hang off this loop; for now the first target serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy import rewrite
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.registry import Target
from proxy.router import Route


@dataclass(frozen=True, slots=True)
class Served:
    """Which target answered, and the call that was sent to it."""

    target: Target
    call: Call


class Dispatcher:
    def __init__(self, providers: Mapping[str, Provider], *, read_timeout: float | None = None) -> None:
        self._providers = providers
        self._read_timeout = read_timeout

    async def complete(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[Served, Completion]:
        served = self._prepare(route, body, headers)
        completion = await self._providers[served.target.provider].complete(served.call)
        return served, completion

    async def stream(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[Served, ChunkStream]:
        served = self._prepare(route, body, headers)
        chunks = await self._providers[served.target.provider].stream(served.call)
        return served, chunks

    def _prepare(self, route: Route, body: dict[str, Any], headers: Mapping[str, str]) -> Served:
        target = route.targets[0]
        call = Call(
            target=target,
            body=rewrite.for_target(body, route.task, target),
            headers=headers,
            read_timeout=self._read_timeout,
        )
        return Served(target, call)
