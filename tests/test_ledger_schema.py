"""The ledger's layout (schema v9): the ``requests`` and ``attempts`` views show what the tables of v6 held.

A v6 file (its rows as its writer wrote them) and a v8 file (ts indexed by its ISO text) are migrated and
read back through the views unchanged; rows written by today's writer read back as the v6 writer would
have written them; plain-SQL inserts into the views still work; ts is indexed as the integer it is.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.classify.features import RUN_SEPARATOR, decode, encode
from proxy.ledger import runs
from proxy.ledger.records import REQUEST_COLUMNS, AttemptRecord, RequestRecord, iso, new_id
from proxy.ledger.schema import MIGRATIONS, open_ledger, statements
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.registry import Target
from proxy.usage import Usage

SERVED = Target("openai", "gpt-5.4-mini", {})
FALLBACK = Target("anthropic", "claude-sonnet-5-5", {})
BASELINE = Target("openai", "gpt-5.5", {})
ATTEMPT_COLUMNS = ("id", "request", "n", "ts", "tier", "provider", "model", "status", "error_type", "latency_ms")


def _v6_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    row.update(task_source="header", stream=0, status=200, usage_source="none", attempts=0, fallback=0)
    row.update(values)
    return row


V6_COLUMNS = REQUEST_COLUMNS[: REQUEST_COLUMNS.index("registry")]  # what v6 had
V6_REQUESTS = [
    _v6_row(id="a" * 24, ts="2026-11-01T08:00:00.125Z", request_id="req_" + "a" * 24, task="summary", tier="mid",
            requested_model="auto", model="gpt-5.4-mini", provider="openai", prompt_tokens=120, completion_tokens=40,
            cached_tokens=0, cache_write_tokens=0, reasoning_tokens=0, usage_source="upstream", cost_usd=0.00027,
            baseline_tier="frontier", baseline_model="gpt-5.5", baseline_cost_usd=0.0018,
            price_source="genai-prices 0.2.3", latency_ms=812.345, upstream_ms=811.0, overhead_ms=1.345, attempts=1,
            client="key:0123456789ab", end_user="u1", task_predicted="summary", features=encode([3, 90, 4000])),
    _v6_row(id="b" * 24, ts="2026-11-01T08:00:01.000Z", request_id="req_0f" + "9" * 30, task="summary",
            task_source="classifier", task_confidence=0.91, tier="mid", requested_model="tier:mid",
            model="claude-sonnet-5-5", provider="anthropic", status=200, stream=1, prompt_tokens=10,
            completion_tokens=5, cached_tokens=2, cache_write_tokens=1, reasoning_tokens=0, usage_source="estimated",
            cost_usd=None, baseline_tier="frontier", baseline_model="gpt-5.5", baseline_cost_usd=0.0001,
            latency_ms=1500.5, ttft_ms=300.25, upstream_ms=1499.0, overhead_ms=1.5, attempts=2, fallback=1,
            end_user="u2", prompt_variant="claude", eval_run="ev_1", task_predicted="agent", features=b"",
            prompt_text='{"system": "s", "user": "u"}'),
    _v6_row(id="c" * 24, ts="2026-11-02T23:59:59.999Z", request_id=None, task="nope", status=400,
            error_type="unknown_task_type", latency_ms=0.5),
    _v6_row(id="d" * 24, ts="2026-11-03T00:00:00.000Z", request_id="gen_" + "d" * 24, task="summary", tier="mid",
            model="gpt-5.4-mini", provider="openai", prompt_tokens=100, completion_tokens=10, cached_tokens=0,
            cache_write_tokens=0, reasoning_tokens=0, usage_source="cache", cost_usd=0.0, cost_avoided_usd=0.0002,
            cache="hit", latency_ms=0.25, attempts=0, end_user="u1"),
    _v6_row(id="e" * 24, ts="2026-11-03T00:00:02.002Z", request_id="req_NOT-hex", task="agent", tier="frontier",
            model="gpt-5.5", provider="openai", status=502, error_type="upstream_unreachable", latency_ms=30000.0,
            upstream_ms=29999.999, overhead_ms=0.001, attempts=2, cache="miss"),
]  # fmt: skip
V6_ATTEMPTS = [
    (1, "a" * 24, 1, "2026-11-01T08:00:00.936Z", "mid", "openai", "gpt-5.4-mini", 200, None, 811.0),
    (2, "b" * 24, 1, "2026-11-01T08:00:01.300Z", "mid", "openai", "gpt-5.4-mini", 503, "server_error", 299.5),
    (3, "b" * 24, 2, "2026-11-01T08:00:02.499Z", "mid", "anthropic", "claude-sonnet-5-5", 200, None, 600.125),
    (4, "e" * 24, 1, "2026-11-03T00:00:17.000Z", "frontier", "openai", "gpt-5.5", None, "upstream_timeout", 15000.0),
    (5, "e" * 24, 2, "2026-11-03T00:00:32.002Z", "frontier", "openai", "gpt-5.5", None, "upstream_timeout", 15000.0),
]


def _at_version(path: Path, version: int, *first: str) -> sqlite3.Connection:
    """A new file at ``path`` with the schema's first ``version`` migrations applied (after ``first``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (*first, "PRAGMA journal_mode = WAL"):
        conn.execute(statement)
    for migration in MIGRATIONS[:version]:
        for statement in statements(migration):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _v6_ledger(path: Path) -> None:
    """A ledger as tiergate at schema v6 wrote it: its migrations, its rows."""
    conn = _at_version(path, 6)
    columns = ", ".join(V6_COLUMNS)
    marks = ", ".join("?" * len(V6_COLUMNS))
    conn.executemany(
        f"INSERT INTO requests ({columns}) VALUES ({marks})",
        [tuple(r[c] for c in V6_COLUMNS) for r in V6_REQUESTS],
    )
    conn.executemany(f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES ({', '.join('?' * 10)})", V6_ATTEMPTS)
    conn.close()


def _read(path: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_a_v6_ledger_is_migrated_and_reads_back_unchanged_through_the_views(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    _v6_ledger(db)
    before = _read(db, "SELECT * FROM requests ORDER BY id")
    attempts_before = _read(db, "SELECT * FROM attempts ORDER BY id")
    open_ledger(str(db)).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),) == (9,)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # VACUUMed once: incremental from now on
    kinds = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE name IN ('requests', 'attempts')")}
    views = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'view'")}
    conn.close()
    assert kinds == views == {"requests", "attempts"}
    after = _read(db, "SELECT * FROM requests ORDER BY id")
    assert [list(r) for r in after] == [list(REQUEST_COLUMNS)] * len(V6_REQUESTS)
    assert all(r.pop("registry") is None for r in after)  # v8's: unknown for the rows before it
    assert after == before
    assert _read(db, "SELECT * FROM attempts ORDER BY id") == attempts_before


def test_a_written_row_reads_back_as_the_v6_writer_wrote_it(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio_run_writer(db, _records())
    got = {r["end_user"]: r for r in _read(db, "SELECT * FROM requests")}
    plain, fell_back, own, generated, nothing = (got[f"u{i}"] for i in range(5))
    assert plain["request_id"] == "req_" + "0123456789abcdef" * 2  # upstream's, stored as 16 bytes
    assert fell_back["request_id"] == "msg_01-upstream-own-form"
    assert own["request_id"] == "req_" + own["id"]
    assert generated["request_id"] == "gen_" + generated["id"]
    assert nothing["request_id"] is None
    assert plain["ts"] == iso(1764590400.1239) == "2025-12-01T12:00:00.123Z"
    assert (plain["latency_ms"], plain["upstream_ms"], plain["overhead_ms"]) == (812.346, 811.0, 1.346)
    assert plain["ttft_ms"] is None and fell_back["ttft_ms"] == 250.5
    # features: the call site's template and the call's own, one set
    assert decode(plain["features"]) == [1, 5, 70, 300, 9000]
    assert plain["features"] == encode([5, 300, 9000]) + RUN_SEPARATOR + encode([1, 70])
    attempts = {(a["request"], a["n"]): a for a in _read(db, "SELECT * FROM attempts")}
    only = attempts[(plain["id"], 1)]  # kept in its request's row, shown as a row of its own
    assert (only["tier"], only["provider"], only["model"], only["status"], only["error_type"]) == (
        "mid", "openai", "gpt-5.4-mini", 200, None,
    )  # fmt: skip
    assert (only["ts"], only["latency_ms"]) == ("2025-12-01T12:00:00.936Z", 811.0)
    first, second = attempts[(fell_back["id"], 1)], attempts[(fell_back["id"], 2)]
    assert (first["provider"], first["status"], first["error_type"]) == ("openai", 503, "server_error")
    assert (second["provider"], second["status"], second["latency_ms"]) == ("anthropic", 200, 600.125)
    assert len(attempts) == 6 and len({a["id"] for a in attempts.values()}) == 6  # ids unique


def _records() -> list[RequestRecord]:
    ts = 1764590400.1239
    template = (b"digest01", encode([5, 300, 9000]))

    def one(i: int, **values: Any) -> RequestRecord:
        record = RequestRecord(
            id=new_id(), ts=ts, task="summary", task_source="header", tier="mid", requested_model="auto",
            stream=False, status=200, latency_ms=812.3456, target=SERVED, baseline_tier="frontier",
            baseline=BASELINE, usage=Usage(120, 40), upstream_ms=811.0, end_user=f"u{i}",
            features=encode([1, 70]), template=template,
            attempts=[AttemptRecord(1, ts + 0.8125, "mid", SERVED, 200, None, 811.0)],
        )  # fmt: skip
        for name, value in values.items():
            setattr(record, name, value)
        return record

    tries = [
        AttemptRecord(1, ts + 0.3, "mid", SERVED, 503, "server_error", 299.5),
        AttemptRecord(2, ts + 0.9, "mid", FALLBACK, 200, None, 600.125),
    ]
    plain = one(0, request_id="req_" + "0123456789abcdef" * 2)
    fell_back = one(1, request_id="msg_01-upstream-own-form", target=FALLBACK, fallback=True, attempts=tries,
                    stream=True, ttft_ms=250.5)  # fmt: skip
    own = one(2)
    own.request_id = "req_" + own.id
    generated = one(3)
    generated.request_id = "gen_" + generated.id
    return [plain, fell_back, own, generated, one(4, request_id=None)]


def asyncio_run_writer(db: Path, records: list[RequestRecord]) -> None:
    import asyncio

    async def go() -> None:
        writer = LedgerWriter(str(db), Pricer({}, {"openai": "openai", "anthropic": "anthropic"}))
        await writer.start()
        for record in records:
            writer.submit(record)
        await writer.close()
        assert writer.health()["written"] == len(records)

    asyncio.run(go())


def test_plain_sql_inserts_into_the_views_read_back(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    open_ledger(str(db)).close()
    conn = sqlite3.connect(db, isolation_level=None)
    columns = ", ".join(REQUEST_COLUMNS)
    rows = [r for r in V6_REQUESTS]
    for row in rows:
        conn.execute(f"INSERT INTO requests ({columns}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})",
                     tuple(row[c] for c in REQUEST_COLUMNS))  # fmt: skip
    conn.executemany(f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS[1:])}) VALUES ({', '.join('?' * 9)})",
                     [a[1:] for a in V6_ATTEMPTS])  # fmt: skip
    conn.close()
    got = _read(db, "SELECT * FROM requests ORDER BY id")
    assert got == sorted(rows, key=lambda r: r["id"])
    attempts = _read(db, "SELECT request, n, ts, tier, provider, model, status, error_type, latency_ms FROM attempts")
    assert sorted(tuple(a.values()) for a in attempts) == sorted(a[1:] for a in V6_ATTEMPTS)


def test_a_row_the_schema_refuses_through_the_view_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    open_ledger(str(db)).close()
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO requests (id, ts, task_source, status, stream, usage_source, attempts, fallback) "
                     "VALUES ('x', '2026-11-01T00:00:00.000Z', 'header', 200, 0, 'none', 0, 0)")  # fmt: skip
    conn.close()


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4102444800.0))  # up to 2100
def test_the_views_show_times_as_the_v6_writer_formatted_them(epoch: float) -> None:
    conn = sqlite3.connect(":memory:")
    ms = int(epoch * 1000)
    shown = conn.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000.0, 'unixepoch')", (ms,)).fetchone()[0]
    back = conn.execute("SELECT CAST(round((julianday(?) - 2440587.5) * 86400000.0) AS INTEGER)", (shown,)).fetchone()
    conn.close()
    assert shown == iso(ms / 1000)
    assert back == (ms,)


def test_time_in_the_ledger_is_whole_milliseconds() -> None:
    now = time.time()
    assert iso(now)[:23] == iso(int(now * 1000) / 1000)[:23]


PLAIN_INDEX = "CREATE INDEX ledger_requests_ts ON ledger_requests (ts)"
V8_INDEX = (
    "CREATE INDEX ledger_requests_ts ON ledger_requests (strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch'))"
)


def _v8_ledger(path: Path) -> None:
    """A ledger as tiergate at schema v8 made it (ts indexed by its ISO text), the v6 rows inserted
    through its views."""
    conn = _at_version(path, 8, "PRAGMA auto_vacuum = INCREMENTAL")
    columns = ", ".join(REQUEST_COLUMNS)
    for row in V6_REQUESTS:
        values = tuple(row[c] for c in REQUEST_COLUMNS)
        conn.execute(f"INSERT INTO requests ({columns}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})", values)
    conn.executemany(f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS[1:])}) VALUES ({', '.join('?' * 9)})",
                     [a[1:] for a in V6_ATTEMPTS])  # fmt: skip
    conn.close()


def _ts_index(path: Path) -> str:
    rows = _read(path, "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger_requests'")
    (found,) = [r["sql"] for r in rows if "ledger_requests_ts" in r["sql"]]
    return str(found)


def test_a_v8_ledger_is_migrated_to_v9_keeping_every_row_and_what_the_views_show(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    _v8_ledger(db)
    assert _ts_index(db) == V8_INDEX
    tables = ("ledger_requests", "ledger_attempts", "ledger_kinds", "ledger_names", "ledger_hops")
    stored = {t: _read(db, f"SELECT * FROM {t} ORDER BY rowid") for t in tables}
    before = _read(db, "SELECT * FROM requests ORDER BY id")
    attempts_before = _read(db, "SELECT * FROM attempts ORDER BY id")
    assert len(before) == len(V6_REQUESTS) and len(attempts_before) == len(V6_ATTEMPTS)
    open_ledger(str(db)).close()
    assert _read(db, "PRAGMA user_version") == [{"user_version": 9}]
    assert _ts_index(db) == PLAIN_INDEX
    assert {t: _read(db, f"SELECT * FROM {t} ORDER BY rowid") for t in tables} == stored
    assert _read(db, "SELECT * FROM requests ORDER BY id") == before
    assert _read(db, "SELECT * FROM attempts ORDER BY id") == attempts_before
    assert [r["ts"] for r in before] == [r["ts"] for r in V6_REQUESTS]  # ISO text, as the v6 writer wrote it
    open_ledger(str(db)).close()  # opened again: nothing more to do
    assert _read(db, "PRAGMA user_version") == [{"user_version": 9}]


def test_a_fresh_ledger_is_v9_with_the_plain_ts_index(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    open_ledger(str(db)).close()
    assert _read(db, "PRAGMA user_version") == [{"user_version": 9}]
    assert _ts_index(db) == PLAIN_INDEX
    indexes = _read(db, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger_requests'")
    assert sorted(r["name"] for r in indexes) == ["ledger_requests_eval_run", "ledger_requests_ts"]


def _plan(conn: sqlite3.Connection, sql: str, params: list[Any]) -> str:
    return " | ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_the_audits_range_scans_use_the_ts_index(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    _v8_ledger(db)
    conn = open_ledger(str(db))
    try:
        scope = runs.Scope(since=1_793_520_000_000, until=1_793_606_400_000)  # 2026-11-01, 2026-11-02
        where, params = runs.in_stretch((None, 1_793_563_200_000), scope)  # a stretch of runs.stretches
        stretch = f"SELECT kind, ts / 86400000, eval_run, latency_us FROM ledger_requests WHERE {where}"
        assert "USING INDEX ledger_requests_ts (ts>? AND ts<?)" in _plan(conn, stretch, params)
        terms, bounds = scope.terms()
        first = f"SELECT ts FROM ledger_requests WHERE {' AND '.join(terms)} AND eval_run IS NULL ORDER BY ts LIMIT 1"
        assert _plan(conn, first, bounds) == "SEARCH ledger_requests USING INDEX ledger_requests_ts (ts>? AND ts<?)"
        prune = "SELECT rid FROM ledger_requests WHERE ts < ? ORDER BY ts LIMIT ?"  # prune.step
        assert "USING COVERING INDEX ledger_requests_ts (ts<?)" in _plan(conn, prune, [1, 10])
        found = runs.bounds(conn, scope), runs.bounds(conn, runs.Scope(scope.since, True, scope.until))
    finally:
        conn.close()
    # shown as the views show ts; the row at 08:00:01 is eval traffic
    assert found == (("2026-11-01T08:00:00.125Z",) * 2, ("2026-11-01T08:00:00.125Z", "2026-11-01T08:00:01.000Z"))
