"""The SQL audit gives today's answers: every grouping, the what-if, --recommend and --classifier, held to
the Python audit they replaced (``tests/reference_audit.py``, which loads every row) on generated ledgers
and on test_audit's hand-made one; exact percentiles whatever the sample says; the daily rollup.

Money is compared to the last few ulps (SQL and Python add the same values in another order); counts,
keys, order, percentiles (values read from the ledger, not computed) exactly.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from proxy import rules
from proxy.classify import agreement
from proxy.evals import candidates
from proxy.evals.recommend import recommend
from proxy.evals.report import CaseResult, EvalReport, SideResult
from proxy.evals.store import EvalStore
from proxy.ledger import audit, materialize, ranks, report, runs, whatif
from proxy.ledger.audit import Scope
from proxy.ledger.records import iso
from proxy.ledger.snapshot import snapshot
from proxy.pricing import Pricer, price_ids
from proxy.registry import Registry
from tests import ledgers
from tests import reference_audit as reference
from tests.test_audit import ROWS, _row, _write_ledger

START = 1_793_000_000.0  # 2026-10-27T06:13:20Z
SINCES = [None, "2026-10-28T00:00:00.000Z", "2026-10-29T13:37:00.000Z"]


def at(bound: str | None) -> int | None:
    """A bound written as the views show ts, as the audit takes it: epoch ms (the reference reads the text)."""
    return audit.parse_since(bound)


def text(bound: int | None) -> str | None:
    """A scope's bound as the reference compares it, with the views' ISO ts."""
    return None if bound is None else iso(bound / 1000)


def same(ours: Any, theirs: Any, path: str = "") -> None:
    """Field by field: floats to the last ulps, all else exactly."""
    if is_dataclass(ours) and not isinstance(ours, type):
        assert type(ours) is type(theirs), path
        for f in fields(ours):
            same(getattr(ours, f.name), getattr(theirs, f.name), f"{path}.{f.name}")
    elif isinstance(ours, tuple | list):
        assert len(ours) == len(theirs), f"{path}: {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            same(ours[key], theirs[key], f"{path}[{key}]")
    elif isinstance(ours, float) and isinstance(theirs, float) and not path.endswith(("p50_ms", "p95_ms")):
        assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


# Rows no writer makes but a ledger may hold (older versions, hand edits): token parts Usage would clamp.
ODD_ROWS = [
    {"id": f"odd{i}", "ts": ts, "task": "summary", "tier": "mid", "provider": "openai", "model": "gpt-5.4-mini",
     "usage_source": "upstream", "prompt_tokens": p, "completion_tokens": 10, "cached_tokens": c,
     "cache_write_tokens": w, "reasoning_tokens": 0, "cost_usd": 0.001, "baseline_cost_usd": 0.01, "latency_ms": 500.0}
    for i, (ts, p, c, w) in enumerate([("2026-10-28T10:00:00.000Z", 100, 150, 0), ("2026-10-28T11:00:00.000Z", 100, 60, 60),
                                       ("2026-10-29T10:00:00.000Z", None, None, None)])
]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    # More latencies than ranks.SMALL, so the percentiles of the TOTAL and of the larger groups would be
    # sampled windows, not a whole-group read.
    path = tmp_path_factory.mktemp("sql") / "generated.db"
    ledgers.generated(path, 30_000, seed=14, days=4, start=START)
    ledgers.write(path, ODD_ROWS)
    return str(path)


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sql") / "hand.db"
    _write_ledger(path, [_row(r) for r in ROWS])
    return str(path)


Loader = Callable[[str, "str | None", bool], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def loaded() -> Loader:
    """The reference's rows of a ledger from a bound, each read once (the module's ledgers do not change)."""
    cache: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def rows(db: str, since: str | None, include_eval: bool) -> list[dict[str, Any]]:
        if (db, since) not in cache:
            cache[db, since] = reference.load(db, since, include_eval=True)
        return [r for r in cache[db, since] if include_eval or r["eval_run"] is None]

    return rows


def _reference_summary(loaded: Loader, db: str, by: str, scope: Scope) -> audit.Summary:
    rows = loaded(db, text(scope.since), True)
    kept = loaded(db, text(scope.since), scope.include_eval)
    s = reference.summarize(kept, by)
    return replace(s, eval_left_out=0 if scope.include_eval else len(rows) - len(kept))


@pytest.mark.parametrize("since", SINCES)
@pytest.mark.parametrize("by", audit.GROUPINGS)
def test_every_grouping_matches_the_python_audit(loaded: Loader, generated: str, by: str, since: str | None) -> None:
    for include_eval in (False, True):
        scope = Scope(at(since), include_eval)
        same(audit.summarize(generated, by, scope), _reference_summary(loaded, generated, by, scope), f"{by}")


@pytest.mark.parametrize("by", audit.GROUPINGS)
def test_the_hand_made_ledger_too(loaded: Loader, hand_made: str, by: str) -> None:
    for since in (None, "2026-11-02T00:00:00.000Z", "2026-11-02T12:30:00.000Z", "2030-01-01"):
        scope = Scope(at(since))
        same(audit.summarize(hand_made, by, scope), _reference_summary(loaded, hand_made, by, scope), by)


UNTILS = [("2026-10-29T00:00:00.000Z", None), ("2026-10-30T07:00:00.000Z", "2026-10-28T13:37:00.000Z"),
          ("2026-10-28T20:00:00.000Z", "2026-10-28T13:37:00.000Z"), ("2026-10-29T13:37:00.000Z", "2026-10-29T00:00:00.000Z")]  # fmt: skip


@pytest.mark.parametrize(("until", "since"), UNTILS)
@pytest.mark.parametrize("by", ["task", "day", "client"])
def test_until_matches_the_python_audit(generated: str, by: str, until: str, since: str | None) -> None:
    # until at a midnight, cutting a later day than since, cutting since's own day, at since's midnight
    audit.summarize(generated, by)  # the kept sums are written: the cut days must be read as rows
    scope = Scope(at(since), until=at(until))
    rows = reference.load(generated, since, include_eval=True, until=until)
    kept = [r for r in rows if r["eval_run"] is None]
    theirs = replace(reference.summarize(kept, by), eval_left_out=len(rows) - len(kept))
    same(audit.summarize(generated, by, scope), theirs, by)


def test_the_tables_are_the_same(loaded: Loader, generated: str) -> None:
    # (CSV and JSON carry the exact sums, which differ in their last digits: compared above.)
    for by in audit.GROUPINGS:
        ours, theirs = audit.summarize(generated, by), _reference_summary(loaded, generated, by, Scope())
        assert report.render(ours, "table", ours.eval_left_out) == report.render(theirs, "table", theirs.eval_left_out)


CANDIDATES = {
    "moves": ledgers.REGISTRY.replace("  summary: mid", "  summary: small").replace("  agent: frontier", "  agent: mid"),
    "unchanged": ledgers.REGISTRY,
    "drops a task": ledgers.REGISTRY.replace("  narrative: mid\n", ""),
    # anthropic first: the logged openai calls' tokens are approximate on it; no overrides: the served
    # fine-tune and gpt-5.4-mini fall back to their logged cost
    "other provider": ledgers.REGISTRY.replace('"openai::gpt-5.4-nano", "anthropic::claude-haiku-5-5"',
                                               '"anthropic::claude-haiku-5-5", "openai::gpt-5.4-nano"')
    .split("prices:")[0],
    "prices the fine-tune": ledgers.REGISTRY + "  ft:acme-7: {input: 0.3, output: 1.2}\n  ft:unknown-9: {input: 1, output: 2}\n",
}  # fmt: skip


@pytest.mark.parametrize("name", CANDIDATES)
def test_what_if_matches_the_python_audit(loaded: Loader, generated: str, name: str) -> None:
    candidate = rules.loads(CANDIDATES[name], environ={}, source=f"{name}.yaml")
    for scope in (Scope(), Scope(at(SINCES[2]), include_eval=True)):
        ours = whatif.what_if(generated, candidate, Pricer(candidate.prices, price_ids(candidate)), scope)
        rows = loaded(generated, text(scope.since), scope.include_eval)
        theirs = reference.what_if(rows, candidate, Pricer(candidate.prices, price_ids(candidate)))
        same(replace(ours, eval_left_out=0), theirs, name)


def test_the_what_if_reaches_past_price_tiers_and_clamped_counts(generated: str) -> None:
    """The generated traffic has runs that cannot be priced from their sums alone: the test above covers them."""
    with snapshot(generated) as snap:
        found = runs.scan(snap, Scope(), tokens=True)
    assert any(run.odd for run in found)
    assert any(run.model == "gpt-5.5" and run.largest_prompt > 272_000 for run in found)
    assert any(run.model == "gpt-5.5" and 0 < run.largest_prompt <= 272_000 for run in found)


def _record_eval(db: str, task: str, tier: str, passed: int, ts: str) -> None:
    cases = tuple(CaseResult(f"c{i}", i < passed, "r", "a", 1, 1, 10.0, 0.0) for i in range(10))
    side = SideResult("candidate", tier, ("openai::x",), "h", "s", 0.8, cases, 0.0, None, 0, 10, 0, 1.0, 2.0)
    store = EvalStore(db)
    try:
        store.record(EvalReport(f"run-{task}-{tier}-{ts}", ts, task, 0.8, None, 1, "g", side, None))
    finally:
        store.close()


def _reference_recommend(db: str, registry: Registry, until: str | None = None) -> list[tuple[str, str, int, float]]:
    rows = [r for r in reference.load(db, until=until) if r["eval_run"] is None]
    found = []
    with sqlite3.connect(db) as conn:
        latest = conn.execute(
            "SELECT task, tier, verdict, MAX(ts) FROM eval_runs WHERE side = 'candidate' GROUP BY task, tier"
        ).fetchall()
    for task, tier, verdict, _ in latest:
        if verdict != "pass" or tier == registry.tasks[task].tier:
            continue
        candidate = candidates.with_tier(registry, task, tier)
        traffic = [r for r in rows if r["task"] == task]
        change = reference.what_if(traffic, candidate, Pricer(candidate.prices, price_ids(candidate))).total
        if change.delta_usd is not None and change.delta_usd < 0:
            found.append((task, tier, change.calls, -change.delta_usd))
    return sorted(found, key=lambda r: -r[3])


def test_recommend_matches_the_python_audit(tmp_path: Path) -> None:
    db = str(tmp_path / "recommend.db")
    ledgers.generated(db, 3000, seed=7, days=2, start=START)
    _record_eval(db, "summary", "small", 10, "2026-10-28T00:00:00.000Z")
    _record_eval(db, "narrative", "small", 3, "2026-10-28T00:00:00.000Z")  # failed: not recommended
    _record_eval(db, "agent", "mid", 9, "2026-10-28T00:00:00.000Z")
    _record_eval(db, "agent", "mid", 2, "2026-10-28T01:00:00.000Z")  # the latest failed: not recommended
    registry = ledgers.registry()
    ours = [(r.task, r.tier, r.calls, r.saving_usd) for r in recommend(db, registry)]
    theirs = _reference_recommend(db, registry)
    assert [r[:3] for r in ours] == [r[:3] for r in theirs] == [("summary", "small", theirs[0][2])]
    assert ours[0][3] == pytest.approx(theirs[0][3], rel=1e-9)
    # --until: the traffic before it (the median row's time: about half the rows)
    with sqlite3.connect(db) as conn:
        (until,) = conn.execute(
            "SELECT ts FROM requests ORDER BY ts LIMIT 1 OFFSET (SELECT count(*) / 2 FROM requests)"
        ).fetchone()
    bounded = [(r.task, r.tier, r.calls, r.saving_usd) for r in recommend(db, registry, until=until)]
    expected = _reference_recommend(db, registry, until)
    assert [r[:3] for r in bounded] == [r[:3] for r in expected] and 0 < bounded[0][2] < ours[0][2]
    assert bounded[0][3] == pytest.approx(expected[0][3], rel=1e-9)


@pytest.mark.parametrize("by", agreement.PERIODS)
def test_the_classifier_report_matches_the_python_audit(generated: str, by: str) -> None:
    for since in SINCES:
        for include_eval in (False, True):
            ours = agreement.summarize(generated, Scope(at(since), include_eval), by)
            theirs = reference.agreement_summarize(
                reference.agreement_load(generated, since, include_eval=include_eval), by
            )
            same(ours, theirs, by)
    for until, since in UNTILS:
        ours = agreement.summarize(generated, Scope(at(since), until=at(until)), by)
        theirs = reference.agreement_summarize(reference.agreement_load(generated, since, until=until), by)
        same(ours, theirs, by)


# --- percentiles ---------------------------------------------------------------------------------


def test_percentiles_are_exact_when_read_whole_and_close_when_estimated(generated: str) -> None:
    """Small scopes and small groups are read whole (exact); a large group of a large scope is estimated
    from its 1-in-16 sample, and flagged."""
    ps = (1, 50, 95, 100)
    with snapshot(generated) as snap:
        found = [run for run in runs.scan(snap, Scope(), sample=True) if not run.is_eval]
        groups = {"all": found, "routed": [run for run in found if run.tier is not None],
                  "one": [found[0]]}  # fmt: skip
        every = runs.latencies(snap, Scope())
        truth = {}
        for key, members in groups.items():
            values = sorted(v / 1000.0 for run in members for v in every.get(run.key, ()))
            truth[key] = tuple(values[ranks.nearest_rank(p, len(values)) - 1] for p in ps)
        exact = ranks.percentiles(snap, Scope(), groups, ps)
        assert {k: (v.values, v.estimated) for k, v in exact.items()} == {k: (t, False) for k, t in truth.items()}
        # as if the ledger were large: groups past ``small`` estimated, the others still exact
        small = len(groups["one"][0].sample or "") and groups["one"][0].latencies
        sampled = ranks.percentiles(snap, Scope(), groups, ps, exact_rows=0, small=small)
    assert sampled["one"] == exact["one"]
    for key in ("all", "routed"):
        assert sampled[key].estimated
        values = sorted(v / 1000.0 for run in groups[key] for v in every.get(run.key, ()))
        for p, got in zip(ps[1:3], sampled[key].values[1:3], strict=True):
            # within two percent of rank of the true percentile
            rank = sum(v <= got for v in values) / len(values)
            assert abs(rank - p / 100) < 0.02, (key, p, rank)


def test_nearest_rank() -> None:
    assert [ranks.nearest_rank(50, n) for n in (1, 2, 3, 4, 10)] == [1, 1, 2, 2, 5]
    assert [ranks.nearest_rank(95, n) for n in (1, 10, 20, 21)] == [1, 10, 19, 20]
    assert audit.percentile([], 50) is None and audit.percentile([3.0, 1.0, 2.0], 50) == 2.0


# --- the daily rollup ----------------------------------------------------------------------------

# day, task, tier, provider, model, eval, calls, errors, disconnects, fallbacks, estimated, unpriced, cached,
# prompt, completion, cost, baseline, savings, cache saved
DAYS = [
    ("2026-10-20", "summary", "mid", "openai", "gpt-5.4-mini", 0, 100, 4, 2, 3, 1, 0, 10, 50_000, 9_000, 0.5, 2.0, 1.4, 0.1),
    ("2026-10-20", "support", "tuned", "openai", "ft:acme-7", 0, 40, 0, 0, 0, 0, 40, 0, 8_000, 800, None, 0.2, None, None),
    ("2026-10-21", "-", "", "", "", 0, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, None),
    ("2026-10-21", "summary", "mid", "openai", "gpt-5.4-mini", 1, 30, 0, 0, 0, 0, 0, 0, 3_000, 300, 0.03, 0.3, 0.27, None),
]  # fmt: skip


@pytest.fixture
def rolled_up(tmp_path: Path, hand_made: str) -> str:
    """test_audit's ledger, with days before it rolled up into its ``daily`` table (as retention fills it)."""
    path = tmp_path / "rolled.db"
    path.write_bytes(Path(hand_made).read_bytes())
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO daily VALUES ({', '.join('?' * 19)})", DAYS)
    return str(path)


def test_rolled_up_days_count_in_every_column_but_the_percentiles(rolled_up: str, hand_made: str) -> None:
    s = audit.summarize(rolled_up, "task")
    kept = audit.summarize(hand_made, "task")
    assert (s.rolled_up, s.eval_left_out) == (145, 30)  # the eval day is left out, and said
    assert (s.total.calls, s.first_ts, s.last_ts) == (155, "2026-10-20T00:00:00.000Z", kept.last_ts)
    summary, kept_summary = (next(g for g in x.groups if g.key == "summary") for x in (s, kept))
    assert summary.calls == kept_summary.calls + 100
    assert (summary.input_tokens, summary.output_tokens) == (
        kept_summary.input_tokens + 50_000,
        kept_summary.output_tokens + 9_000,
    )
    assert summary.cost_usd == pytest.approx(kept_summary.cost_usd + 0.5)  # type: ignore[operator]
    assert summary.savings_usd == pytest.approx(kept_summary.savings_usd + 1.4)  # type: ignore[operator]
    assert (summary.cached, summary.cache_saved_usd) == (10, pytest.approx(0.1))
    assert summary.error_rate == pytest.approx((1 + 4) / 104) and summary.fallback_rate == pytest.approx(3 / 104)
    assert (summary.p50_ms, summary.p95_ms) == (kept_summary.p50_ms, kept_summary.p95_ms)  # the kept rows' only
    support = next(g for g in s.groups if g.key == "support")  # only unpriced calls: no cost, not $0
    assert (support.cost_usd, support.unpriced, support.savings_usd, support.p50_ms) == (None, 40, None, None)
    assert next(g for g in s.groups if g.key == "-").error_rate == 1.0  # failed before routing: '' keys are '-'
    assert s.total.unpriced == kept.total.unpriced + 40
    assert s.total.cost_usd == pytest.approx(kept.total.cost_usd + 0.5)  # type: ignore[operator]
    assert (s.total.p50_ms, s.total.p95_ms) == (kept.total.p50_ms, kept.total.p95_ms)
    assert audit.summarize(rolled_up, "task", Scope(include_eval=True)).total.calls == 185
    models = {g.key: g.calls for g in audit.summarize(rolled_up, "model").groups}
    assert models["openai::gpt-5.4-mini"] == 104 and models["openai::ft:acme-7"] == 40 and models["-"] == 5
    assert {g.key: g.calls for g in audit.summarize(rolled_up, "day").groups}["2026-10-20"] == 140


def test_rolled_up_days_are_said_and_bounded_by_since(rolled_up: str) -> None:
    table = report.render(s := audit.summarize(rolled_up, "task"), "table", s.eval_left_out)
    assert "rolled up: 145 calls are counted from the daily rollup" in table
    assert "p50 and p95 cover only the 10 calls still in `requests`." in table
    assert report.render(s, "json").count('"rolled_up_calls": 145') == 1
    assert audit.summarize(rolled_up, "task", Scope(at("2026-10-21T00:00:00.000Z"))).rolled_up == 5  # from its midnight
    assert (
        audit.summarize(rolled_up, "task", Scope(at("2026-10-20T00:00:01.000Z"))).rolled_up == 5
    )  # a day counts whole
    assert audit.summarize(rolled_up, "task", Scope(at("2026-11-01"))).rolled_up == 0


def test_the_what_if_says_what_it_cannot_reprice(rolled_up: str) -> None:
    candidate = rules.loads(ledgers.REGISTRY, environ={}, source="c.yaml")
    w = whatif.what_if(rolled_up, candidate, Pricer(candidate.prices, price_ids(candidate)))
    assert (w.rolled_up, w.total.calls) == (145, 10)
    table = report.render(w, "table")
    assert "rolled up (left out: the daily rollup keeps no token counts to price):\n  145 calls" in table


# --- the snapshot ----------------------------------------------------------------------------------


def test_every_connection_of_a_snapshot_reads_the_same_snapshot(tmp_path: Path) -> None:
    """The scan spreads its days over several connections: none of them sees a row written after the
    snapshot was taken, and one connection or four find the same runs."""
    db = str(tmp_path / "snap.db")
    ledgers.generated(db, 2000, seed=3, days=6, start=START)
    with snapshot(db, connections=1) as one:
        alone = runs.scan(one, Scope())
    with snapshot(db, connections=4) as snap:
        later = [{"id": f"late{i}", "ts": f"2026-10-{27 + i % 5}T12:00:00.000Z", "task": "summary"} for i in range(60)]
        ledgers.write(db, later)  # committed while the snapshot is open
        assert runs.scan(snap, Scope()) == alone
        assert sum(run.calls for run in alone) == 2000
    with snapshot(db, connections=4) as snap:
        assert sum(run.calls for run in runs.scan(snap, Scope())) == 2060


def test_ties_go_to_what_was_seen_first(tmp_path: Path) -> None:
    """The most frequent tier and model of a task, and a task's most frequent wrong guess: on a tie, the
    one the oldest rows have, as counting the rows oldest first did (rows written newest first here)."""
    rows = []
    for i, (ts, tier, model, guess) in enumerate([
        ("2026-11-02T10:00:00.000Z", "mid", "gpt-5.4-mini", "narrative"),
        ("2026-11-02T09:00:00.000Z", "mid", "gpt-5.4-mini", "narrative"),
        ("2026-11-01T10:00:00.000Z", "small", "gpt-5.4-nano", "title_generation"),
        ("2026-11-01T09:00:00.000Z", "small", "gpt-5.4-nano", "title_generation"),
    ]):  # fmt: skip
        rows.append({"id": f"t{i}", "ts": ts, "task": "summary", "tier": tier, "provider": "openai", "model": model,
                     "task_predicted": guess, "latency_ms": 10.0})  # fmt: skip
    db = str(tmp_path / "ties.db")
    ledgers.write(db, rows)
    candidate = ledgers.registry()
    [change] = whatif.what_if(db, candidate, Pricer(candidate.prices, price_ids(candidate))).tasks
    assert (change.current_tier, change.current_model) == ("small", "openai::gpt-5.4-nano")
    [summary] = agreement.summarize(db).tasks
    assert (summary.miss, summary.miss_calls) == ("title_generation", 2)
    theirs = reference.agreement_summarize(reference.agreement_load(db), "day").tasks[0]
    assert (theirs.miss, theirs.miss_calls) == (summary.miss, summary.miss_calls)


# --- the kept sums (ledger_runs) -------------------------------------------------------------------


def _copy(source: str, to: Path) -> str:
    with sqlite3.connect(source) as src, sqlite3.connect(to) as dst:
        src.backup(dst)
    return str(to)


def test_the_audit_is_the_same_from_kept_sums_from_rows_and_from_both(generated: str, tmp_path: Path) -> None:
    """``ledger_runs`` is a cache of sums: summed through every row, through half of them (the rest read
    as rows), or never (read as rows), every line is the same."""
    with snapshot(generated):
        pass  # the fixture, summed through its last row
    raw = _copy(generated, tmp_path / "raw.db")
    half = _copy(generated, tmp_path / "half.db")
    with sqlite3.connect(raw) as conn:
        conn.execute("DELETE FROM ledger_runs")
        conn.execute("DELETE FROM ledger_meta WHERE key = 'runs_through'")
    with sqlite3.connect(half) as conn:
        conn.execute("DELETE FROM ledger_runs")
        conn.execute("DELETE FROM ledger_meta WHERE key = 'runs_through'")
        (rows,) = conn.execute("SELECT count(*) FROM ledger_requests").fetchone()
    conn = sqlite3.connect(half, isolation_level=None)
    assert materialize.refresh(conn, limit=rows // 2) == rows // 2
    conn.close()
    for by in audit.GROUPINGS:
        for since in SINCES:
            for include_eval in (False, True):
                scope = Scope(at(since), include_eval)
                want = audit.summarize(generated, by, scope)
                for other in (raw, half):  # read as they are: not summed first
                    same(audit.summarize(other, by, scope, refresh=False), want, f"{other} {by} {since}")
    for other, through in ((raw, 0), (half, rows // 2)):
        with snapshot(other, refresh=False) as snap:
            assert materialize.through(snap.conn) == through
