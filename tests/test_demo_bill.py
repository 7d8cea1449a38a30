"""The demo's generated workload and its bill: the shape of the calls, the fake's sized answers, and the
audit of a real run through tiergate (the official SDK over loopback, fake upstreams)."""

from __future__ import annotations

import io
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.demo import bill, generator
from proxy.fakes.openai import count_prompt_tokens, message_text
from proxy.ledger import audit
from tests.conftest import RULES


def test_each_task_gets_its_exact_share_deterministically() -> None:
    calls = generator.calls(1000, seed=3)
    assert len(calls) == 1000
    counts = Counter(c.task for c in calls)
    assert counts == {s.task: round(1000 * s.share) for s in generator.SHAPES}
    assert [c.messages for c in calls] == [c.messages for c in generator.calls(1000, seed=3)]
    assert Counter(len(generator.calls(n, seed=1)) for n in (0, 1, 7, 333)) == {0: 1, 1: 1, 7: 1, 333: 1}
    # about 1% meet the outage, never a lookup-table label
    outage = [c for c in calls if message_text(c.messages[-1]).startswith(generator.OUTAGE)]
    assert len(outage) == 10 and all(c.task != "classification" for c in outage)
    assert any(c.stream for c in calls if c.task == "narrative") and not any(
        c.stream for c in calls if c.task == "summary"
    )


def test_sizes_follow_the_task() -> None:
    calls = generator.calls(2000, seed=5)

    def mean_prompt(task: str) -> float:
        found = [count_prompt_tokens(c.messages) for c in calls if c.task == task]
        return sum(found) / len(found)

    shapes = {s.task: s for s in generator.SHAPES}
    for task in ("title_generation", "extraction", "summary", "agent"):
        assert mean_prompt(task) == pytest.approx(shapes[task].prompt, rel=0.25), task
    assert mean_prompt("agent") > 10 * mean_prompt("title_generation")


def test_the_fake_answers_with_the_size_asked_and_a_cached_prefix() -> None:
    agent = next(c for c in generator.calls(200, seed=2) if c.task == "agent")
    behavior = generator.sized({"messages": agent.messages})
    assert behavior is not None and behavior.text is not None
    asked = int(message_text(agent.messages[-1]).rsplit("about ", 1)[1].split()[0])
    assert len(behavior.text.split()) == asked
    prefix = count_prompt_tokens(agent.messages[:-1])
    assert behavior.cached_tokens == prefix // 128 * 128 and behavior.cached_tokens >= 1024
    title = next(c for c in generator.calls(200, seed=2) if c.task == "title_generation")
    small = generator.sized({"messages": title.messages})
    assert small is not None and small.cached_tokens == 0  # a short prompt has no cached prefix
    assert generator.sized({"messages": [{"role": "user", "content": "hello"}]}) is None


async def test_the_bill_of_a_real_run(tmp_path: Path) -> None:
    db = str(tmp_path / "bill.db")
    out = io.StringIO()
    assert await bill.run_bill(str(RULES), 400, db, out, seed=7) == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 400
    tiers = {g.key: g for g in audit.summarize(db, "tier").groups}
    calls = {key: g.calls for key, g in tiers.items()}
    small_calls = calls["small"] + calls["rules"]  # the lookup table's labels, and those it passed on
    # by calls: the small tier's micro-tasks the overwhelming majority, then mid, then frontier
    assert small_calls / 400 > 0.75 and calls["mid"] > calls["frontier"] == 20
    # by cost on the baseline: the frontier line and the small micro-tasks comparable, mid in between-ish
    small_base = (tiers["small"].baseline_cost_usd or 0.0) + (tiers["rules"].baseline_cost_usd or 0.0)
    frontier_base = tiers["frontier"].baseline_cost_usd or 0.0
    assert 0.4 < frontier_base / small_base < 2.5
    assert 0.3 < (tiers["mid"].baseline_cost_usd or 0.0) / small_base < 1.5
    # the frontier runs on the baseline's model: no saving there; the small tier saves most of its baseline
    assert tiers["frontier"].savings_share == pytest.approx(0.0, abs=1e-9)
    assert (tiers["small"].savings_share or 0.0) > 0.9
    # the agent's conversations report their cached prefix, the others none
    by_task = {g.key: g for g in audit.summarize(db, "task").groups}
    assert by_task["agent"].cached_tokens > 0 and by_task["title_generation"].cached_tokens == 0
    # the fake answered with the sizes asked: an agent turn writes far more than a title
    assert (
        by_task["agent"].output_tokens / 20
        > 50 * by_task["title_generation"].output_tokens / by_task["title_generation"].calls
    )
    text = out.getvalue()
    assert "$ tiergate demo --calls 400" in text and "400 calls in" in text and ", 0 failed;" in text
    total = audit.summarize(db, "tier").total
    assert text.rstrip().endswith(bill.headline(audit.summarize(db, "tier")))
    assert f"{(total.savings_share or 0) * 100:.1f}% saved" in text


def test_cli_demo_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--config", str(RULES), "--calls", "60"]) == 0
    text = capsys.readouterr().out
    assert "$ tiergate demo --calls 60" in text and "Workload by tier: 60 calls" in text
    assert main(["demo", "--calls", "-1"]) == 2
    assert capsys.readouterr().err.startswith("tiergate: --calls: expected 0 or more")
