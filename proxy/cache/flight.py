"""Single flight: identical concurrent misses make one upstream call, the others wait for its answer."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flights(Generic[T]):
    """Per key, at most one leader; followers await the leader's result (``None`` if it produced none)."""

    def __init__(self) -> None:
        self._landing: dict[str, asyncio.Future[T | None]] = {}

    def follow(self, key: str) -> asyncio.Future[T | None] | None:
        """The leader's future for ``key``, or ``None`` when there is no flight: then the caller leads."""
        return self._landing.get(key)

    def lead(self, key: str) -> None:
        self._landing[key] = asyncio.get_running_loop().create_future()

    def land(self, key: str, result: T | None) -> None:
        """End ``key``'s flight (idempotent): its followers get ``result``."""
        future = self._landing.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)
