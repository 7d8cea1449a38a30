"""Run a routed request against its hops: retries, backoff, timeouts, breakers, fallback.

The router decided *which* targets, in order (the tier's, then its ``fallback_tier``'s); this module
decides *how*:

- each hop is tried ``1 + retries`` times while the failure is retryable (connect error, timeout,
  408/409/429/5xx/529, a body that is not the wire format), with exponential backoff and jitter, or
  the upstream's ``retry-after`` when it asks for less than ``retry_after_cap_s`` (longer: move on);
- a non-retryable answer (400, 401, 403, 404, 422) returns at once, except a context-length 400 on a
  hop whose policy has ``context_fallback``, which moves on to the next target;
- ``first_byte_s`` bounds the wait for a response (for a stream: its first chunk, so failover stays
  invisible to the client until a byte has reached it), ``idle_s`` any silence after that, and
  ``deadline_s`` all attempts together;
- targets whose breaker is open are skipped; if all are, the one that reopens first is tried anyway.

Dispatch owns its account of what happened: every try is an ``Attempt`` (plain values) in the
``Outcome`` it returns (``proxy.outcome``), which the edge turns into ledger rows. An ``Outcome`` carries
the value (a completion or an open stream) or the error the client gets, with the headers the SDKs act
on. An optional ``Observer`` is told about each attempt as it starts and ends (telemetry's spans, the
trace context sent upstream).

``complete`` and ``stream`` run a chat call, ``embed`` an embeddings call (its body goes through the same
``rewrite.for_target``: the model replaced, the registry's params applied; an embedding tier has no prompt
variant or max-tokens cap to apply); ``run`` runs any operation over a route (the Responses API's
``proxy.responses.operation``): ``prepare`` writes the body each hop is sent, ``once`` makes one try.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from proxy import rewrite
from proxy.breaker import Breakers, Permit
from proxy.errors import (
    TiergateError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.outcome import Attempt, Observer, Outcome
from proxy.policy import Policy
from proxy.prompts import PromptVariant
from proxy.providers.base import Call, Chunk, ChunkStream, Completion, Provider
from proxy.registry import Target, Task
from proxy.router import Hop, Route

T = TypeVar("T")
# The body one hop is sent, from the client's: ``rewrite.for_target`` for chat. Raising a TiergateError
# says the body cannot go to that target (a field it cannot honour).
Prepare = Callable[[dict[str, Any], Task, Target, PromptVariant | None], dict[str, Any]]
# The openai SDK gives up at once on a retry-after above 120 s; never pass on more.
_CLIENT_RETRY_AFTER_CAP_S = 120.0


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        breakers: Breakers,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # ``sleep`` (backoff waits) and ``clock`` (deadlines) are seams: tests drive time through them.
        self._providers = providers
        self._breakers = breakers
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    async def complete(
        self,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        observer: Observer | None = None,
    ) -> Outcome[Completion]:
        """Run a non-streaming request; the outcome holds the completion or the client's error."""

        async def once(call: Call) -> Completion:
            return await self._providers[call.target.provider].complete(call)

        return await self.run(route, body, headers, once, observer)

    async def embed(
        self,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        observer: Observer | None = None,
    ) -> Outcome[Completion]:
        """Run an embeddings request; the outcome holds the embedding list or the client's error."""

        async def once(call: Call) -> Completion:
            return await self._providers[call.target.provider].embed(call)

        return await self.run(route, body, headers, once, observer)

    async def stream(
        self,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        observer: Observer | None = None,
    ) -> Outcome[ChunkStream]:
        """Open a stream whose first chunk has arrived; the outcome holds it or the client's error."""
        return await self.run(route, body, headers, self._open_stream, observer)

    async def _open_stream(self, call: Call) -> ChunkStream:
        return await primed(await self._providers[call.target.provider].stream(call))

    async def run(
        self,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        once: Callable[[Call], Awaitable[T]],
        observer: Observer | None = None,
        *,
        prepare: Prepare = rewrite.for_target,
    ) -> Outcome[T]:
        """Run one operation over ``route``'s hops: ``prepare`` writes each hop's body from ``body``,
        ``once`` makes one try of it (a stream's ``once`` should return it ``primed``)."""
        outcome: Outcome[T] = Outcome()
        run = _Run(self._clock() + route.policy.deadline_s, observer)
        try:
            outcome.value = await self._hops(run, route, body, headers, outcome, once, prepare)
        except TiergateError as exc:
            outcome.error = self._final(exc, outcome)
        return outcome

    async def _hops(
        self,
        run: _Run,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        outcome: Outcome[T],
        once: Callable[[Call], Awaitable[T]],
        prepare: Prepare,
    ) -> T:
        tried = False
        for index, hop in enumerate(route.hops):
            # A breaker is asked only when its hop is about to be tried: asking may claim the single
            # half-open probe, which must not be claimed by a request that never uses it.
            permit = self._breakers.acquire(hop.target.key)
            if permit is None:
                continue
            tried = True
            result = await self._try_hop(run, index, hop, permit, route, body, headers, outcome, once, prepare)
            if result is not _NEXT:
                return result  # type: ignore[return-value]
        if not tried:
            # Every breaker is open: try the target that reopens first rather than fail untried.
            index = min(range(len(route.hops)), key=lambda k: self._breakers.reopens_in(route.hops[k].target.key))
            hop = route.hops[index]
            permit = self._breakers.force(hop.target.key)
            result = await self._try_hop(run, index, hop, permit, route, body, headers, outcome, once, prepare)
            if result is not _NEXT:
                return result  # type: ignore[return-value]
        raise run.verdict()

    async def _try_hop(
        self,
        run: _Run,
        index: int,
        hop: Hop,
        permit: Permit,
        route: Route,
        body: dict[str, Any],
        headers: Mapping[str, str],
        outcome: Outcome[T],
        once: Callable[[Call], Awaitable[T]],
        prepare: Prepare,
    ) -> T | object:
        """Try one hop up to 1 + retries times: its result, or ``_NEXT`` to move on; raises the final error.

        Whatever happens in here (a rewrite that raises, a deadline, the client leaving), the permit
        in hand is settled on the way out.
        """
        outcome.hop, outcome.index = hop, index
        policy = hop.policy
        current: Permit | None = permit
        try:
            try:
                prepared = prepare(body, route.task, hop.target, hop.prompt)
            except TiergateError as exc:
                # Nothing was sent: the body cannot go to this target (a field it cannot honour). What an
                # earlier target answered, if any, says more (as for an adapter that refuses a body).
                raise run.verdict(exc) from None
            call = Call(
                target=hop.target,
                body=prepared,
                headers=headers,
                # The socket may stay silent until the first byte is due; after it, idle_s applies
                # (enforced per read by the upstream response).
                read_timeout=max(policy.first_byte_s, policy.idle_s),
                idle_timeout=policy.idle_s,
                connect_timeout=policy.connect_s,
            )
            for n in range(policy.retries + 1):
                if current is None:
                    current = self._breakers.acquire(hop.target.key)
                    if current is None:
                        return _NEXT  # opened by other requests' failures meanwhile
                remaining = run.deadline - self._clock()
                if remaining <= 0:
                    raise run.verdict()
                result, error = await self._try_once(call, hop, current, remaining, outcome, run, once)
                current = None  # settled by _try_once
                if error is None:
                    return result
                if _context_overflow(error) and policy.context_fallback:
                    return _NEXT  # a bigger context on the next target may fit
                if not error.retryable:
                    raise error
                if not error.retry_same_target or n == policy.retries:
                    return _NEXT
                delay = self._delay(error, n, policy)
                if delay is None or self._clock() + delay >= run.deadline:
                    return _NEXT  # the upstream wants a longer pause than we may wait: next target
                await self._sleep(delay)
            return _NEXT
        finally:
            if current is not None:
                self._breakers.release(current)

    async def _try_once(
        self,
        call: Call,
        hop: Hop,
        permit: Permit,
        remaining: float,
        outcome: Outcome[Any],
        run: _Run,
        once: Callable[[Call], Awaitable[T]],
    ) -> tuple[T | None, UpstreamError | None]:
        """One try: ``(result, None)`` or ``(None, error)`` for an upstream failure; settles ``permit``."""
        policy = hop.policy
        observer = run.observer
        if observer is not None:
            call = replace(call, headers={**call.headers, **observer.attempt_started(hop, call)})
        started_at, started = time.time(), time.perf_counter()
        try:
            try:
                async with asyncio.timeout(min(policy.first_byte_s, remaining)):
                    result = await once(call)
            except TimeoutError:
                raise UpstreamTimeout("The upstream provider did not answer in time.") from None
        except UpstreamError as exc:
            # A client mistake (400, 404) or a handler's decline says nothing about the target's health.
            if exc.counts_against_target and exc.retryable:
                self._breakers.failed(permit, policy.breaker_failures, policy.breaker_cooldown_s)
            else:
                self._breakers.release(permit)
            _note(outcome, hop, started_at, started, exc, observer)
            run.failed(exc)
            return None, exc
        except TiergateError as exc:  # not the upstream's fault (e.g. a body the adapter refuses): no retry
            self._breakers.release(permit)
            _note(outcome, hop, started_at, started, exc, observer)
            raise run.verdict(exc) from None
        except BaseException:
            self._breakers.release(permit)  # cancelled (the client left) or a bug: no verdict on the target
            raise
        self._breakers.succeeded(permit)
        _note(outcome, hop, started_at, started, None, observer)
        return result, None

    def _delay(self, error: TiergateError, n: int, policy: Policy) -> float | None:
        asked = retry_after(error.headers)
        if asked is not None:
            return asked if asked <= policy.retry_after_cap_s else None
        base = min(policy.backoff_initial_s * policy.backoff_multiplier**n, policy.backoff_max_s)
        return max(base * (1.0 + self._rng.uniform(-policy.jitter, policy.jitter)), 0.0)

    @staticmethod
    def _final(error: TiergateError, outcome: Outcome[Any]) -> TiergateError:
        """The error the client gets: its status, plus the headers that tell an SDK what to do."""
        headers = error.headers
        seconds = retry_after(headers)
        if seconds is not None and seconds > _CLIENT_RETRY_AFTER_CAP_S:
            headers.pop("retry-after-ms", None)
            headers["retry-after"] = str(int(_CLIENT_RETRY_AFTER_CAP_S))
        retryable = isinstance(error, UpstreamError) and error.retryable
        headers["x-should-retry"] = "true" if retryable else "false"
        headers["x-tiergate-attempts"] = str(len(outcome.attempts))
        headers["x-tiergate-fallback"] = "true" if outcome.fallback else "false"
        return error


def _note(
    outcome: Outcome[Any],
    hop: Hop,
    started_at: float,
    started: float,
    error: TiergateError | None,
    observer: Observer | None,
) -> None:
    if error is None:
        status: int | None = 200
    else:
        status = error.upstream_status if isinstance(error, UpstreamError) else None
    outcome.attempts.append(
        Attempt(
            n=len(outcome.attempts) + 1,
            ts=started_at,
            tier=hop.tier,
            target=hop.target,
            status=status,
            error=None if error is None else (error.code or error.type),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
    )
    if observer is not None:
        observer.attempt_ended(outcome.attempts[-1])


_NEXT = object()  # _try_hop's "move on to the next hop"


class _Run:
    """What one request's tries have learnt so far: its deadline and the errors met."""

    def __init__(self, deadline: float, observer: Observer | None) -> None:
        self.deadline = deadline
        self.observer = observer
        self.last: TiergateError | None = None
        self.telling: TiergateError | None = None  # the last error from an upstream that did answer

    def failed(self, error: UpstreamError) -> None:
        self.last = error
        if not isinstance(error, UpstreamUnreachable):
            self.telling = error

    def verdict(self, fallback: TiergateError | None = None) -> TiergateError:
        # "Could not connect" to a fallback says less than what an earlier upstream answered
        # (a 429 with its retry-after, a 503, a timeout): report the most telling failure.
        return self.telling or self.last or fallback or _deadline_error()


async def primed(stream: ChunkStream) -> ChunkStream:
    """``stream`` once its first chunk has arrived, so a failure before it can still fall over."""
    chunks = aiter(stream)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        await stream.aclose()
        raise UpstreamProtocolError(
            "The upstream provider ended the stream without sending anything.", upstream_status=200
        ) from None
    except UpstreamError as exc:
        await stream.aclose()
        # An adapter returns a stream only once the upstream answered 200 (its contract).
        exc.upstream_status = 200
        raise
    except BaseException:
        await stream.aclose()
        raise
    return _Primed(first, chunks, stream)


class _Primed(ChunkStream):
    """A stream whose first chunk was already read (to know the upstream really started)."""

    def __init__(self, first: Chunk, rest: AsyncIterator[Chunk], stream: ChunkStream) -> None:
        self._first: Chunk | None = first
        self._rest = rest
        self._stream = stream
        self.request_id = stream.request_id
        self.headers = stream.headers

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._stream.aclose()


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds an upstream asked to wait: ``retry-after-ms`` first, then ``retry-after`` (seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP-date: rare from LLM APIs; fall back to our own backoff
        if seconds >= 0:
            return seconds
    return None


def _context_overflow(error: TiergateError | None) -> bool:
    if not isinstance(error, UpstreamStatus) or error.status != 400:
        return False
    text = f"{error.code or ''} {error.message}".lower()
    return "context_length" in text or "context length" in text or "context window" in text


def _deadline_error() -> UpstreamTimeout:
    return UpstreamTimeout("The request's deadline passed before any upstream answered.", code="deadline_exceeded")
