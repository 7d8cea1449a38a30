"""Generate a realistic ledger of N requests quickly, through the ledger's own write path.

Every row is a ``RequestRecord`` (with its ``AttemptRecord``s) settled by ``records.finalize`` (pricing,
token estimates) and written by ``store.Store.insert`` in batches, exactly as ``tiergate serve``'s
writer does: no SQL here, so the generator keeps working when the physical schema changes.
Worker processes build and settle the rows (the CPU-heavy part); the parent inserts them in order.

The traffic (``bench/ledger_rules.yaml``'s tasks, spread over ``--days`` with a daily cycle):
streams and plain calls; upstream errors after retries, 499s (client hung up mid-stream, usage
estimated), streams that broke after their 200, fallbacks to the tier's second target (with their
attempt rows), answers from the exact cache (hit, stale, coalesced), upstreams that never reported
usage (estimated), a fine-tuned model with no known price, long-context agent turns past gpt-5.5's
272k-token price tier, requests that failed before routing (unknown task), tasks decided by rules
and by the classifier, the classifier's shadow predictions, hashed features, and ``tiergate eval``
traffic with its ``eval_runs`` (a passing eval of summary on small and a failing one of narrative,
so ``audit --recommend`` has something to say).

    .venv/bin/python bench/ledger_gen.py --rows 10000000 --db /tmp/ledger-10m.db   # ~N min, see bench/README.md
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from proxy import rules
from proxy.classify.conditions import RequestView
from proxy.classify.features import encode, features
from proxy.evals.report import CaseResult, EvalReport, SideResult
from proxy.evals.store import EvalStore
from proxy.fakes import traffic
from proxy.ledger import materialize
from proxy.ledger.records import AttemptRecord, RequestRecord, finalize, new_id
from proxy.ledger.store import Settled, Store
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry, Target
from proxy.usage import Usage

RULES = Path(__file__).resolve().parent / "ledger_rules.yaml"
CHUNK = 20_000  # rows per worker task and per insert transaction
DAY = 86_400.0

# task -> (share of traffic, prompt tokens median, completion tokens median, stream share)
MIX = {
    "summary": (0.24, 1800, 220, 0.5),
    "title_generation": (0.18, 160, 12, 0.1),
    "extraction": (0.14, 900, 120, 0.0),
    "relevance": (0.12, 700, 2, 0.0),
    "agent": (0.10, 12_000, 900, 0.8),
    "narrative": (0.07, 1200, 700, 0.7),
    "ad_copy": (0.05, 300, 150, 0.3),
    "classification": (0.05, 250, 3, 0.0),
    "support_reply": (0.05, 1500, 300, 0.6),  # served by a fine-tune with no known price
}
LATENCY_MS = {  # median of a non-streamed call, per model (log-normal around it)
    "proxy.handlers.ticket_labels:classify": 0.4, "gpt-5.5": 6000, "claude-opus-5-5": 7000, "gpt-5.4-mini": 1400, "claude-sonnet-5-5": 1800,
    "gpt-5.4-nano": 450, "claude-haiku-5-5": 600, "ft:gpt-5.4-mini:acme:support": 1500,
}  # fmt: skip
CACHED_TASKS = {"summary", "title_generation"}  # tasks with `cache:` in ledger_rules.yaml


class Generator:
    """Builds the records of rows ``[start, start + n)`` of an ``total``-row ledger ending at ``end``."""

    def __init__(self, registry: Registry, total: int, end: float, days: int, seed: int) -> None:
        self.registry = registry
        self.total, self.end, self.span, self.seed = total, end, days * DAY, seed
        self.tasks = list(MIX)
        self.weights = [MIX[t][0] for t in self.tasks]
        pool = random.Random(seed)
        # Hashed features of a few hundred calls per call site: what the classifier fields look like.
        sites = [site for site in traffic.SITES]
        self.features: dict[str, list[bytes]] = {}
        for site in sites * 20:
            view = RequestView(traffic.body(site, pool), {})
            self.features.setdefault(site.task, []).append(encode(features(view, 7)))

    def records(self, start: int, n: int) -> list[RequestRecord]:
        rng = random.Random(self.seed * 1_000_003 + start)
        return [self._record(rng, i) for i in range(start, start + n)]

    def _ts(self, i: int) -> float:
        # Evenly spread, then warped within each day so that 14:00 UTC is ~3x as busy as 02:00.
        t = self.end - self.span + self.span * (i + 0.5) / self.total
        day, into = divmod(t, DAY)
        u = into / DAY
        return day * DAY + DAY * (u - 0.5 * math.sin(2 * math.pi * (u - 0.08)) / (2 * math.pi))

    def _record(self, rng: random.Random, i: int) -> RequestRecord:
        ts = self._ts(i)
        r = RequestRecord(
            id=new_id(), ts=ts, task="-", task_source="header", tier=None, requested_model="auto",
            stream=False, status=200, latency_ms=0.0,
        )  # fmt: skip
        r.client = f"key:{rng.choice(('3f9a1c0b7d2e', '8b01aa94c3f5', 'c0ffee123456'))}"
        r.end_user = f"user-{rng.randrange(5000)}" if rng.random() < 0.6 else None
        if rng.random() < 0.003:  # failed before routing: an X-Task-Type the registry lacks
            r.task = rng.choice(("summarise", "translation", "-"))
            r.status, r.error_type, r.latency_ms = 400, "unknown_task_type", rng.uniform(0.2, 0.6)
            r.request_id = f"req_{r.id}"
            return r
        task = rng.choices(self.tasks, self.weights)[0]
        spec = self.registry.tasks[task]
        r.task, r.tier = task, spec.tier
        r.baseline_tier = spec.baseline
        r.baseline = self.registry.tiers[spec.baseline].targets[0]
        self._decided(rng, r, ts)
        if rng.random() < 0.02:
            r.eval_run = f"ev-{int(ts // DAY)}-{task}"  # tiergate eval's calls: left out of the audit
        _, prompt_median, completion_median, stream_share = MIX[task]
        r.stream = rng.random() < stream_share
        targets = self.registry.tiers[spec.tier].targets
        if task in CACHED_TASKS:
            r.cache = "miss"
            if rng.random() < 0.12:
                return self._from_store(rng, r, targets[0], prompt_median, completion_median)
        usage = self._usage(rng, task, targets[0], prompt_median, completion_median)
        self._dispatch(rng, r, targets, usage)
        return r

    def _decided(self, rng: random.Random, r: RequestRecord, ts: float) -> None:
        roll = rng.random()
        if roll < 0.05:
            r.task_source = {"agent": "rule:tools", "extraction": "rule:structured-output"}.get(
                r.task, "rule:summaries"
            )
        elif roll < 0.11:
            r.task_source, r.task_confidence = "classifier", round(rng.uniform(0.7, 1.0), 4)
        elif roll < 0.13 and r.task == "agent":
            r.task_source = "default"
        pool = self.features.get(r.task) or self.features["summary"]
        r.features = rng.choice(pool)
        # The classifier was trained ten days in: shadow predictions from then on, ~93% agreeing.
        if ts > self.end - self.span + 10 * DAY:
            r.task_predicted = r.task if rng.random() < 0.93 else rng.choice(self.tasks)

    def _usage(self, rng: random.Random, task: str, target: Target, prompt: int, completion: int) -> Usage:
        p = max(1, int(rng.lognormvariate(math.log(prompt), 0.6)))
        if task == "agent" and rng.random() < 0.002:
            p = rng.randint(280_000, 400_000)  # past gpt-5.5's long-context price tier
        c = max(1, int(rng.lognormvariate(math.log(completion + 1), 0.5)))
        cached = int(p * rng.uniform(0.3, 0.9)) if task == "agent" and rng.random() < 0.7 else 0
        written = int((p - cached) * 0.5) if target.provider == "anthropic" and rng.random() < 0.3 else 0
        reasoning = int(c * rng.uniform(0.2, 0.6)) if task == "agent" else 0
        return Usage(p, c, cached, reasoning, written)

    def _from_store(
        self, rng: random.Random, r: RequestRecord, target: Target, prompt: int, completion: int
    ) -> RequestRecord:
        r.cache = rng.choices(("hit", "stale", "coalesced"), (0.85, 0.1, 0.05))[0]
        r.target, r.usage = target, self._usage(rng, r.task, target, prompt, completion)
        r.latency_ms = rng.uniform(0.12, 0.6) if r.cache != "coalesced" else rng.uniform(200, 1500)
        r.request_id = f"req_{r.id}"
        return r

    def _dispatch(self, rng: random.Random, r: RequestRecord, targets: tuple[Target, ...], usage: Usage) -> None:
        now = r.ts
        roll = rng.random()
        tried = [targets[0]]
        if roll < 0.03 and len(targets) > 1:  # the first target failed: served by the next
            tried.append(targets[1])
            r.fallback = True
        failed = roll > 0.99  # every target failed
        if failed and len(targets) > 1:
            tried = list(targets[:2])
            r.fallback = True
        upstream = 0.0
        for n, target in enumerate(tried, 1):
            last = n == len(tried)
            ok = last and not failed
            latency = self._latency(rng, target, r.stream) if ok else rng.uniform(20, 3000)
            status, error = (200, None) if ok else rng.choice(((502, "bad_gateway"), (None, "upstream_timeout"),
                                                               (429, "rate_limit_exceeded"), (503, None)))  # fmt: skip
            now += latency / 1000
            upstream += latency
            r.attempts.append(AttemptRecord(n, now, r.tier, target, status, error, round(latency, 3)))
        r.target, r.upstream_ms = tried[-1], upstream
        overhead = rng.uniform(0.3, 1.5)
        r.latency_ms = upstream + overhead
        r.request_id = f"chatcmpl-{r.id[:20]}" if not failed else f"req_{r.id}"
        if failed:
            r.status, r.error_type = rng.choice(((502, "upstream_unreachable"), (504, "upstream_timeout")))
            return
        if r.stream:
            r.ttft_ms = min(r.latency_ms, rng.uniform(150, 900))
            cut = rng.random()
            if cut < 0.006 or (cut < 0.009):
                # 499: the client hung up mid-stream; or the upstream's stream broke after its 200. No
                # usage chunk came: the writer counts the tokens of what was sent (usage_source estimated).
                r.status = 499 if cut < 0.006 else 200
                r.error_type = "client_disconnected" if cut < 0.006 else "upstream_error"
                self._estimated(rng, r)
                return
        if rng.random() < 0.01:  # an upstream that ignores include_usage
            self._estimated(rng, r)
            return
        r.usage = usage

    def _estimated(self, rng: random.Random, r: RequestRecord) -> None:
        r.messages = [{"role": "user", "content": traffic.filler(rng, rng.randint(20, 120))}]
        r.streamed_text = traffic.filler(rng, rng.randint(5, 80))
        r.produced_output = True

    def _latency(self, rng: random.Random, target: Target, stream: bool) -> float:
        median = LATENCY_MS.get(target.model, 1000) * (1.6 if stream else 1.0)
        return min(rng.lognormvariate(math.log(median), 0.55), 120_000.0)


# --- the worker processes -----------------------------------------------------------------------

_WORKER: tuple[Generator, Pricer] | None = None  # each worker process's own, built once by _init


def _init(total: int, end: float, days: int, seed: int) -> None:
    global _WORKER
    registry = load_registry()
    _WORKER = Generator(registry, total, end, days, seed), Pricer(registry.prices, price_ids(registry))


def _chunk(start: int, n: int) -> list[Settled]:
    assert _WORKER is not None
    generator, pricer = _WORKER
    return [finalize(record, pricer) for record in generator.records(start, n)]


def load_registry() -> Registry:
    return rules.load(RULES, environ={})


def generate(db: str, total: int, *, days: int, end: float, seed: int, workers: int) -> float:
    """Write ``total`` rows to a new ledger at ``db``; return the seconds it took."""
    started = time.perf_counter()
    store = Store(db)
    window: deque[Future[list[Settled]]] = deque()
    starts = iter(range(0, total, CHUNK))
    done = 0
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(total, end, days, seed)) as pool:
        for start in starts:
            window.append(pool.submit(_chunk, start, min(CHUNK, total - start)))
            if len(window) > 2 * workers:  # a bounded window: memory stays flat, rows stay in ts order
                done += _write(store, window.popleft().result(), done, total, started)
        while window:
            done += _write(store, window.popleft().result(), done, total, started)
    # What a serving tiergate does every 30 s as the rows arrive: sum them into the audit's runs.
    store.run(materialize.refresh_all)
    store.close()
    _eval_runs(db, end, days)
    return time.perf_counter() - started


def _write(store: Store, rows: list[Settled], done: int, total: int, started: float) -> int:
    refused = store.insert(rows)
    if refused:
        raise SystemExit(f"{len(refused)} rows refused by SQLite")
    done += len(rows)
    if done % (CHUNK * 25) == 0 or done == total:
        rate = done / (time.perf_counter() - started)
        print(f"  {done:,} rows, {rate:,.0f} rows/s", file=sys.stderr)
    return len(rows)


def _eval_runs(db: str, end: float, days: int) -> None:
    """The evals' record, through the eval store: summary passed on small (11 of 12), narrative failed (6)."""
    store = EvalStore(db)
    try:
        for k, (task, passed) in enumerate((("summary", 11), ("narrative", 6))):
            ts = datetime.fromtimestamp(end - (days // 3 - k) * DAY, UTC).isoformat(timespec="milliseconds")
            store.record(
                EvalReport(
                    run=f"ev-{task}", ts=ts.replace("+00:00", "Z"), task=task, threshold=0.9, max_regressions=1,
                    repeats=1, golden_source=f"evals/{task}", candidate=_side("candidate", "small", passed),
                    current=_side("current", "mid", 12),
                )
            )  # fmt: skip
    finally:
        store.close()


def _side(side: str, tier: str, passed: int) -> SideResult:
    cases = tuple(CaseResult(f"c{i}", i < passed, "ok" if i < passed else "missed", "...", 1, 1, 800.0, 0.0001)
                  for i in range(12))  # fmt: skip
    targets = ("openai::gpt-5.4-nano",) if tier == "small" else ("openai::gpt-5.4-mini",)
    return SideResult(side, tier, targets, "0" * 64, str(RULES), 0.9, cases, 0.0012, None, 0, 12, 0, 800.0, 1500.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", required=True, help="the ledger file to create (must not exist)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--end", default="2026-12-01", help="UTC date the traffic ends (default 2026-12-01)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args(argv)
    if Path(args.db).exists():
        parser.error(f"{args.db} exists: the generator writes a new ledger")
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC).timestamp()
    seconds = generate(args.db, args.rows, days=args.days, end=end, seed=args.seed, workers=args.workers)
    size = sum(p.stat().st_size for p in Path(args.db).parent.glob(Path(args.db).name + "*"))
    print(
        f"{args.rows:,} rows in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s), {size / 2**30:.2f} GiB: {args.db}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
