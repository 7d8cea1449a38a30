"""The ledger writer on its own, against real SQLite files: what happens to a row between submit and commit.

Time is never waited out: a writer that would linger is given a linger of an hour, so a test passes only
if ``close`` cuts it short, and the drain task is driven by yielding to the loop, not by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import bpe_openai
import pytest

from proxy.ledger.records import AttemptRecord, RequestRecord, new_id
from proxy.ledger.store import Settled, Store
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.registry import Target
from tests.test_ledger import rows

SERVED = Target("openai", "gpt-5.4-mini", {})
BASELINE = Target("openai", "gpt-5.5", {})
AN_HOUR = 3600.0


def record(**overrides: Any) -> RequestRecord:
    """A finished, successful non-streamed request served by ``SERVED``, as the request path hands it over."""
    now = time.time()
    fields: dict[str, Any] = {
        "id": new_id(),
        "ts": now,
        "task": "summary",
        "task_source": "header",
        "tier": "mid",
        "requested_model": "auto",
        "stream": False,
        "status": 200,
        "latency_ms": 12.5,
        "target": SERVED,
        "baseline_tier": "frontier",
        "baseline": BASELINE,
        "usage": None,
        "upstream_ms": 11.0,
        "attempts": [AttemptRecord(1, now, "mid", SERVED, 200, None, 11.0)],
        "messages": [{"role": "user", "content": "Summarise the ticket."}],
        "streamed_text": "The summary.",
        "produced_output": True,
    }
    fields.update(overrides)
    return RequestRecord(**fields)


def writer(db: Path, **options: Any) -> LedgerWriter:
    return LedgerWriter(str(db), Pricer({}, {"openai": "openai"}), **options)


async def let_the_writer_run() -> None:
    """Yield to the event loop until the drain task has done all it can without time passing."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_row_is_unwritten_until_committed_and_close_writes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "ledger.db"
    ledger = writer(db, linger=AN_HOUR)  # would wait an hour for more rows before writing this one
    await ledger.start()
    submitted = record()
    ledger.submit(submitted)
    await let_the_writer_run()  # it has taken the row and is lingering
    assert ledger.health()["queued"] == 1
    assert ledger.health() == {"ok": True, "queued": 1, "written": 0, "dropped": 0, "error": None}
    await ledger.close(timeout=60)  # closing cuts the linger short
    assert [r["id"] for r in rows(db)] == [submitted.id]
    assert ledger.health() == {"ok": False, "queued": 0, "written": 1, "dropped": 0, "error": None}
    assert "unwritten" not in caplog.text


async def test_close_that_cannot_write_says_how_many_rows_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "missing" / "ledger.db"  # its folder does not exist: nothing can be written
    ledger = writer(db)
    await ledger.start()
    lost = [record(), record()]
    for r in lost:
        ledger.submit(r)
    await ledger.close(timeout=0.2)
    assert ledger.health()["queued"] == 2
    assert "ledger closed with 2 rows unwritten, lost (unable to open database file)" in caplog.text
    assert all(r.id in caplog.text for r in lost)


async def test_a_record_that_cannot_be_settled_keeps_its_row_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "ledger.db"
    ledger = writer(db)
    await ledger.start()
    broken = record(ts="not a time")  # a bug on the request path: finalize fails on it (so did the old fallback)
    fine = record()
    ledger.submit(broken)
    ledger.submit(fine)
    await ledger.close()
    got = {r["id"]: r for r in rows(db)}
    assert got[fine.id]["cost_usd"] > 0
    kept = got[broken.id]
    assert (kept["task"], kept["model"], kept["provider"], kept["attempts"], kept["status"]) == (
        "summary",
        "gpt-5.4-mini",
        "openai",
        1,
        200,
    )
    assert kept["usage_source"] == "none" and kept["cost_usd"] is None
    assert f"could not settle ledger row {broken.id}" in caplog.text and "Traceback" in caplog.text


class BrokenOnce(Store):
    """A store whose first insert hits a bug (not an SQLite error): what the writer does with the unexpected."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.bugs = 1

    def insert(self, batch: list[Settled]) -> list[Settled]:  # type: ignore[override]
        if self.bugs:
            self.bugs -= 1
            raise RuntimeError("a bug in the writer")
        return super().insert(batch)


async def test_an_unexpected_error_is_logged_and_the_writer_carries_on_with_its_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "ledger.db"
    ledger = writer(db, store=BrokenOnce(str(db)))
    await ledger.start()
    submitted = record()
    ledger.submit(submitted)
    await ledger.close()
    assert [r["id"] for r in rows(db)] == [submitted.id]
    assert "ledger writer failed unexpectedly; restarting it" in caplog.text
    assert "RuntimeError: a bug in the writer" in caplog.text  # with its traceback


async def test_a_row_sqlite_refuses_costs_only_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "ledger.db"
    ledger = writer(db, linger=AN_HOUR)
    await ledger.start()
    unbindable = record(client="\ud800")  # not valid UTF-8: SQLite cannot store it
    null_task = record(task=None)  # the schema wants a task: INSERT OR IGNORE would skip it silently
    fine = [record(), record()]
    for r in (fine[0], unbindable, null_task, fine[1]):  # one batch
        ledger.submit(r)
    await ledger.close()
    assert sorted(r["id"] for r in rows(db)) == sorted(r.id for r in fine)
    assert ledger.health()["dropped"] == 2 and ledger.health()["written"] == 2
    assert f"ledger row {unbindable.id} refused by SQLite" in caplog.text
    assert f"ledger row {null_task.id} refused by SQLite" in caplog.text


async def test_a_long_output_without_usage_is_estimated_and_keeps_its_fields(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    paragraph = "The ledger keeps one row per request, and this sentence is long enough to count.\n"
    repeats = 25_000  # ~2 MB: twice what the tokenizer takes in one call
    ledger = writer(db)
    await ledger.start()
    ledger.submit(record(stream=True, streamed_text=paragraph * repeats))
    await ledger.close()
    (row,) = rows(db)
    assert (row["model"], row["provider"], row["attempts"], row["status"]) == ("gpt-5.4-mini", "openai", 1, 200)
    assert row["usage_source"] == "estimated" and row["cost_usd"] > 0
    assert row["completion_tokens"] == repeats * len(bpe_openai.get_encoding("o200k_base").encode(paragraph))
