"""Retention: rules.yaml's ``ledger: {retain_days}``, ``tiergate ledger prune``, the ``daily`` rollups.

Rows are written by the real ``LedgerWriter`` into real files, with arrival times days apart; pruning
runs as the server runs it (``Retention``, on the writer's thread) or as the CLI does. What must hold:
the audit's totals over ``requests`` plus ``daily`` are the same before and after, however often and in
however small batches it prunes, and while rows are being written; only whole days older than the
retention go; the file gets its space back.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from proxy import cli, rules
from proxy.errors import ConfigError
from proxy.ledger import daily, prune
from proxy.ledger.daily import Totals
from proxy.ledger.records import AttemptRecord, RequestRecord, new_id
from proxy.ledger.retention import Retention
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.registry import LedgerPolicy, Target
from proxy.usage import Usage
from tests import reference_audit
from tests.conftest import ProxyFactory, sdk, shipped_registry

DAY = 86_400.0
NOW = 1_767_225_600.0 + 12 * 3600  # 2026-01-01T12:00:00Z
MINI = Target("openai", "gpt-5.4-mini", {})
NANO = Target("openai", "gpt-5.4-nano", {})
HOUSE = Target("openai", "house-model-7b", {})  # no known price: unpriced
BIG = Target("openai", "gpt-5.5", {})


def _records(n: int, days: float, seed: int = 0, *, end: float = NOW) -> list[RequestRecord]:
    """``n`` varied finished requests arriving evenly over the ``days`` days before ``end``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = end - days * DAY + i * days * DAY / n
        target = rng.choice([MINI, NANO, HOUSE])
        record = RequestRecord(
            id=new_id(), ts=ts, task=rng.choice(["summary", "title_generation"]), task_source="header",
            tier="mid" if target is MINI else "small", requested_model="auto", stream=rng.random() < 0.3,
            status=200, latency_ms=rng.uniform(100, 900), target=target, baseline_tier="frontier", baseline=BIG,
            usage=Usage(rng.randint(10, 900), rng.randint(1, 300), cached_tokens=rng.choice([0, 0, 5])),
            upstream_ms=rng.uniform(90, 800), end_user=f"user{rng.randint(1, 30)}",
            eval_run="ev_1" if rng.random() < 0.1 else None,
        )  # fmt: skip
        record.attempts = [AttemptRecord(1, ts + 0.5, record.tier, target, 200, None, 400.0)]
        kind = rng.random()
        if kind < 0.05:
            record.status, record.error_type, record.usage = 502, "upstream_unreachable", None
            record.attempts = [AttemptRecord(1, ts + 0.5, record.tier, target, None, "upstream_unreachable", 9.0)]
        elif kind < 0.08:
            record.status, record.error_type, record.usage, record.stream = 499, "client_disconnected", None, True
            record.produced_output, record.streamed_text = True, "so"
            record.messages = [{"role": "user", "content": "hi"}]
        elif kind < 0.12:
            record.fallback = True
            record.attempts.insert(0, AttemptRecord(1, ts + 0.1, record.tier, NANO, 503, "server_error", 50.0))
            record.attempts[1].n = 2
        elif kind < 0.2:
            record.cache = rng.choice(["hit", "stale", "coalesced", "miss"])
        elif kind < 0.22:
            record.task, record.tier, record.target, record.attempts = "nope", None, None, []
            record.status, record.error_type, record.usage = 400, "unknown_task_type", None
            record.baseline = record.baseline_tier = None
        out.append(record)
    return out


def _pricer() -> Pricer:
    return Pricer({}, {"openai": "openai"})


async def _write(db: Path, records: Iterable[RequestRecord]) -> None:
    writer = LedgerWriter(str(db), _pricer())
    await writer.start()
    for record in records:
        writer.submit(record)
    await writer.close()
    assert writer.health()["queued"] == 0


def _totals(db: Path, include_eval: bool = True) -> Totals:
    return daily.totals(str(db), include_eval=include_eval)


def _assert_same(after: Totals, before: Totals) -> None:
    money = ("cost_usd", "baseline_cost_usd", "savings_usd", "cache_saved_usd")
    for name in Totals.__dataclass_fields__:
        a, b = getattr(after, name), getattr(before, name)
        if name in money and a is not None and b is not None:
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15), name
        else:
            assert a == b, name


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# --- rules.yaml ---------------------------------------------------------------------------------------


def _doc(ledger: Any) -> dict[str, Any]:
    return {
        "providers": {"openai": {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}},
        "tiers": {"mid": {"targets": ["openai::gpt-5.4-mini"]}},
        "tasks": {"summary": "mid"},
        "ledger": ledger,
    }


def test_retain_days_is_parsed_validated_and_frozen() -> None:
    assert rules.build(_doc({"retain_days": 90})).ledger.retain_days == 90
    assert rules.build(_doc(None)).ledger.retain_days is None
    assert rules.build(_doc({})).ledger.retain_days is None
    for bad in (0, -3, "90", 1.5, True, 36_501):
        with pytest.raises(ConfigError) as err:
            rules.build(_doc({"retain_days": bad}))
        assert str(err.value).startswith("ledger.retain_days: expected a whole number of days from 1 to 36,500")
    with pytest.raises(ConfigError, match=r"^ledger\.keep: unknown key \(allowed: retain_days\)"):
        rules.build(_doc({"keep": 3}))
    with pytest.raises(ConfigError, match=r"^ledger: expected a mapping"):
        rules.build(_doc(90))


def test_tiergate_check_says_a_bad_retention_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "providers: {openai: {type: openai, base_url: 'http://127.0.0.1:1/v1', api_key: k}}\n"
        "tiers: {mid: {targets: ['openai::gpt-5.4-mini']}}\ntasks: {summary: mid}\nledger: {retain_days: soon}\n"
    )
    assert cli.main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ledger.retain_days: expected a whole number of days" in err


# --- rollups ----------------------------------------------------------------------------------------


def test_pruning_keeps_the_audits_totals_and_rolls_up_whole_days_only(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    records = _records(3000, days=10)
    asyncio.run(_write(db, records))
    before, production = _totals(db), _totals(db, include_eval=False)
    assert before.errors and before.disconnects and before.fallbacks and before.unpriced and before.cached
    assert before.estimated and production.calls < before.calls
    report = prune.prune(str(db), 4, now=NOW, batch=97)
    cut = prune.cutoff(NOW, 4)
    assert report.before == "2025-12-28T00:00:00.000Z" and cut == 1766880000000
    gone = [r for r in records if r.ts * 1000 < cut]
    assert report.requests == len(gone) and report.steps == -(-len(gone) // 97)
    _assert_same(_totals(db), before)
    _assert_same(_totals(db, include_eval=False), production)
    # whole days only: the cut-off day, partly older than four days, is still all there
    kept = reference_audit.load(str(db), include_eval=True)
    assert len(kept) == len(records) - len(gone) and min(r["ts"] for r in kept) >= "2025-12-28T00:00:00.000Z"
    days = {d for (d,) in sqlite3.connect(db).execute("SELECT DISTINCT day FROM daily")}
    assert days == {f"2025-12-{d}" for d in range(22, 28)}
    # pruning again (the same cut-off, then a later one) counts nothing twice
    assert prune.prune(str(db), 4, now=NOW).requests == 0
    _assert_same(_totals(db), before)
    prune.prune(str(db), 1, now=NOW, batch=500)
    _assert_same(_totals(db), before)


def test_the_cut_off_is_a_millisecond_a_row_exactly_at_it_stays(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    cut = prune.cutoff(NOW, 4)
    records = _records(4, days=1)
    for record, ms in zip(records, (cut - DAY * 1000, cut - 1, cut, cut + 1), strict=True):
        record.ts = ms / 1000
        record.attempts = (
            [AttemptRecord(1, record.ts, record.tier, record.target, 200, None, 1.0)] if record.target else []
        )
    asyncio.run(_write(db, records))
    before = _totals(db)
    conn = sqlite3.connect(db)
    try:
        due = prune.due(conn, cut)
    finally:
        conn.close()
    assert (due.requests, due.first_day, due.last_day) == (2, "2025-12-27", "2025-12-27")
    report = prune.prune(str(db), 4, now=NOW)
    assert report.requests == 2
    kept = [r["ts"] for r in reference_audit.load(str(db), include_eval=True)]
    assert kept == ["2025-12-28T00:00:00.000Z", "2025-12-28T00:00:00.001Z"]
    _assert_same(_totals(db), before)


def test_a_daily_row_is_the_audit_of_its_group(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_write(db, _records(800, days=3, seed=5)))
    rows = reference_audit.load(str(db), include_eval=True)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["ts"][:10], row["task"], row["tier"] or "", row["provider"] or "", row["model"] or "",
               int(row["eval_run"] is not None))  # fmt: skip
        groups.setdefault(key, []).append(row)
    prune.prune(str(db), 1, now=NOW + 2 * DAY, batch=64)  # everything before today's day
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    got = {tuple(r)[:6]: r for r in conn.execute("SELECT * FROM daily")}
    conn.close()
    assert set(got) == set(groups)
    for key, members in groups.items():
        expected = Totals.of(reference_audit.summarize(members, "task").total)
        stored = Totals(**{name: got[key][name] for name in Totals.__dataclass_fields__})
        _assert_same(stored, expected)


def test_pruning_in_small_batches_while_the_writer_writes_loses_no_row(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    old, new = _records(2000, days=20, seed=1, end=NOW - 5 * DAY), _records(2000, days=2, seed=2)

    async def scenario() -> tuple[int, int]:
        writer = LedgerWriter(str(db), _pricer(), linger=0.001)
        await writer.start()
        for record in old[:1000]:
            writer.submit(record)
        retention = Retention(writer, 3, pause=0.0, batch=25, clock=lambda: NOW)
        passes = []
        # rows keep arriving (old and new ones) while retention steps between the writer's batches
        for i in range(0, 1000, 100):
            for record in [*old[1000 + i : 1100 + i], *new[2 * i : 2 * i + 200]]:
                writer.submit(record)
            passes.append(await retention.run_once())
            await asyncio.sleep(0)
        while writer.health()["queued"]:  # the last rows written, then one more pass
            await asyncio.sleep(0.005)
        passes.append(await retention.run_once())
        await writer.close()
        assert writer.health()["written"] == 4000 and writer.health()["dropped"] == 0
        return sum(p.requests for p in passes), sum(p.steps for p in passes)

    pruned, steps = asyncio.run(scenario())
    assert pruned == len(old) and steps >= len(old) // 25
    in_daily = _count(db, "SELECT sum(calls) FROM daily")
    assert in_daily == len(old) and _count(db, "SELECT count(*) FROM requests") == len(new)
    # the same rows written to ledgers never pruned
    asyncio.run(_write(tmp_path / "old.db", old))
    asyncio.run(_write(tmp_path / "new.db", new))
    _assert_same(_totals(db), _totals(tmp_path / "old.db") + _totals(tmp_path / "new.db"))


def test_pruning_gives_the_space_back(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_write(db, _records(6000, days=30, seed=3)))

    def size() -> tuple[int, int]:
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return db.stat().st_size, int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        finally:
            conn.close()

    full, _ = size()
    report = prune.prune(str(db), 2, now=NOW)
    small, free = size()
    assert free == 0 and report.requests > 5000
    assert small < full * 0.4, (full, small)  # what is left: 2 of 30 days, the rollups, the empty tables
    assert report.bytes_before - report.bytes_after > full * 0.5


def test_unused_dictionary_rows_are_dropped_and_writers_forget_their_ids(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def scenario() -> None:
        writer = LedgerWriter(str(db), _pricer())
        await writer.start()
        ancient = _records(50, days=1, seed=9, end=NOW - 40 * DAY)
        for record in ancient:
            record.end_user, record.requested_model = "gone-user", "an-old-model-name"
            writer.submit(record)
        while writer.health()["queued"]:
            await asyncio.sleep(0.01)
        # the writer now remembers those ids; retention drops the rows and then the dictionary rows
        done = await Retention(writer, 30, pause=0.0, clock=lambda: NOW).run_once()
        assert done.requests == 50 and done.dictionary_rows >= 2
        late = _records(5, days=0.1, seed=10)
        for record in late:
            record.end_user, record.requested_model = "gone-user", "an-old-model-name"
            writer.submit(record)
        await writer.close()

    asyncio.run(scenario())
    rows = reference_audit.load(str(db), include_eval=True)
    assert len(rows) == 5 and {(r["end_user"], r["requested_model"]) for r in rows} == {
        ("gone-user", "an-old-model-name")
    }
    assert _count(db, "SELECT count(*) FROM ledger_names WHERE name = 'gone-user'") == 1


# --- the CLI ----------------------------------------------------------------------------------------


def test_tiergate_ledger_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.db"
    end = time.time()
    asyncio.run(_write(db, _records(500, days=100, seed=4, end=end)))
    before = _totals(db)
    assert cli.main(["ledger", "prune", "--older-than", "30d", "--db", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Would roll up and delete ") and "Nothing was changed (--dry-run)." in out
    assert _count(db, "SELECT count(*) FROM requests") == 500 and _count(db, "SELECT count(*) FROM daily") == 0
    assert cli.main(["ledger", "prune", "--older-than", "4w", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Rolled up ") and "into daily and deleted them" in out and "given back" in out
    _assert_same(_totals(db), before)
    assert cli.main(["ledger", "prune", "--older-than", "4w", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("Nothing to prune")
    for argv, message in (
        (["--older-than", "0d"], "--older-than: expected days (90d) or weeks (12w), at least 1d, got '0d'"),
        (["--older-than", "soon"], "--older-than: expected days (90d) or weeks (12w)"),
        (["--older-than", "9d", "--db", str(tmp_path / "none.db")], "no ledger at"),
    ):
        assert cli.main(["ledger", "prune", *argv] + ([] if "--db" in argv else ["--db", str(db)])) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


async def test_a_server_with_retention_serves_and_writes_its_rows(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path
) -> None:
    registry = replace(shipped_registry(upstream_url), ledger=LedgerPolicy(retain_days=30))
    db = tmp_path / "ledger.db"
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url)
        await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        await client.close()
    assert _count(db, "SELECT count(*) FROM requests") == 1  # its retention pass (a minute in) never ran
