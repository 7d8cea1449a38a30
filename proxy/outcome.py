"""What dispatching one request did, and who may watch it happen.

Dispatch owns its account: every try is an ``Attempt`` (plain values) in the ``Outcome`` it returns,
which the edge turns into ledger rows, response headers and spans. An ``Observer`` is told about each
attempt while it happens, for what cannot wait for the account: a trace context to send upstream, a
span that starts when the try starts. It is defined here, in the core, so that dispatch never imports
the telemetry that implements it; no observer (``None``) costs one ``is None`` check per attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from proxy.errors import TiergateError
from proxy.providers.base import Call
from proxy.registry import Target
from proxy.router import Hop

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one target."""

    n: int  # 1, 2, ... in the order the tries were made
    ts: float  # epoch seconds when the try started
    tier: str
    target: Target
    status: int | None  # the HTTP status the upstream answered; None when it never did
    error: str | None  # the error's code (or type); None for a success
    latency_ms: float


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What dispatching one request did: its value or its error, and every attempt on the way."""

    value: T | None = None
    error: TiergateError | None = None
    attempts: list[Attempt] = field(default_factory=list)
    hop: Hop | None = None  # the hop that served, or the last one tried
    index: int = 0  # that hop's place in the route

    @property
    def fallback(self) -> bool:
        """Served by, or last failed on, a target other than the route's first (the one definition)."""
        return self.hop is not None and self.index > 0

    @property
    def upstream_ms(self) -> float | None:
        """Time spent in attempts, summed; None when no upstream was tried."""
        return sum(a.latency_ms for a in self.attempts) if self.attempts else None


class Observer(Protocol):
    """Watches one request's upstream attempts as they happen (telemetry's attempt spans)."""

    def attempt_started(self, hop: Hop, call: Call) -> Mapping[str, str]:
        """An attempt is about to be sent: the headers to add to its upstream request (trace context)."""
        ...

    def attempt_ended(self, attempt: Attempt) -> None:
        """The attempt that started last has ended, as dispatch accounts for it.

        A try cancelled midway (the client left) never ends here: the observer closes it itself.
        """
        ...
