"""The eval side of the ledger file: the answer store, and the record of each run (``eval_runs``, ``eval_results``).

An answer is stored per (target, request): its key is the sha256 of the first hop's ``provider::model``
(and its provider's type and base URL) and the body tiergate sends that target (``rewrite.for_target``: model, prompt variant, params, caps),
as canonical JSON, together with the repeat index. A re-run of an unchanged case on an unchanged target
therefore finds its answer and makes no call; a changed prompt variant, param or model is a new key. Only
answers the first hop served are stored (a fallback's answer is not that target's), and judge replies
are stored the same way, keyed on the judge task's first hop and the judge request.

The tables are created by the ledger's migrations (``proxy.ledger.schema``, v4). One connection, used
from worker threads one call at a time (``asyncio.to_thread``), so SQLite never runs on the event loop
that also serves the in-process tiergate.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.evals.report import EvalReport
from proxy.ledger.records import iso
from proxy.ledger.schema import open_ledger
from proxy.usage import Usage


def answer_key(target: str, body: Mapping[str, Any], endpoint: str = "") -> str:
    """The store key of ``body`` sent to ``target`` (``provider::model``) at ``endpoint``: sha256 of canonical JSON.

    ``endpoint`` is the provider's type and base URL: the same model name behind another endpoint (a
    fake upstream, a proxy, a self-hosted copy) is another target, whose answers are not these.
    """
    document = {"target": target, "endpoint": endpoint, "body": body}
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=_plain)
    return hashlib.sha256(canonical).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class StoredAnswer:
    target: str  # provider::model that served it (always the first hop's)
    message: Mapping[str, Any]  # the assistant message
    usage: Usage | None
    latency_ms: float | None  # of the call that produced it


class EvalStore:
    """The ledger at ``path``, opened (created and migrated) for the eval tables."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # one call at a time, from whichever worker thread
        self._conn = open_ledger(path, check_same_thread=False)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def answer(self, key: str, repeat: int) -> StoredAnswer | None:
        """The stored answer for ``key`` and repeat ``repeat``, if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT target, message, usage, latency_ms FROM eval_answers WHERE key = ? AND repeat = ?",
                (key, repeat),
            ).fetchone()
        if row is None:
            return None
        usage = Usage.from_openai(orjson.loads(row[2])) if row[2] else None
        return StoredAnswer(row[0], orjson.loads(row[1]), usage, row[3])

    def keep(self, key: str, repeat: int, answer: StoredAnswer) -> None:
        """Store ``answer`` (replacing what ``--fresh`` made stale)."""
        usage = orjson.dumps(answer.usage.to_openai()).decode() if answer.usage is not None else None
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO eval_answers (key, repeat, ts, target, message, usage, latency_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, repeat, iso(time.time()), answer.target, orjson.dumps(answer.message).decode(), usage,
                 answer.latency_ms),
            )  # fmt: skip

    def record(self, report: EvalReport) -> None:
        """Write one run's ``eval_runs`` rows (one per side) and ``eval_results`` rows in one transaction."""
        runs, results = _rows(report)
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table, rows in (("eval_runs", runs), ("eval_results", results)):
                    for row in rows:
                        columns = ", ".join(row)
                        marks = ", ".join("?" * len(row))
                        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


def _rows(report: EvalReport) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, results = [], []
    regressions = {r.id for r in report.regressions}
    for side in (report.candidate, report.current):
        if side is None:
            continue
        lo, hi = side.ci95
        is_candidate = side is report.candidate
        verdict = report.verdict if is_candidate else ("pass" if side.meets_threshold else "fail")
        runs.append(
            {
                "run": report.run, "side": side.side, "ts": report.ts, "task": report.task, "tier": side.tier,
                "targets": orjson.dumps(list(side.targets)).decode(),
                "current": int(not is_candidate or report.candidate_is_current),
                "registry_hash": side.registry_hash, "registry_source": side.registry_source,
                "golden_source": report.golden_source, "threshold": report.threshold,
                "max_regressions": report.max_regressions, "repeats": report.repeats, "total": side.total,
                "passed": side.passed, "pass_rate": side.pass_rate, "ci_low": lo, "ci_high": hi,
                "regressions": len(regressions) if is_candidate and report.current is not None else None,
                "flipped": len(side.flipped), "verdict": verdict, "cost_usd": side.cost_usd,
                "judge_cost_usd": side.judge_cost_usd, "unpriced": side.unpriced, "reused": side.reused,
                "answers": side.answers, "p50_ms": side.p50_ms, "p95_ms": side.p95_ms,
            }
        )  # fmt: skip
        results += [
            {
                "run": report.run, "side": side.side, "case_id": c.id, "passed": int(c.passed),
                "repeats_passed": c.repeats_passed, "reason": c.reason, "answer": c.answer,
                "flipped": int(c.flipped), "regression": int(is_candidate and c.id in regressions),
                "latency_ms": c.latency_ms, "cost_usd": c.cost_usd,
            }
            for c in side.cases
        ]  # fmt: skip
    return runs, results
