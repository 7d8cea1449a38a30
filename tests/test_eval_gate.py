"""The eval gate on the shipped registry and golden sets, against the oracle fake (simulated models of
different skill): a re-tiering that its golden set supports passes, one it does not is blocked, a changed
task without a golden set is blocked, and no change passes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from proxy import rules
from proxy.evals import candidates, golden
from proxy.evals.command import run_gate
from proxy.evals.gate import gate
from proxy.evals.recommend import recommend, render
from proxy.evals.runner import Options, evaluate
from proxy.fakes.openai import FakeOpenAI
from proxy.fakes.oracle import Oracle
from proxy.ledger.report import report
from proxy.loopback import serve
from proxy.registry import Registry
from tests.conftest import RULES, ProxyFactory, sdk

EVALS = Path(__file__).resolve().parent.parent / "evals"
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def oracle_url() -> AsyncIterator[str]:
    oracle = Oracle.load(EVALS, rules.load(RULES, environ={}))
    async with serve(FakeOpenAI(choose=oracle.choose)) as url:
        yield url


def _variant(url: str, edit: Any) -> Registry:
    doc = yaml.safe_load(RULES.read_text())
    edit(doc)
    env = {"OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": "sk-x", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}
    return rules.loads(yaml.safe_dump(doc, sort_keys=False), environ=env, source="candidate.yaml")


def _tier(task: str, tier: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["tasks"][task]["tier"] = tier

    return edit


@module_loop
async def test_a_supported_re_tiering_passes_and_an_unsupported_one_is_blocked(oracle_url: str, tmp_path: Path) -> None:
    current = _variant(oracle_url, lambda doc: None)
    db = str(tmp_path / "l.db")
    supported = await gate(current, _variant(oracle_url, _tier("summary", "small")), EVALS, db=db)
    assert [r.change.task for r in supported.results] == ["summary"]
    [summary] = supported.results
    assert summary.report is not None and summary.verdict == "pass"
    assert (summary.report.candidate.passed, summary.report.candidate.total) == (11, 12)
    assert len(summary.report.regressions) == 1  # within the set's max_regressions: 1
    assert supported.exit_code == 0

    blocked = await gate(current, _variant(oracle_url, _tier("narrative", "small")), EVALS, db=db)
    [narrative] = blocked.results
    assert narrative.report is not None and narrative.verdict == "fail" and blocked.exit_code == 1
    assert narrative.report.candidate.passed == 6 and len(narrative.report.regressions) >= 5
    document = blocked.to_json()
    assert document["verdict"] == "fail" and document["changed"] == ["narrative"]
    assert document["results"][0]["changed"] == ["tier mid -> small", "targets", "prompt variant", "policy"]


@module_loop
async def test_a_changed_task_without_a_golden_set_is_blocked(oracle_url: str, tmp_path: Path) -> None:
    current = _variant(oracle_url, lambda doc: None)
    report = await gate(current, _variant(oracle_url, _tier("ad_copy", "small")), EVALS, db=str(tmp_path / "l.db"))
    [ad_copy] = report.results
    assert ad_copy.report is None and ad_copy.verdict == "fail" and report.exit_code == 1
    assert ad_copy.error is not None and "no golden set for 'ad_copy'" in ad_copy.error
    assert "write its eval before re-tiering it" in report.table()


@module_loop
async def test_no_change_passes_and_says_so(oracle_url: str, tmp_path: Path) -> None:
    current = _variant(oracle_url, lambda doc: None)
    report = await gate(current, current, EVALS, db=str(tmp_path / "l.db"), options=Options(limit=1))
    assert report.results == () and report.exit_code == 0
    assert report.table() == "no task changed: the gate passes\n"
    assert report.to_json() == {"changed": [], "results": [], "verdict": "pass"}


def test_the_gate_from_the_command_line_reads_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # never reached: nothing changed
    candidate = tmp_path / "candidate.yaml"
    # the text differs (a comment), how every task runs does not
    candidate.write_text(RULES.read_text() + "\n# reviewed 2026-12-01\n")
    code, text = run_gate(str(candidate), config=str(RULES), evals=str(EVALS), db=str(tmp_path / "l.db"), fmt="json")
    assert (code, json.loads(text)) == (0, {"changed": [], "results": [], "verdict": "pass"})


@module_loop
async def test_audit_recommends_the_re_tierings_the_evals_support(
    oracle_url: str, tmp_path: Path, start_proxy: ProxyFactory
) -> None:
    registry = _variant(oracle_url, lambda doc: None)
    db = str(tmp_path / "l.db")
    # production traffic: summaries and narratives on mid
    async with start_proxy(registry, db=db) as url:
        for task, n in (("summary", 6), ("narrative", 4)):
            client = sdk(url, {"X-Task-Type": task})
            for i in range(n):
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": f"Write about queue {i} " * 40}]
                )
            await client.close()
    # the evidence: summary passes on small, narrative does not
    for task in ("summary", "narrative"):
        cases = golden.load(EVALS / task)
        await evaluate(cases, candidates.with_tier(registry, task, "small"), current_registry=registry, db=db)
    found = recommend(db, registry)
    assert [(r.task, r.current_tier, r.tier, r.calls) for r in found] == [("summary", "mid", "small", 6)]
    [summary] = found
    assert summary.saving_usd > 0 and summary.cost_usd is not None and summary.current_cost_usd is not None
    assert summary.saving_usd == pytest.approx(summary.current_cost_usd - summary.cost_usd)
    assert "summary  mid  small  pass 92%" in render(found, "table")
    # the audit shows each task's last eval of its current tier
    cost_line = next(line for line in report(db, by="task").splitlines() if " summary " in line and "$" in line)
    assert cost_line.endswith("pass 100% on mid, " + rows_ts(db, "summary"))
    rows = {r["task"]: r for r in json.loads(report(db, by="task", fmt="json"))["rows"]}
    assert rows["summary"]["eval_ts"][5:10] == rows_ts(db, "summary")
    assert (rows["summary"]["eval_tier"], rows["summary"]["eval_verdict"]) == ("mid", "pass")
    assert rows["narrative"]["eval_tier"] == "mid"


def rows_ts(db: str, task: str) -> str:
    """MM-DD of the task's last current-tier eval, as the audit prints it."""
    conn = sqlite3.connect(db)
    try:
        [(ts,)] = conn.execute("SELECT MAX(ts) FROM eval_runs WHERE task = ? AND current = 1", (task,)).fetchall()
    finally:
        conn.close()
    return str(ts)[5:10]
