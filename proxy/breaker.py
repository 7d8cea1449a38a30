"""Circuit breakers, one per target (``provider::model``), shared by all requests of a process.

closed --N consecutive failures--> open --cooldown--> half-open (one probe) --ok--> closed
                                     ^                        |
                                     +-------failure----------+

While open a target is skipped, so a dead provider costs one timeout per cooldown instead of one
per request. The dispatcher still tries the target whose cooldown ends first when every target is
open, so an outage of everything never turns into instant failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until: float | None = None  # None: closed
    probing: bool = False


class Breakers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}

    def allow(self, key: str) -> bool:
        """Whether a request may try ``key`` now; claims the single half-open probe if due."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return True
        if self._clock() < state.open_until or state.probing:
            return False
        state.probing = True
        return True

    def reopens_in(self, key: str) -> float:
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return 0.0
        return max(state.open_until - self._clock(), 0.0)

    def success(self, key: str) -> None:
        self._states.pop(key, None)

    def failure(self, key: str, threshold: int, cooldown: float) -> None:
        state = self._states.setdefault(key, _State())
        state.failures += 1
        if state.probing or state.failures >= threshold:
            state.open_until = self._clock() + cooldown
        state.probing = False

    def release(self, key: str) -> None:
        """Give back a half-open probe that ended without a verdict (e.g. the client left)."""
        state = self._states.get(key)
        if state is not None:
            state.probing = False
