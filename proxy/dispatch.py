"""Run a routed request against its targets.

The router decided *which* targets, in order; this module decides *how*: it rewrites the body for each
target, calls that target's provider, and notes each attempt on the request's ledger record. Retries,
fallbacks and circuit breakers (the reliability issue) hang off this loop; for now the first target
serves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy import rewrite
from proxy.errors import TiergateError
from proxy.ledger.records import AttemptRecord, RequestRecord, utc_now
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.router import Route


class Dispatcher:
    def __init__(self, providers: Mapping[str, Provider], *, read_timeout: float | None = None) -> None:
        self._providers = providers
        self._read_timeout = read_timeout

    async def complete(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str], record: RequestRecord
    ) -> Completion:
        call = self._prepare(route, body, headers, record)
        started = time.perf_counter()
        try:
            completion = await self._providers[call.target.provider].complete(call)
        except TiergateError as exc:
            self._attempt(record, route, call, started, exc.status, exc.code or exc.type)
            raise
        self._attempt(record, route, call, started, 200, None)
        return completion

    async def stream(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str], record: RequestRecord
    ) -> ChunkStream:
        call = self._prepare(route, body, headers, record)
        started = time.perf_counter()
        try:
            chunks = await self._providers[call.target.provider].stream(call)
        except TiergateError as exc:
            self._attempt(record, route, call, started, exc.status, exc.code or exc.type)
            raise
        self._attempt(record, route, call, started, 200, None)
        return chunks

    def _prepare(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str], record: RequestRecord
    ) -> Call:
        target = route.targets[0]
        record.target = target
        return Call(
            target=target,
            body=rewrite.for_target(body, route.task, target),
            headers=headers,
            read_timeout=self._read_timeout,
        )

    @staticmethod
    def _attempt(
        record: RequestRecord, route: Route, call: Call, started: float, status: int | None, error: str | None
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        record.upstream_ms = (record.upstream_ms or 0.0) + elapsed
        record.attempts.append(
            AttemptRecord(len(record.attempts) + 1, utc_now(), route.tier.name, call.target, status, error, elapsed)
        )
