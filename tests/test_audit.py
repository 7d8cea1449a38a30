"""The workload audit and what-if re-tiering, against a hand-made ledger with hand-computed answers.

Prices in the fixture (USD per 1M tokens, the candidate registries' `prices:` overrides):
gpt-5.5 10 in / 40 out / 1 cached in, gpt-5.4-mini 1 / 4, gpt-5.4-nano 0.25 / 1. Each row's logged
cost_usd and baseline_cost_usd (frontier, gpt-5.5) below follow from them.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from proxy import rules
from proxy.cli import main
from proxy.demo import WORKLOAD, precompute, run_demo
from proxy.ledger import audit, report, whatif
from proxy.ledger.audit import Scope
from proxy.ledger.records import REQUEST_COLUMNS
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry
from tests import ledgers
from tests.conftest import RULES

approx = pytest.approx  # money sums: exact to the last few ulps, the literals are decimal

# id, ts, task, tier, provider, model, status, error_type, stream,
# prompt, completion, cached, usage_source, cost_usd, baseline_cost_usd, latency_ms, fallback
ROWS: list[tuple[Any, ...]] = [
    ("s1", "2026-11-01T10:00:00.000Z", "summary", "mid", "openai", "gpt-5.4-mini", 200, None, 0,
     1000, 500, 0, "upstream", 0.003, 0.03, 100.0, 0),
    ("s2", "2026-11-02T09:00:00.000Z", "summary", "mid", "openai", "gpt-5.4-mini", 200, None, 1,
     2000, 1000, 1000, "upstream", 0.006, 0.06, 200.0, 0),
    ("s3", "2026-11-02T11:00:00.000Z", "summary", "mid", "openai", "gpt-5.4-mini", 200, None, 0,
     400, 100, 0, "estimated", 0.0008, 0.008, 300.0, 0),
    ("s4", "2026-11-02T12:00:00.000Z", "summary", "mid", "openai", "gpt-5.4-mini", 502, "upstream_unreachable", 0,
     None, None, None, "none", None, None, 40.0, 0),
    ("t1", "2026-11-01T10:05:00.000Z", "title_generation", "small", "openai", "gpt-5.4-nano", 200, None, 0,
     100, 10, 0, "upstream", 0.000035, 0.0014, 20.0, 0),
    # served by a fallback target whose model (a fine-tune) has no known price
    ("t2", "2026-11-01T10:06:00.000Z", "title_generation", "small", "anthropic", "claude-haiku-ft", 200, None, 0,
     200, 20, 0, "upstream", None, 0.0028, 60.0, 1),
    ("t3", "2026-11-02T08:00:00.000Z", "title_generation", "small", "openai", "gpt-5.4-nano", 499,
     "client_disconnected", 1, 300, 5, 0, "estimated", 0.00008, 0.0032, 500.0, 0),
    ("a1", "2026-11-01T12:00:00.000Z", "agent", "frontier", "openai", "gpt-5.5", 200, None, 0,
     10000, 1000, 4000, "upstream", 0.104, 0.104, 1000.0, 0),
    ("a2", "2026-11-02T13:00:00.000Z", "agent", "frontier", "openai", "gpt-5.5", 200, None, 0,
     5000, 500, 0, "upstream", 0.07, 0.07, 2000.0, 0),
    # a stream that broke after its 200
    ("a3", "2026-11-02T14:00:00.000Z", "agent", "frontier", "openai", "gpt-5.5", 200, "upstream_error", 1,
     1000, 100, 0, "upstream", 0.014, 0.014, 700.0, 0),
]  # fmt: skip

CANDIDATE = """
providers:
  openai: {type: openai, base_url: "https://api.openai.com/v1"}
  anthropic: {type: anthropic, base_url: "https://api.anthropic.com"}
tiers:
  frontier: {targets: ["openai::gpt-5.5"]}
  mid: {targets: ["openai::gpt-5.4-mini", "anthropic::claude-sonnet-5-5"]}
  small: {targets: ["openai::gpt-5.4-nano", "anthropic::claude-haiku-5-5"]}
tasks:
  agent: frontier
  summary: small              # the move under test: mid -> small
  title_generation: small
"""
PRICES = """
prices:
  gpt-5.5: {input: 10, output: 40, cached_input: 1}
  gpt-5.4-mini: {input: 1, output: 4}
  gpt-5.4-nano: {input: 0.25, output: 1}
"""


def _row(spec: tuple[Any, ...]) -> dict[str, Any]:
    (id_, ts, task, tier, provider, model, status, error, stream,
     prompt, completion, cached, source, cost, baseline, latency, fallback) = spec  # fmt: skip
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    row.update(
        id=id_, ts=ts, task=task, task_source="header", tier=tier, provider=provider, model=model, status=status,
        error_type=error, stream=stream, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
        cache_write_tokens=None if prompt is None else 0, reasoning_tokens=None if prompt is None else 0,
        usage_source=source, cost_usd=cost, baseline_tier="frontier", baseline_model="gpt-5.5",
        baseline_cost_usd=baseline, latency_ms=latency, ttft_ms=latency / 4 if stream else None, attempts=1,
        fallback=fallback,
    )  # fmt: skip
    return row


def _write_ledger(path: Path, rows: list[dict[str, Any]]) -> None:
    """A ledger in the schema the server migrates to, with these rows as settled (written through the
    ``requests`` view, whose trigger stores what the writer would): their costs are the hand-computed ones above."""
    ledgers.write(path, rows)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    _write_ledger(path, [_row(r) for r in ROWS])
    return str(path)


def _what_if(db: str, candidate: Registry, scope: Scope | None = None) -> whatif.WhatIf:
    return whatif.what_if(db, candidate, Pricer(candidate.prices, price_ids(candidate)), scope)


def _candidate(text: str) -> Registry:
    return rules.loads(text, environ={}, source="candidate.yaml")


def _by_key(summary: audit.Summary) -> dict[str, audit.Group]:
    return {g.key: g for g in summary.groups}


# --- summarize ----------------------------------------------------------------------------------


def test_by_task_hand_computed(db: str) -> None:
    s = audit.summarize(db, "task")
    assert [g.key for g in s.groups] == ["agent", "summary", "title_generation"]  # cost, highest first
    g = _by_key(s)

    summary = g["summary"]  # s4 is an error before any token: no usage, $0, not "unpriced"
    assert (summary.calls, summary.call_share) == (4, 0.4)
    assert (summary.input_tokens, summary.output_tokens) == (3400, 1600)
    assert summary.cost_usd == approx(0.0098)
    assert summary.unpriced == 0
    assert summary.baseline_cost_usd == approx(0.098)
    assert summary.savings_usd == approx(0.0882)
    assert (summary.p50_ms, summary.p95_ms) == (100.0, 300.0)  # of 40, 100, 200, 300: ranks 2 and 4
    assert (summary.error_rate, summary.disconnect_rate, summary.fallback_rate) == (0.25, 0.0, 0.0)
    assert summary.estimated_share == 0.25

    title = g["title_generation"]  # t2 is unpriced: left out of cost and savings, never counted as $0
    assert (title.calls, title.call_share, title.input_tokens, title.output_tokens) == (3, 0.3, 600, 35)
    assert title.cost_usd == approx(0.000115)
    assert title.unpriced == 1
    assert title.baseline_cost_usd == approx(0.0074)
    assert title.savings_usd == approx(0.004485)  # (0.0014 - 0.000035) + (0.0032 - 0.00008)
    assert (title.p50_ms, title.p95_ms) == (60.0, 500.0)
    assert title.error_rate == 0.0  # the 499 is a disconnect, not an error
    assert title.disconnect_rate == title.fallback_rate == title.estimated_share == 1 / 3

    agent = g["agent"]  # a3: a 200 whose stream broke counts as an error
    assert (agent.calls, agent.input_tokens, agent.output_tokens) == (3, 16000, 1600)
    assert agent.cost_usd == approx(0.188) and agent.baseline_cost_usd == approx(0.188)
    assert agent.savings_usd == approx(0.0)
    assert (agent.p50_ms, agent.p95_ms, agent.error_rate) == (1000.0, 2000.0, 1 / 3)
    assert agent.cost_share == approx(0.188 / 0.197915)

    total = s.total
    assert (total.key, total.calls, total.call_share) == ("TOTAL", 10, 1.0)
    assert (total.input_tokens, total.output_tokens) == (20000, 3235)
    assert total.cost_usd == approx(0.197915)
    assert total.cost_share == 1.0
    assert total.unpriced == 1
    assert total.baseline_cost_usd == approx(0.2934)
    assert total.savings_usd == approx(0.092685)
    assert (total.p50_ms, total.p95_ms) == (200.0, 2000.0)  # 10 latencies: ranks 5 and 10
    assert (total.error_rate, total.disconnect_rate, total.fallback_rate, total.estimated_share) == (0.2, 0.1, 0.1, 0.2)
    assert sum(g.cost_share or 0 for g in s.groups) == approx(1.0)
    assert (s.first_ts, s.last_ts) == ("2026-11-01T10:00:00.000Z", "2026-11-02T14:00:00.000Z")


def test_by_day_hand_computed(db: str) -> None:
    s = audit.summarize(db, "day")
    assert [g.key for g in s.groups] == ["2026-11-01", "2026-11-02"]
    first, second = s.groups
    assert (first.calls, first.input_tokens, first.output_tokens, first.unpriced) == (4, 11300, 1530, 1)
    assert first.cost_usd == approx(0.107035)
    assert first.baseline_cost_usd == approx(0.1382)
    assert first.savings_usd == approx(0.028365)
    assert (first.p50_ms, first.p95_ms, first.error_rate, first.fallback_rate) == (60.0, 1000.0, 0.0, 0.25)

    assert (second.calls, second.input_tokens, second.output_tokens, second.unpriced) == (6, 8700, 1705, 0)
    assert second.cost_usd == approx(0.09088)
    assert second.baseline_cost_usd == approx(0.1552)
    assert second.savings_usd == approx(0.06432)
    assert (second.p50_ms, second.p95_ms) == (300.0, 2000.0)
    assert (second.error_rate, second.disconnect_rate, second.estimated_share) == (2 / 6, 1 / 6, 2 / 6)


def test_other_groupings_and_missing_values(db: str) -> None:
    models = _by_key(audit.summarize(db, "model"))
    haiku = models["anthropic::claude-haiku-ft"]  # only unpriced rows: no cost, no savings, not $0
    assert haiku.cost_usd is None and haiku.savings_usd is None and haiku.baseline_cost_usd == approx(0.0028)
    assert list(models)[-1] == "anthropic::claude-haiku-ft"  # unpriced groups sort last
    assert {g.key: g.calls for g in audit.summarize(db, "provider").groups} == {"openai": 9, "anthropic": 1}
    assert [g.key for g in audit.summarize(db, "tier").groups] == ["frontier", "mid", "small"]
    assert audit.percentile([], 50) is None and audit.percentile([7.0], 95) == 7.0
    with pytest.raises(audit.AuditError, match="--by: expected one of task, tier, model, provider, day"):
        audit.summarize(db, "week")


def _calls(db: str, since: int | None) -> int:
    return audit.summarize(db, "task", Scope(since)).total.calls


def test_since_filters_rows(db: str) -> None:
    assert _calls(db, audit.parse_since("2026-11-02")) == 6
    assert _calls(db, audit.parse_since("2026-11-02T12:30:00+01:00")) == 3  # 11:30 UTC
    now = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    last = audit.summarize(db, "task", Scope(audit.parse_since("90m", now)))  # a2 and a3
    assert (last.total.calls, last.first_ts, last.total.cost_usd) == (2, "2026-11-02T13:00:00.000Z", approx(0.084))
    assert _calls(db, audit.parse_since("28h", now)) == 10  # the bound 10:00:00.000 is included
    assert _calls(db, audit.parse_since("1d", now)) == 6
    assert audit.parse_since("7d", now) == 1_793_023_200_000  # 2026-10-26T14:00:00.000Z, in epoch ms
    for bad in ("yesterday", "2026-13-01", "99999999999d"):
        with pytest.raises(audit.AuditError, match=r"^--since: expected 24h, 90m, 7d, a date"):
            audit.parse_since(bad, now)


def test_until_is_an_exclusive_upper_bound(db: str) -> None:
    first_day = audit.summarize(db, "task", Scope(until=audit.parse_since("2026-11-02", flag="--until")))
    assert (first_day.total.calls, first_day.total.cost_usd) == (4, approx(0.107035))  # s1 t1 t2 a1
    assert first_day.last_ts == "2026-11-01T12:00:00.000Z"
    # s2 09:00, s3 11:00, s4 12:00; t3 08:00 before, a2 13:00 at the bound (left out)
    window = Scope(audit.parse_since("2026-11-02T09:00:00"), until=audit.parse_since("2026-11-02T13:00:00"))
    s = audit.summarize(db, "task", window)
    assert ([g.key for g in s.groups], s.total.calls, s.total.cost_usd) == (["summary"], 3, approx(0.0068))
    # the kept sums (ledger_runs, written by the first summarize) cut the same way: ask twice
    again = audit.summarize(db, "task", window)
    assert (again.total.calls, again.total.cost_usd) == (3, s.total.cost_usd)
    with pytest.raises(audit.AuditError, match=r"^--until: expected 24h"):
        audit.parse_since("soon", flag="--until")


# Rows around the bounds below, to the millisecond; the day before is whole, for the kept sums.
EDGE_TS = [
    "2026-11-01T12:00:00.000Z", "2026-11-02T00:00:00.000Z", "2026-11-02T09:59:59.999Z", "2026-11-02T10:00:00.000Z",
    "2026-11-02T10:00:00.001Z", "2026-11-02T10:00:00.500Z", "2026-11-02T10:00:00.999Z", "2026-11-02T10:00:01.000Z",
    "2026-11-02T23:59:59.999Z", "2026-11-03T00:00:00.000Z",
]  # fmt: skip
EDGE_BOUNDS = [
    None, "2026-11-02", "2026-11-02T10:00:00", "2026-11-02T10:00:00.001", "2026-11-02T10:00:00.0005",
    "2026-11-02T10:00:00.999999", "2026-11-02T11:00:00.500+01:00", "2026-11-02T10:00:01Z", "2026-11-03",
]  # fmt: skip


def _as_text(bound: str | None) -> str | None:
    """What the audit compared rows' ISO ts with, as text, before ts was indexed as ms (schema v9)."""
    if bound is None:
        return None
    moment = datetime.fromisoformat(bound)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("until", EDGE_BOUNDS)
def test_since_and_until_cut_at_the_millisecond_as_the_iso_text_did(tmp_path: Path, until: str | None) -> None:
    # A row exactly at --since is in, exactly at --until out; a sub-millisecond bound is its millisecond.
    path = tmp_path / "edges.db"
    rows = [_row(("s1", ts, *ROWS[0][2:])) for ts in EDGE_TS]
    ledgers.write(path, [dict(row, id=f"r{i}") for i, row in enumerate(rows)])
    for since in EDGE_BOUNDS:
        low, high = _as_text(since), _as_text(until)
        want = sum((low is None or ts >= low) and (high is None or ts < high) for ts in EDGE_TS)
        scope = Scope(audit.parse_since(since), until=audit.parse_since(until, flag="--until"))
        for refresh in (False, True):  # from the rows, then from the kept sums (ledger_runs) and cut days
            got = audit.summarize(str(path), "task", scope, refresh=refresh)
            assert got.total.calls == want, (since, until, refresh)
            inside = [ts for ts in EDGE_TS if (low is None or ts >= low) and (high is None or ts < high)]
            assert (got.first_ts, got.last_ts) == ((inside[0], inside[-1]) if inside else (None, None))


def test_a_bound_is_epoch_ms_to_the_millisecond() -> None:
    assert audit.parse_since("2026-11-02T10:00:00.001Z") == 1_793_613_600_001
    assert audit.parse_since("2026-11-02T10:00:00.0009Z") == 1_793_613_600_000  # dropped, as the ISO text dropped it
    assert audit.parse_since("2026-11-02T11:00:00.000+01:00") == 1_793_613_600_000
    assert audit.parse_since("1969-12-31T23:59:59.9995") == -1  # before 1970 too: floored, not rounded to 0


def test_task_and_model_filters(db: str) -> None:
    two = audit.summarize(db, "task", tasks=["agent", "summary"])
    assert (sorted(g.key for g in two.groups), two.total.calls) == (["agent", "summary"], 7)
    assert two.total.cost_usd == approx(0.188 + 0.0098)
    nano = audit.summarize(db, "task", models=["openai::gpt-5.4-nano"])  # t1, t3 (t2 is the fine-tune)
    assert (nano.total.calls, nano.total.cost_usd) == (2, approx(0.000115))
    assert audit.summarize(db, "model", models=["gpt-5.4-mini"]).total.calls == 4  # a bare model name
    assert audit.summarize(db, "task", tasks=["summary"], models=["gpt-5.5"]).total.calls == 0


def test_savings_share_cached_tokens_and_the_month(db: str) -> None:
    s = audit.summarize(db, "task")
    g = _by_key(s)
    assert g["summary"].savings_share == approx(0.0882 / 0.098)
    assert g["agent"].savings_share == approx(0.0)
    assert s.total.savings_share == approx(0.092685 / 0.2934)
    assert (g["agent"].cached_tokens, g["summary"].cached_tokens, s.total.cached_tokens) == (4000, 1000, 5000)
    # 10:00 on Nov 1 to 14:00 on Nov 2: 28 hours
    assert s.period_days == approx(28 / 24)
    assert s.per_month(s.total.cost_usd) == approx(0.197915 / (28 / 24) * 30)
    one = audit.summarize(db, "task", Scope(audit.parse_since("2026-11-02T13:00:00")))  # one hour: a day
    assert one.period_days == 1.0 and one.per_month(one.total.cost_usd) == approx(0.084 * 30)


def test_by_client(tmp_path: Path) -> None:
    rows = [_row(r) for r in ROWS]
    for row in rows:
        row["client"] = {"s1": "app-a", "s2": "app-a", "a1": "app-b"}.get(row["id"])
    path = tmp_path / "clients.db"
    _write_ledger(path, rows)
    s = audit.summarize(str(path), "client")
    g = _by_key(s)
    assert [k.key for k in s.groups] == ["app-b", "-", "app-a"]  # by cost
    assert (g["app-a"].calls, g["app-a"].cost_usd, g["app-a"].savings_usd) == (2, approx(0.009), approx(0.081))
    assert (g["app-b"].calls, g["app-b"].cost_usd) == (1, approx(0.104))
    assert g["-"].calls == 7
    table = report.render(s, "table")
    assert table.startswith("Workload by client: 10 calls") and "app-a" in table


# --- what-if ------------------------------------------------------------------------------------


def test_what_if_moving_summary_to_small(db: str) -> None:
    candidate = _candidate(CANDIDATE + PRICES)
    w = _what_if(db, candidate)
    assert w.source == "candidate.yaml"
    tasks = {c.task: c for c in w.tasks}
    assert list(tasks) == ["agent", "summary", "title_generation"]  # by current cost

    summary = tasks["summary"]
    assert (summary.calls, summary.current_tier, summary.current_model) == (4, "mid", "openai::gpt-5.4-mini")
    assert (summary.candidate_tier, summary.candidate_model) == ("small", "openai::gpt-5.4-nano")
    assert summary.current_cost_usd == approx(0.0098)
    # nano at 0.25 / 1: s1 750e-6 + s2 1500e-6 + s3 200e-6 (+ s4, no usage, $0)
    assert summary.candidate_cost_usd == approx(0.00245)
    assert summary.delta_usd == approx(-0.00735)
    assert summary.delta_ratio == approx(-0.75)
    assert (summary.unpriced, summary.approximate, summary.in_candidate) == (0, 1, True)  # s3 was estimated

    title = tasks["title_generation"]  # unchanged tier; t2 is now priced, but had no price as logged
    assert (title.current_model, title.candidate_model) == ("openai::gpt-5.4-nano", "openai::gpt-5.4-nano")
    assert title.current_cost_usd == approx(0.000115)
    assert title.candidate_cost_usd == approx(0.000185)
    assert title.delta_usd == approx(0.0)  # over t1 and t3, the calls priced on both sides
    assert (title.unpriced, title.approximate) == (1, 2)  # t2: anthropic tokens on openai; t3: estimated

    agent = tasks["agent"]  # 4000 cached tokens on a1 at the cached rate
    assert agent.candidate_cost_usd == approx(0.188) and agent.delta_usd == approx(0.0)

    total = w.total
    assert (total.calls, total.unpriced, total.approximate, total.in_candidate) == (10, 1, 3, True)
    assert total.current_cost_usd == approx(0.197915)
    assert total.candidate_cost_usd == approx(0.190635)
    assert total.delta_usd == approx(-0.00735)
    assert total.delta_ratio == approx(-0.00735 / 0.197915)


def test_what_if_task_missing_from_candidate_is_priced_as_logged(db: str) -> None:
    candidate = _candidate(CANDIDATE.replace("  title_generation: small\n", "") + PRICES)
    w = _what_if(db, candidate)
    title = next(c for c in w.tasks if c.task == "title_generation")
    assert (title.in_candidate, title.candidate_tier, title.candidate_model) == (False, None, None)
    assert title.current_cost_usd == title.candidate_cost_usd == approx(0.000115)
    assert title.delta_usd == approx(0.0) and title.unpriced == 1
    assert not w.total.in_candidate
    table = report.render(w, "table")
    assert "small gpt-5.4-nano (not in candidate)" in table
    assert "not in the candidate (priced as served):\n  title_generation (3 of 3)" in table


def test_what_if_with_genai_prices(db: str) -> None:
    # genai-prices' own numbers for gpt-5.4-nano: $0.20 in, $1.25 out, $0.02 cached input per 1M.
    per_million = PriceUsage(input_tokens=2_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000)
    assert float(calc_price(per_million, model_ref="gpt-5.4-nano", provider_id="openai").total_price) == 1.47
    candidate = _candidate(CANDIDATE)  # no overrides
    w = _what_if(db, candidate)
    summary = next(c for c in w.tasks if c.task == "summary")
    # s1 1000 in / 500 out: 200 + 625; s2 1000 uncached + 1000 cached in / 1000 out: 200 + 20 + 1250;
    # s3 400 in / 100 out: 80 + 125 (all in 1e-6 USD)
    assert summary.candidate_cost_usd == approx(0.0025)


# --- output -------------------------------------------------------------------------------------


def test_table_is_rounded_and_aligned(db: str) -> None:
    table = report.render(audit.summarize(db, "task"), "table")
    lines = table.splitlines()
    assert lines[0] == "Workload by task: 10 calls, 2026-11-01 10:00:00 to 2026-11-02 14:00:00 UTC"
    assert max(len(line) for line in lines) <= 120
    first = next(line for line in lines if line.startswith("1 "))
    assert first.split() == [
        "1", "agent", "3", "16,000", "4,000", "1,600", "$0.1880", "95.0%", "0", "$0.1880", "$0.0000", "0.0%"
    ]  # fmt: skip
    # small costs keep 3 significant digits: 0.000035 + 0.00008 (t2 is unpriced)
    third = next(line for line in lines if line.startswith("3 "))
    assert third.split()[6:12] == ["$0.000115", "0.1%", "1", "$0.00740", "$0.00448", "60.6%"]
    total = [line for line in lines if line.strip().startswith("TOTAL")]
    assert total[0].split() == [
        "TOTAL", "10", "20,000", "5,000", "3,235", "$0.1979", "100.0%", "1", "$0.2934", "$0.0927", "31.6%"
    ]  # fmt: skip
    assert total[1].split() == ["TOTAL", "10", "100.0%", "200.0", "2,000.0", "20.0%", "10.0%", "10.0%", "20.0%"]
    assert "unpriced: 1 of 10 calls had tokens but no known price;" in table
    # numbers are right-aligned, so every line of a grid (header, rules, rows, total) ends in the same column
    cost_lines = lines[lines.index("Cost") + 1 : lines.index("Traffic") - 1]
    assert len(cost_lines) == 7 and len({len(line) for line in cost_lines}) == 1


def test_csv_and_json_are_exact(db: str) -> None:
    s = audit.summarize(db, "day")
    parsed = list(csv.DictReader(io.StringIO(report.render(s, "csv"))))
    assert [r["day"] for r in parsed] == ["2026-11-01", "2026-11-02", "TOTAL"]
    assert float(parsed[2]["cost_usd"]) == s.total.cost_usd  # not rounded: the same float back
    assert float(parsed[1]["savings_usd"]) == s.groups[1].savings_usd
    assert float(parsed[1]["error_rate"]) == 2 / 6
    assert parsed[0]["input_tokens"] == "11300"

    doc = json.loads(report.render(s, "json"))
    assert (doc["by"], doc["from"], doc["to"]) == ("day", "2026-11-01T10:00:00.000Z", "2026-11-02T14:00:00.000Z")
    assert [r["day"] for r in doc["rows"]] == ["2026-11-01", "2026-11-02"]
    assert doc["total"]["cost_usd"] == s.total.cost_usd
    assert doc["rows"][1]["disconnect_rate"] == 1 / 6
    assert doc["rows"][0]["cost_share"] == s.groups[0].cost_share

    candidate = _candidate(CANDIDATE + PRICES)
    w = _what_if(db, candidate)
    what_if = json.loads(report.render(w, "json"))
    assert what_if["candidate"] == "candidate.yaml"
    assert what_if["total"]["delta_usd"] == w.total.delta_usd


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_table_csv_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--db", db]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Workload by task: 10 calls")
    assert "title_generation" in table and "$0.1979" in table

    assert main(["audit", "--db", db, "--by", "day", "--format", "csv", "--since", "2026-11-02"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["day"], r["calls"]) for r in parsed] == [("2026-11-02", "6"), ("TOTAL", "6")]

    assert main(["audit", "--db", db, "--by", "model", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"][-1]["model"] == "anthropic::claude-haiku-ft" and doc["rows"][-1]["cost_usd"] is None
    assert doc["period_days"] == 28 / 24 and doc["per_month"]["days"] == 30
    assert doc["per_month"]["cost_usd"] == doc["total"]["cost_usd"] / (28 / 24) * 30  # exact, not rounded
    assert doc["total"]["savings_share"] == doc["total"]["savings_usd"] / doc["total"]["baseline_cost_usd"]
    assert doc["total"]["cached_tokens"] == 5000


def test_cli_until_task_model_client(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--db", db, "--until", "2026-11-02", "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert parsed[-1]["calls"] == "4" and float(parsed[-1]["cost_usd"]) == approx(0.107035)
    assert main(["audit", "--db", db, "--task", "summary", "--task", "agent", "--by", "tier"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Workload by tier: 7 calls")
    assert "per 30 days at this rate (1.2 days, first call to last):" in table
    assert "%saved" in table and "cached in" in table
    assert main(["audit", "--db", db, "--model", "gpt-5.4-nano", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["calls"] == 2
    assert main(["audit", "--db", db, "--by", "client"]) == 0
    assert capsys.readouterr().out.startswith("Workload by client: 10 calls")


def test_cli_what_if(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "candidate.yaml"
    path.write_text(CANDIDATE + PRICES)
    assert main(["audit", "--db", db, "--what-if", str(path)]) == 0
    table = capsys.readouterr().out
    summary = next(line for line in table.splitlines() if line.startswith("summary"))
    assert summary.split() == [
        "summary", "4", "$0.00980", "$0.00245", "-$0.00735", "-75.0%", "mid", "gpt-5.4-mini", "->", "small", "gpt-5.4-nano"
    ]  # fmt: skip
    assert "approximate tokens (another provider type's tokenizer, or estimated):\n  summary (1 of 4), " in table
    assert max(len(line) for line in table.splitlines()[1:]) <= 110  # the title names the path

    assert main(["audit", "--db", db, "--what-if", str(path), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert parsed[-1]["task"] == "TOTAL" and float(parsed[-1]["delta_usd"]) == approx(-0.00735)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "{tmp}/nope.db"], "tiergate: no ledger at {tmp}/nope.db (tiergate serve writes one; "),
        (["--since", "soon"], "tiergate: --since: expected 24h, 90m, 7d, a date (2026-11-01)"),
        (["--format", "xml"], "tiergate: --format: expected one of table, csv, json, got 'xml'"),
        (
            ["--by", "week"],
            "tiergate: --by: expected one of task, tier, model, provider, day, registry, client, got 'week'",
        ),
        (["--what-if", "{tmp}/nope.yaml"], "tiergate: cannot read {tmp}/nope.yaml"),
        (["--what-if", str(RULES), "--by", "tier"], "tiergate: --what-if compares per task; drop --by"),
    ],
)
def test_cli_mistakes_are_one_line_exit_2(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in argv]
    assert main(["audit", "--db", db, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(message.format(tmp=tmp_path))


def test_cli_reads_tiergate_db(db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TIERGATE_DB", db)
    assert main(["audit", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["calls"] == 10


def test_not_a_ledger_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    assert main(["audit", "--db", str(path)]) == 2
    assert capsys.readouterr().err == f"tiergate: cannot read the ledger {path}: no such table: requests\n"


def test_empty_period(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--db", db, "--since", "2030-01-01"]) == 0
    assert capsys.readouterr().out == "No requests in the ledger for this period.\n"


async def test_demo_ends_with_the_audit_of_its_own_workload() -> None:
    out = io.StringIO()
    assert await run_demo(str(RULES), out=out) == 0
    before, audit_part = out.getvalue().split("$ tiergate audit --by task\n", 1)
    audit_part, recommended = audit_part.split("$ tiergate audit --recommend\n", 1)
    lines = audit_part.splitlines()
    calls = len(WORKLOAD) + precompute.LEDGER_ROWS
    assert lines[0].startswith(f"Workload by task: {calls} calls, ")
    ranked = [line.split()[1] for line in lines if line[:1].isdigit() and "eval calls left out" not in line]
    # the demo's 9 tasks (8 chat, one embedding) in both tables; the untagged call ran as agent, the most
    # expensive task, and the embedding of a document is the cheapest
    assert len(ranked) == 18 and set(ranked) == {
        "title_generation", "classification", "extraction", "relevance", "summary", "ad_copy", "narrative", "agent",
        "retrieval",
    } and ranked[0] == "agent" and ranked[8] == "retrieval"  # fmt: skip
    total = next(line for line in lines if line.strip().startswith("TOTAL")).split()
    assert total[:2] == ["TOTAL", str(calls)] and total[5].startswith("$")
    # the precompute act: three of the narrative's reads and the repeated summary came from the store
    cost_header = next(line for line in lines if line.startswith("#  task"))
    assert "cached" in cost_header and "cache saved" in cost_header
    assert total[11] == "4" and total[12].startswith("$")
    assert "unpriced" in audit_part and "no known price" not in audit_part  # every shipped model is priced
    # the evals on the simulated models: summary may move to small, narrative may not; the audit says so
    assert "-> PASS (pass rate 91.7% >= threshold 90.0%, 1 regression <= 1)" in before
    assert "narrative on small: 6/12 pass" in before and "-> FAIL" in before
    assert recommended.splitlines()[3].split()[:3] == ["summary", "mid", "small"]
