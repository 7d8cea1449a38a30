"""How many bytes a ledger row takes on disk: N realistic rows written through the ledger's own write path.

    python bench/ledger_size.py                      # 1,000,000 rows, about 2 min
    python bench/ledger_size.py --rows 100000 --db /tmp/ledger.db --keep

The rows go through ``LedgerWriter.submit`` exactly as the request path hands them over (the writer
settles, prices and batches them, the store writes them), into a fresh file; then the WAL is
checkpointed and the file measured: its size over the request rows, and each table's and index's
pages (SQLite's ``dbstat``) over its rows.

What "realistic" means here (a busy production app, one month of traffic):

- the calls of ``proxy.fakes.traffic``'s simulated app (16 call sites, 6 tasks, system prompts per call
  site, user text filled from a vocabulary: 8-30 words), drawn from a pool of 50,000 distinct bodies;
  their hashed features are computed by the server's own classifier (``Classifier.decide``), so
  ``features`` is what the server would store;
- served by the shipped rules.yaml registry (its tiers, targets, baselines and prices): the tier's
  first target, 3% after a failed first attempt on the second target (two attempt rows);
- 40% streams (with a time to first token), 2.5% errors (429, 502, 504, 499 mid-stream, 400 before
  routing), 1% usage estimated, usage on the rest: 200-4,000 prompt tokens (log-uniform), 20-1,000
  completion tokens, 30% with cached tokens, reasoning tokens on the frontier tier;
- the upstream's ``x-request-id`` as OpenAI sends it (``req_`` + 32 hex characters) for answered
  calls, tiergate's own for the rest;
- ``task_source``: 85% header, 5% a rule, 7% the classifier (with its confidence), 3% the default;
  ``task_predicted`` on every row (a model is loaded, shadow mode), agreeing 90% of the time;
- ``requested_model``: 70% ``auto``, else a model or tier name; 3 client keys; an end-user id
  (``user_`` + 16 hex characters) on 80% of the calls, from 20,000 users; 10% of the calls on a
  cached task (4% hits, 6% misses); no eval traffic, no captured text (the default).
- timestamps spread evenly over the 30 days before now, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy import pricing, rules  # noqa: E402
from proxy.classify.decide import Classifier  # noqa: E402
from proxy.classify.features import encode, seed_of  # noqa: E402
from proxy.fakes import traffic  # noqa: E402
from proxy.ledger.records import AttemptRecord, RequestRecord, new_id  # noqa: E402
from proxy.ledger.writer import LedgerWriter  # noqa: E402
from proxy.registry import Registry, Target  # noqa: E402
from proxy.usage import Usage  # noqa: E402

DAYS = 30
BODIES = 50_000
USERS = 20_000
ERRORS = (
    (429, "rate_limit_exceeded"),
    (502, "upstream_unreachable"),
    (504, "upstream_timeout"),
    (499, "client_disconnected"),
    (400, "unknown_task_type"),
)


def _registry() -> Registry:
    env = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"}
    return rules.load(REPO / "rules.yaml", {**os.environ, **env})


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


class Traffic:
    """Realistic finished requests, as the request path hands them to the ledger writer."""

    def __init__(self, registry: Registry, seed: int = 0) -> None:
        self._registry = registry
        self._rng = random.Random(seed)
        classifier = Classifier(registry, seed_of(""))
        self._bodies: list[tuple[str, Any]] = []
        for task, body in traffic.calls(BODIES, seed=seed):
            decision = classifier.decide({"x-task-type": task}, body)
            self._bodies.append((task, decision))
        self._tasks = [t for t in registry.tasks if t in {task for task, _ in self._bodies}]
        self._users = [f"user_{self._rng.getrandbits(64):016x}" for _ in range(USERS)]
        self._clients = [f"key:{self._rng.getrandbits(48):012x}" for _ in range(3)]

    def records(self, n: int, start: float, end: float) -> Iterator[RequestRecord]:
        step = (end - start) / n
        for i in range(n):
            yield self._one(start + i * step)

    def _one(self, ts: float) -> RequestRecord:
        rng, registry = self._rng, self._registry
        task, decision = self._bodies[rng.randrange(len(self._bodies))]
        spec = registry.tasks[task]
        tier = registry.tiers[spec.tier]
        baseline_tier = spec.baseline
        r = rng.random()
        source, confidence = "header", None
        if r > 0.85:
            source = "rule:by_shape" if r < 0.90 else "classifier" if r < 0.97 else "default"
            confidence = rng.uniform(0.8, 1.0) if source == "classifier" else None
        predicted = task if rng.random() < 0.9 else rng.choice(self._tasks)
        stream = rng.random() < 0.4
        record = RequestRecord(
            id=new_id(),
            ts=ts,
            task=task,
            task_source=source,
            tier=tier.name,
            requested_model="auto" if rng.random() < 0.7 else rng.choice(["tier:mid", "gpt-4o-mini", "gpt-5.4-mini"]),
            stream=stream,
            status=200,
            latency_ms=0.0,
            baseline_tier=baseline_tier,
            baseline=registry.tiers[baseline_tier].targets[0],
            client=rng.choice(self._clients),
            end_user=rng.choice(self._users) if rng.random() < 0.8 else None,
            task_confidence=confidence,
            task_predicted=predicted,
        )
        # as the request path sets them (proxy.endpoints.chat)
        record.features = encode(decision.call)
        record.template = (decision.template.digest, decision.template.blob)
        cached = rng.random()
        if cached < 0.1:
            record.cache = "hit" if cached < 0.04 else "miss"
        targets = tier.targets
        fallback = len(targets) > 1 and rng.random() < 0.03
        error = rng.random() < 0.025
        upstream = _log_uniform(rng, 300, 5000)
        now = ts + upstream / 1000
        attempts: list[AttemptRecord] = []
        if fallback:
            attempts.append(AttemptRecord(1, ts + 0.2, tier.name, targets[0], 503, "server_error", 200.0))
        served: Target = targets[1] if fallback else targets[0]
        if error:
            status, kind = rng.choice(ERRORS)
            if kind == "unknown_task_type":
                record.task, record.task_source, record.tier = "nope", "header", None
                record.baseline_tier = record.baseline = None
                record.status, record.error_type, record.latency_ms = status, kind, rng.uniform(0.2, 1.0)
                record.request_id = "req_" + record.id
                return record
            record.status, record.error_type = status, kind
            if status == 499:
                record.stream, record.produced_output = True, True
                record.messages = [{"role": "user", "content": "Summarise the thread, please."}]
                record.streamed_text = "The thread is about " * 5
        attempts.append(AttemptRecord(len(attempts) + 1, now, tier.name, served, 200 if not error else record.status,
                                      record.error_type, upstream if not stream else rng.uniform(200, 900)))  # fmt: skip
        record.attempts = attempts
        record.target = served
        record.fallback = fallback
        record.upstream_ms = upstream + (200.0 if fallback else 0.0)
        record.latency_ms = record.upstream_ms + rng.uniform(0.3, 2.0)
        record.request_id = f"req_{rng.getrandbits(128):032x}" if record.status == 200 else "req_" + record.id
        if stream:
            record.ttft_ms = rng.uniform(150, 900)
        if record.status in (429, 502, 504):
            return record  # failed before any token: no usage
        if record.status == 200 and rng.random() < 0.01:
            record.produced_output = True  # a cut stream, or an upstream without usage: estimated
            record.messages = [{"role": "user", "content": "Give me a short title for this chat."}]
            record.streamed_text = "A short title"
            return record
        if record.usage is None and record.status == 200:
            prompt = int(_log_uniform(rng, 200, 4000))
            completion = int(_log_uniform(rng, 20, 1000))
            cached_tokens = int(prompt * rng.uniform(0, 0.8)) if rng.random() < 0.3 else 0
            reasoning = int(completion * rng.uniform(0.2, 0.6)) if tier.name == "frontier" else 0
            record.usage = Usage(prompt, completion, cached_tokens, reasoning)
        return record


async def write(db: str, rows: int, registry: Registry, seed: int) -> float:
    """Write ``rows`` records through a ``LedgerWriter``; return the seconds it took."""
    pricing.warm_up()
    pricer = pricing.Pricer(registry.prices, pricing.price_ids(registry))
    source = Traffic(registry, seed)
    writer = LedgerWriter(db, pricer, linger=0.005)
    await writer.start()
    end = time.time()
    started = time.perf_counter()
    for i, record in enumerate(source.records(rows, end - DAYS * 86400, end)):
        writer.submit(record)
        if i % 2000 == 1999:
            while writer.health()["queued"] > 4000:
                await asyncio.sleep(0.002)
    await writer.close(timeout=600)
    elapsed = time.perf_counter() - started
    health = writer.health()
    if health["written"] != rows:
        raise SystemExit(f"only {health['written']} of {rows} rows were written: {health}")
    return elapsed


def measure(db: str) -> dict[str, Any]:
    """The file's size and each table's and index's share, after a checkpoint."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        requests = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
        tables = {
            name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
        features = conn.execute("SELECT avg(length(features)) FROM requests").fetchone()[0]
        objects = conn.execute(
            "SELECT s.name, m.tbl_name, sum(s.pgsize), sum(s.payload), count(*) FROM dbstat s "
            "LEFT JOIN sqlite_schema m ON m.name = s.name GROUP BY s.name ORDER BY sum(s.pgsize) DESC"
        ).fetchall()
    finally:
        conn.close()
    return {
        "file_bytes": Path(db).stat().st_size,
        "page_size": page_size,
        "pages": pages,
        "free_pages": free,
        "requests": requests,
        "attempts": attempts,
        "features_bytes": features,
        "tables": tables,
        "objects": [
            {"name": name, "table": table, "bytes": size, "payload": payload, "pages": count}
            for name, table, size, payload, count in objects
        ],
    }


def report(m: dict[str, Any], seconds: float | None) -> str:
    requests, attempts = m["requests"], m["attempts"]
    lines = [
        f"{requests:,} request rows, {attempts:,} attempt rows"
        + (f", written in {seconds:.1f} s ({requests / seconds:,.0f} rows/s)" if seconds else ""),
        f"file: {m['file_bytes']:,} bytes = {m['file_bytes'] / requests:.1f} bytes per request row "
        f"(everything: attempts, dictionaries and indexes included; {m['free_pages']} free pages)",
        f"features (as the requests view shows them): {m['features_bytes'] or 0:.1f} bytes per row on average",
        "",
        f"{'table or index':<32} {'of table':<18} {'rows':>10} {'bytes':>14} {'per request':>12} {'per own row':>12}",
    ]
    per_table = m["tables"]
    for o in m["objects"]:
        own = per_table.get(o["table"] or "")
        own_text = f"{o['bytes'] / own:.1f}" if own else "-"
        lines.append(
            f"{o['name']:<32} {o['table'] or '-':<18} {own if own is not None else '-':>10} {o['bytes']:>14,} "
            f"{o['bytes'] / requests:>12.1f} {own_text:>12}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", help="ledger file to write (default: a temporary file, deleted after)")
    parser.add_argument("--keep", action="store_true", help="keep the file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-only", action="store_true", help="measure --db as it is, write nothing")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tiergate-ledger-size-")
    db = args.db or os.path.join(folder, "ledger.db")
    seconds = None
    if not args.measure_only:
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
        seconds = asyncio.run(write(db, args.rows, _registry(), args.seed))
    print(report(measure(db), seconds))
    if not (args.keep or args.db or args.measure_only):
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
