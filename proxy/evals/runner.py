"""``evaluate``: run a task's golden set on a candidate registry (and on the current one, side by side).

The runner is a client of tiergate itself. For each side it serves ``create_app`` with that side's
registry in-process on loopback (``proxy.loopback``) and sends each case's request over HTTP with
``X-Task-Type: <task>`` and ``X-Tiergate-Eval: <run id>``, so an eval goes through exactly what
production runs: routing, prompt variants per tier, params, retries, fallbacks, pricing and the ledger
(every call is a ledger row marked with the run id). The judge scorer's calls go to the same server as
the golden set's judge task. Provider endpoints and keys are the registry's, as for ``tiergate serve``.

Each case runs ``repeats`` times (repeat 0, 1, ...). Before a call, the answer store is asked for the
answer of (first hop, request as sent to it, repeat); unless ``fresh``, a stored answer is reused and no
call is made. Results go to ``eval_runs`` / ``eval_results`` in the same ledger file.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import httpx
import orjson

from proxy import pricing, rewrite
from proxy.app import create_app
from proxy.errors import ConfigError
from proxy.evals.case import Case
from proxy.evals.diff import same_route
from proxy.evals.golden import GoldenSet
from proxy.evals.report import CaseResult, EvalReport, SideResult
from proxy.evals.scorers import Answer, Judge, Verdict, score_all
from proxy.evals.store import EvalStore, StoredAnswer, answer_key
from proxy.ledger.audit import percentile
from proxy.ledger.records import iso, new_id
from proxy.loopback import serve
from proxy.pricing import Pricer
from proxy.registry import Registry, Target
from proxy.router import Route, Router
from proxy.settings import Settings
from proxy.usage import Usage

EVAL_HEADER = "X-Tiergate-Eval"


@dataclass(frozen=True)
class Options:
    concurrency: int = 4  # cases in flight at once (each: its answer, then its judge calls)
    limit: int | None = None  # only the first N cases
    repeats: int | None = None  # runs of each case; default: the golden set's ``repeats``
    fresh: bool = False  # ignore stored answers (and store the new ones)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"--concurrency: expected 1 or more, got {self.concurrency}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit: expected 1 or more, got {self.limit}")
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"--repeats: expected 1 or more, got {self.repeats}")


class Progress(Protocol):
    """Told after each answer is scored: how many of how many (cases x repeats x sides) are done."""

    def __call__(self, done: int, total: int) -> None: ...


async def evaluate(
    golden: GoldenSet,
    candidate_registry: Registry,
    *,
    current_registry: Registry | None,
    db: str,
    options: Options = Options(),
    progress: Progress | None = None,
) -> EvalReport:
    """Run ``golden`` on ``candidate_registry``'s tier for its task and, unless it runs the task the same
    way, on ``current_registry``'s too (``None``: the candidate is the current tier); record the run in
    the ledger at ``db`` and return the report. Raises ``ConfigError`` when a registry lacks the task or
    the judge task."""
    task = golden.task
    started = time.time()
    registries = [("candidate", candidate_registry)]
    # No current side when the candidate runs the task as the current registry does (it would make the
    # same calls twice), or when the current registry has no such task (a new task: nothing to compare).
    comparable = current_registry if current_registry is not None and task in current_registry.tasks else None
    if comparable is not None and task in candidate_registry.tasks:
        if not same_route(candidate_registry, comparable, task):
            registries.append(("current", comparable))
    for _, registry in registries:
        _check(golden, registry)
    cases = golden.cases[: options.limit] if options.limit else golden.cases
    repeats = options.repeats or golden.repeats
    run = "ev_" + new_id()
    ticker = _Ticker(len(cases) * repeats * len(registries), progress)
    store = await asyncio.to_thread(EvalStore, db)
    try:
        sides = [
            await _Side(side, registry, golden, run, store, options, ticker).run(cases, repeats)
            for side, registry in registries
        ]
        report = EvalReport(
            run=run,
            ts=iso(started),
            task=task,
            threshold=golden.threshold,
            max_regressions=golden.max_regressions,
            repeats=repeats,
            golden_source=golden.source,
            candidate=sides[0],
            current=sides[1] if len(sides) > 1 else None,
            candidate_is_current=current_registry is None or (comparable is not None and len(sides) == 1),
        )
        await asyncio.to_thread(store.record, report)
    finally:
        await asyncio.to_thread(store.close)
    return report


def _check(golden: GoldenSet, registry: Registry) -> None:
    if golden.task not in registry.tasks:
        raise ConfigError(golden.source, f"{golden.task!r} is not a task of {registry.source}")
    if golden.uses_judge and golden.judge.task not in registry.tasks:
        raise ConfigError(f"{golden.source}: judge.task", f"{golden.judge.task!r} is not a task of {registry.source}")


class _Ticker:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self._progress = total, 0, progress
        if progress is not None:
            progress(0, total)

    def tick(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress(self.done, self.total)


# --- one call -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    """One answer: from a call made now, or from the store."""

    message: Mapping[str, Any] | None  # None: no answer (``error`` says why)
    error: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = 0.0  # what getting it cost this run; None: tokens on an unpriced model
    reused: bool = False

    @property
    def text(self) -> str:
        return Answer.of(self.message).text if self.message is not None else ""


class _Caller:
    """Sends requests to one in-process tiergate, through the answer store."""

    def __init__(self, http: httpx.AsyncClient, store: EvalStore, run: str, fresh: bool, registry: Registry) -> None:
        self._http, self._store, self._run, self._fresh = http, store, run, fresh
        self._router = Router(registry)
        self._providers = registry.providers
        self._pricer = Pricer(registry.prices, pricing.price_ids(registry))

    async def call(self, task: str, body: dict[str, Any], repeat: int) -> _Reply:
        route = self._router.resolve(task, "auto")
        first = route.hops[0]
        provider = self._providers[first.target.provider]
        sent = rewrite.for_target(body, route.task, first.target, first.prompt)
        key = answer_key(first.target.key, sent, endpoint=f"{provider.type} {provider.base_url}")
        if not self._fresh:
            stored = await asyncio.to_thread(self._store.answer, key, repeat)
            if stored is not None:
                return _Reply(stored.message, latency_ms=stored.latency_ms, reused=True)
        reply, served, usage = await self._post(task, body)
        if reply.message is not None and served == first.target.key:
            stored = StoredAnswer(served, reply.message, usage, reply.latency_ms)
            await asyncio.to_thread(self._store.keep, key, repeat, stored)
        return reply

    async def _post(self, task: str, body: dict[str, Any]) -> tuple[_Reply, str | None, Usage | None]:
        headers = {"x-task-type": task, EVAL_HEADER: self._run, "content-type": "application/json"}
        started = time.perf_counter()
        try:
            response = await self._http.post("/v1/chat/completions", content=orjson.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            return _Reply(None, f"no answer from tiergate: {type(exc).__name__}: {exc}"), None, None
        latency = (time.perf_counter() - started) * 1000.0
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = None
        if response.status_code != 200:
            return _Reply(None, _error(response.status_code, payload), latency), None, None
        try:
            message = payload["choices"][0]["message"]
            provider, model = response.headers["x-tiergate-provider"], response.headers["x-tiergate-model"]
        except (TypeError, KeyError, IndexError):
            return _Reply(None, f"tiergate's answer has no message: {response.text[:200]!r}", latency), None, None
        usage = Usage.from_openai(payload.get("usage"))
        cost: float | None = 0.0
        if usage is not None:
            priced = self._pricer.cost(Target(provider, model, MappingProxyType({})), usage)
            cost = None if priced is None else priced.usd
        return _Reply(message, latency_ms=latency, cost_usd=cost), f"{provider}::{model}", usage


def _error(status: int, payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return f"tiergate answered {status} {error.get('code') or error.get('type')}: {error.get('message')}"
    return f"tiergate answered {status}"


# --- one side -----------------------------------------------------------------------------------


@dataclass
class _Trial:
    """One repeat of one case."""

    verdict: Verdict
    reply: _Reply
    judge: list[_Reply] = field(default_factory=list)


class _Side:
    def __init__(
        self,
        side: str,
        registry: Registry,
        golden: GoldenSet,
        run: str,
        store: EvalStore,
        options: Options,
        ticker: _Ticker,
    ) -> None:
        self.side, self.registry, self.golden, self.run_id = side, registry, golden, run
        self.store, self.options, self.ticker = store, options, ticker

    async def run(self, cases: Sequence[Case], repeats: int) -> SideResult:
        settings = Settings(config=self.registry.source, db=self.store.path, eval_traffic=True, log_level="warning")
        limit = asyncio.Semaphore(self.options.concurrency)
        # tiergate's own deadlines bound every call (up to the frontier tier's 15 minutes): no read timeout here.
        timeout = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None)
        connections = httpx.Limits(max_connections=self.options.concurrency * 2)
        async with (
            serve(create_app(settings, self.registry)) as url,
            httpx.AsyncClient(base_url=url, timeout=timeout, limits=connections) as http,
        ):
            caller = _Caller(http, self.store, self.run_id, self.options.fresh, self.registry)

            async def one(case: Case, repeat: int) -> _Trial:
                async with limit:
                    trial = await self._trial(caller, case, repeat)
                self.ticker.tick()
                return trial

            trials = await asyncio.gather(*(one(case, r) for case in cases for r in range(repeats)))
        # serve() has returned: tiergate has shut down and its ledger writer drained every row.
        by_case = [trials[i * repeats : (i + 1) * repeats] for i in range(len(cases))]
        return self._result(Router(self.registry).resolve(self.golden.task, "auto"), cases, by_case, repeats)

    async def _trial(self, caller: _Caller, case: Case, repeat: int) -> _Trial:
        reply = await caller.call(self.golden.task, case.request(), repeat)
        if reply.message is None:
            return _Trial(Verdict(False, reply.error or "no answer"), reply)
        trial = _Trial(Verdict(False, ""), reply)

        async def judge(messages: list[dict[str, Any]]) -> str:
            answer = await caller.call(self.golden.judge.task, {"model": "auto", "messages": messages}, repeat)
            trial.judge.append(answer)
            if answer.message is None:
                raise JudgeFailed(answer.error or "no answer")
            return answer.text

        checked: Judge = judge
        trial.verdict = await score_all(self.golden.scorers, Answer.of(reply.message), case, checked)
        return trial

    def _result(
        self, route: Route, cases: Sequence[Case], by_case: Sequence[Sequence[_Trial]], repeats: int
    ) -> SideResult:
        results = []
        for case, trials in zip(cases, by_case, strict=True):
            wins = sum(1 for t in trials if t.verdict.passed)
            passed = wins * 2 > repeats  # a strict majority; a tie fails
            shown = next(t for t in trials if t.verdict.passed == passed)
            latencies = [t.reply.latency_ms for t in trials if t.reply.latency_ms is not None]
            results.append(
                CaseResult(
                    id=case.id,
                    passed=passed,
                    reason=shown.verdict.reason,
                    answer=shown.reply.text,
                    repeats_passed=wins,
                    repeats=repeats,
                    latency_ms=percentile(latencies, 50),
                    cost_usd=_money([t.reply.cost_usd for t in trials]),
                )
            )
        replies = [t.reply for trials in by_case for t in trials]
        judged = [j for trials in by_case for t in trials for j in t.judge]
        latencies = [r.latency_ms for r in replies if r.latency_ms is not None]
        return SideResult(
            side=self.side,
            tier=route.tier.name,
            targets=tuple(t.key for t in route.tier.targets),
            registry_hash=self.registry.content_hash,
            registry_source=self.registry.source,
            threshold=self.golden.threshold,
            cases=tuple(results),
            cost_usd=_money([r.cost_usd for r in replies]),
            judge_cost_usd=_money([r.cost_usd for r in judged]),
            unpriced=sum(1 for r in (*replies, *judged) if r.cost_usd is None),
            answers=len(replies),
            reused=sum(1 for r in replies if r.reused),
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
        )


class JudgeFailed(Exception):
    """The judge call got no answer (the case fails with this as its reason)."""


def _money(values: Sequence[float | None]) -> float | None:
    """The exact sum of the known costs; None only when there were costs and none is known."""
    known = [v for v in values if v is not None]
    return math.fsum(known) if known or not values else None
