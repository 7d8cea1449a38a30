"""Circuit breakers, one per target (``provider::model``), shared by all requests of a process.

closed --N consecutive failures--> open --cooldown--> half-open (one probe) --ok--> closed
                                     ^                        |
                                     +-------failure----------+

While open a target is skipped, so a dead provider costs one timeout per cooldown instead of one
per request. The dispatcher still tries the target whose cooldown ends first when every target is
open, so an outage of everything never turns into instant failures.

Trying a target takes a ``Permit`` and every permit is settled exactly once (ok, failed, or no
verdict). The half-open probe belongs to the permit that claimed it: only that permit's settlement
releases it, so a request that never owned the probe cannot free it for a second one.
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


@dataclass(slots=True)
class Permit:
    """Leave to try one target once; ``probe`` when it holds the half-open probe."""

    key: str
    probe: bool = False
    settled: bool = False


class Breakers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}

    def acquire(self, key: str) -> Permit | None:
        """A permit to try ``key`` now, or ``None`` while its breaker is open (or its probe is out)."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return Permit(key)
        if self._clock() < state.open_until or state.probing:
            return None
        state.probing = True
        return Permit(key, probe=True)

    def force(self, key: str) -> Permit:
        """A permit whatever the breaker says: every target is open and this one reopens first."""
        return Permit(key)

    def reopens_in(self, key: str) -> float:
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return 0.0
        return max(state.open_until - self._clock(), 0.0)

    def state(self, key: str) -> str:
        """``closed``, ``open`` (skipped), or ``half_open`` (the cooldown is over: the next try is the probe)."""
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return "closed"
        return "half_open" if state.probing or self._clock() >= state.open_until else "open"

    def succeeded(self, permit: Permit) -> None:
        if self._settle(permit):
            self._states.pop(permit.key, None)

    def failed(self, permit: Permit, threshold: int, cooldown: float) -> None:
        if not self._settle(permit):
            return
        state = self._states.setdefault(permit.key, _State())
        state.failures += 1
        if permit.probe or state.failures >= threshold:
            state.open_until = self._clock() + cooldown
        if permit.probe:
            state.probing = False

    def release(self, permit: Permit) -> None:
        """Settle a permit without a verdict (the client left, a client error, a bug)."""
        if self._settle(permit) and permit.probe:
            state = self._states.get(permit.key)
            if state is not None:
                state.probing = False

    @staticmethod
    def _settle(permit: Permit) -> bool:
        # Settling twice would count one try twice, or free a probe claimed by somebody else since.
        if permit.settled:
            return False
        permit.settled = True
        return True
