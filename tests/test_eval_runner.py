"""``tiergate eval``'s runner end to end: tiergate served in-process per side, a fake upstream that answers
right for some cases and wrong for others per model, real SQLite files.

The fake answers ``right`` or ``wrong`` by model and case (``RIGHT``); the judge model's verdicts follow
``JUDGE`` per case, one step per judge call, so a flipping judge is exact under any arrival order. Prices
are overrides, so every cost is computed here from the tokens the fake reported.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy import rules
from proxy.cli import main
from proxy.errors import ConfigError
from proxy.evals import candidates, diff, golden
from proxy.evals.report import wilson
from proxy.evals.runner import Options, evaluate
from proxy.fakes.openai import Behavior, FakeOpenAI, count_prompt_tokens, message_text
from proxy.ledger import audit, report
from proxy.ledger.schema import MIGRATIONS, open_ledger
from proxy.loopback import serve
from proxy.registry import Registry
from tests.conftest import ProxyFactory

RULES = """
providers:
  fake: {type: openai, base_url: "${FAKE_URL:-http://127.0.0.1:1}/v1", api_key: sk-fake}
policy: {retries: 0}
tiers:
  frontier: {targets: ["fake::judge-model"]}
  mid: {targets: ["fake::mid-model"]}
  small:
    targets:
      - {provider: fake, model: small-model, params: {temperature: 0.1}}
      - fake::backup-model
tasks:
  title: mid
  eval_judge: frontier
prices:
  small-model: {input: 1, output: 2}
  backup-model: {input: 1, output: 2}
  mid-model: {input: 10, output: 20}
  judge-model: {input: 100, output: 200}
"""
PRICE = {"small-model": (1, 2), "backup-model": (1, 2), "mid-model": (10, 20), "judge-model": (100, 200)}
CASES = ("c1", "c2", "c3", "c4", "c5")
# Which cases each model answers right; the rest it answers "wrong".
RIGHT = {"mid-model": set(CASES), "small-model": {"c1", "c2", "c3"}, "backup-model": set(CASES)}
# The judge's verdict on each judge call of a case, in turn (cycling).
JUDGE = {"c1": [True], "c2": [True, False, True], "c3": [False, True, False]}
_CASE = re.compile(r"case (c\d+)")


class Upstream(FakeOpenAI):
    """The fake upstream of these tests; ``judged`` counts judge calls per case."""

    def __init__(self, fail: Callable[[str, str], bool] = lambda model, case: False) -> None:
        self.judged: Counter[str] = Counter()
        self._fail = fail
        super().__init__(choose=self._reply)

    def _reply(self, body: dict[str, Any]) -> Behavior:
        model = body["model"]
        case = _case(body)
        if model == "judge-model":
            verdicts = JUDGE[case]
            verdict = verdicts[self.judged[case] % len(verdicts)]
            self.judged[case] += 1
            return Behavior(text=json.dumps({"pass": verdict, "reason": f"judged {case}"}))
        if self._fail(model, case):
            return Behavior(status=503)
        return Behavior(text="right" if case in RIGHT[model] else "wrong")

    def chat(self, model: str | None = None) -> list[dict[str, Any]]:
        return [
            r.body for r in self.requests if r.path.endswith("/chat/completions") and model in (None, r.body["model"])
        ]


def _case(body: dict[str, Any]) -> str:
    users = [message_text(m) for m in body["messages"] if m.get("role") == "user"]
    found = _CASE.search(users[-1])
    assert found is not None, users
    return found[1]


def _cost(body: dict[str, Any], completion_tokens: int = 1) -> float:
    price_in, price_out = PRICE[body["model"]]
    return (count_prompt_tokens(body["messages"]) * price_in + completion_tokens * price_out) / 1e6


def write_golden(
    root: Path, task: str = "title", *, spec: str | None = None, cases: list[dict[str, Any]] | None = None
) -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.yaml").write_text(spec or "threshold: 0.8\nmax_regressions: 1\nscorers: [{type: exact}]\n")
    rows = cases or [
        {"id": c, "messages": [{"role": "user", "content": f"case {c}: answer right"}], "expect": {"answer": "right"}}
        for c in CASES
    ]
    (folder / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


JUDGED = "threshold: 0.5\nrepeats: 3\nscorers: [{type: judge, rubric: 'Is the answer right?'}]\n"


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def fake_url(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async with serve(upstream) as url:
        monkeypatch.setenv("FAKE_URL", url)
        yield url


@pytest.fixture
def registry(fake_url: str) -> Registry:
    return rules.loads(RULES, environ={"FAKE_URL": fake_url}, source="rules.yaml")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def _rows(db: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


# --- the runner ---------------------------------------------------------------------------------


async def test_candidate_tier_against_the_current_one(
    tmp_path: Path, registry: Registry, upstream: Upstream, db: str
) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    candidate = candidates.with_tier(registry, "title", "small")
    seen: list[tuple[int, int]] = []
    result = await evaluate(
        cases,
        candidate,
        current_registry=registry,
        db=db,
        options=Options(concurrency=3),
        progress=lambda d, t: seen.append((d, t)),
    )

    cand, cur = result.candidate, result.current
    assert cur is not None and not result.candidate_is_current
    assert (cand.tier, cand.targets) == ("small", ("fake::small-model", "fake::backup-model"))
    assert (cur.tier, cur.targets) == ("mid", ("fake::mid-model",))
    assert [(c.id, c.passed) for c in cand.cases] == [
        ("c1", True),
        ("c2", True),
        ("c3", True),
        ("c4", False),
        ("c5", False),
    ]
    assert (cand.passed, cand.total, cand.pass_rate, cand.ci95) == (3, 5, 0.6, wilson(3, 5))
    assert (cur.passed, cur.total, cur.pass_rate) == (5, 5, 1.0)
    assert cand.case("c4").reason == "exact: expected 'right', got 'wrong'"
    assert cand.case("c4").answer == "wrong"
    assert [(r.id, r.reason, r.answer, r.current_answer) for r in result.regressions] == [
        ("c4", "exact: expected 'right', got 'wrong'", "wrong", "right"),
        ("c5", "exact: expected 'right', got 'wrong'", "wrong", "right"),
    ]
    # 60% < 80%, and 2 regressions > max 1
    assert (result.verdict, result.exit_code) == ("fail", 1)

    # every call went through tiergate: the small tier's params and the model, upstream
    small, mid = upstream.chat("small-model"), upstream.chat("mid-model")
    assert len(small) == len(mid) == 5 and len(upstream.chat()) == 10
    assert all(b["temperature"] == 0.1 for b in small)
    assert cand.cost_usd == pytest.approx(math.fsum(_cost(b) for b in small), rel=1e-12)
    assert cur.cost_usd == pytest.approx(math.fsum(_cost(b) for b in mid), rel=1e-12)
    assert cand.judge_cost_usd == 0.0 and (cand.reused, cand.answers, cand.unpriced) == (0, 5, 0)
    assert cand.p50_ms is not None and cand.p95_ms is not None and cand.p50_ms <= cand.p95_ms
    assert seen[0] == (0, 10) and seen[-1] == (10, 10) and len(seen) == 11

    # the ledger: every call an ordinary row marked with the run, and the run's own record
    calls = _rows(db, "SELECT task, tier, model, eval_run, cost_usd FROM requests ORDER BY model")
    assert Counter((c["tier"], c["model"]) for c in calls) == {("small", "small-model"): 5, ("mid", "mid-model"): 5}
    assert {c["eval_run"] for c in calls} == {result.run}
    runs = {r["side"]: r for r in _rows(db, "SELECT * FROM eval_runs")}
    assert set(runs) == {"candidate", "current"}
    assert runs["candidate"] | {"id": 0, "ts": "", "p50_ms": 0, "p95_ms": 0, "cost_usd": 0} == {
        "id": 0, "run": result.run, "side": "candidate", "ts": "", "task": "title", "tier": "small",
        "targets": '["fake::small-model","fake::backup-model"]', "current": 0, "registry_hash": candidate.content_hash,
        "registry_source": candidate.source, "golden_source": cases.source, "threshold": 0.8, "max_regressions": 1,
        "repeats": 1, "total": 5, "passed": 3, "pass_rate": 0.6, "ci_low": wilson(3, 5)[0], "ci_high": wilson(3, 5)[1],
        "regressions": 2, "flipped": 0, "verdict": "fail", "cost_usd": 0, "judge_cost_usd": 0.0, "unpriced": 0,
        "reused": 0, "answers": 5, "p50_ms": 0, "p95_ms": 0,
    }  # fmt: skip
    assert runs["candidate"]["cost_usd"] == cand.cost_usd
    assert (runs["current"]["current"], runs["current"]["verdict"], runs["current"]["regressions"]) == (1, "pass", None)
    assert runs["current"]["registry_hash"] == registry.content_hash != candidate.content_hash
    results = _rows(
        db, "SELECT side, case_id, passed, reason, answer, regression FROM eval_results ORDER BY side, case_id"
    )
    assert len(results) == 10
    assert [(r["case_id"], r["passed"], r["regression"]) for r in results if r["side"] == "candidate"] == [
        ("c1", 1, 0), ("c2", 1, 0), ("c3", 1, 0), ("c4", 0, 1), ("c5", 0, 1)
    ]  # fmt: skip


async def test_the_current_tier_alone_runs_once(
    tmp_path: Path, registry: Registry, upstream: Upstream, db: str
) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    same = candidates.with_tier(registry, "title", "mid")  # the task's own tier: the registry itself
    result = await evaluate(cases, same, current_registry=registry, db=db)
    assert result.current is None and result.candidate_is_current
    assert (result.candidate.passed, result.verdict, result.regressions) == (5, "pass", ())
    assert len(upstream.chat()) == 5
    assert [r["current"] for r in _rows(db, "SELECT current FROM eval_runs")] == [1]
    # what decides is how the calls are sent, not how the task is described
    env = {"FAKE_URL": registry.providers["fake"].base_url.removesuffix("/v1")}
    described = rules.loads(RULES.replace("  title: mid", "  title: {tier: mid, description: titles}"), environ=env)
    assert diff.same_route(registry, described, "title")
    hotter = rules.loads(RULES.replace("  title: mid", "  title: {tier: mid, params: {temperature: 1}}"), environ=env)
    assert not diff.same_route(registry, hotter, "title")


async def test_a_model_candidate(tmp_path: Path, registry: Registry, upstream: Upstream, db: str) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    candidate = candidates.with_model(registry, "title", "fake::small-model")
    result = await evaluate(cases, candidate, current_registry=registry, db=db, options=Options(limit=4))
    # alone, with the params its tier gives it, no fallback
    assert (result.candidate.tier, result.candidate.targets) == ("model:fake::small-model", ("fake::small-model",))
    assert result.current is not None and result.candidate.total == result.current.total == 4
    assert [r.id for r in result.regressions] == ["c4"]
    assert all(b["temperature"] == 0.1 for b in upstream.chat("small-model"))
    # a model no tier has runs bare
    bare = candidates.with_model(registry, "title", "fake::other-model")
    assert bare.tiers["model:fake::other-model"].targets[0].params == {}
    with pytest.raises(candidates.CandidateError, match="'nope' is not a provider of rules.yaml"):
        candidates.with_model(registry, "title", "nope::x")


async def test_repeats_pass_by_majority_and_list_the_flips(
    tmp_path: Path, registry: Registry, upstream: Upstream
) -> None:
    rows = [
        {"id": c, "messages": [{"role": "user", "content": f"case {c}: write"}], "expect": {}}
        for c in ("c1", "c2", "c3")
    ]
    cases = golden.load(write_golden(tmp_path / "evals", spec=JUDGED, cases=rows))
    result = await evaluate(cases, registry, current_registry=registry, db=str(tmp_path / "a.db"))
    side = result.candidate
    # c1 always passes; c2 passes 2 of 3; c3 passes 1 of 3
    assert [(c.id, c.passed, c.repeats_passed) for c in side.cases] == [
        ("c1", True, 3),
        ("c2", True, 2),
        ("c3", False, 1),
    ]
    assert side.flipped == ("c2", "c3")
    assert side.case("c3").reason == "judge: judged c3"  # score_all names the scorer that failed it
    assert upstream.judged == {"c1": 3, "c2": 3, "c3": 3}
    # the judge's calls are priced apart; each reply is 5 words ({"pass": true, "reason": "judged c1"})
    judge_calls = upstream.chat("judge-model")
    assert len(judge_calls) == 9
    assert side.judge_cost_usd == pytest.approx(math.fsum(_cost(b, 5) for b in judge_calls), rel=1e-12)
    assert side.cost_usd == pytest.approx(math.fsum(_cost(b) for b in upstream.chat("mid-model")), rel=1e-12)
    assert {r["eval_run"] for r in _rows(str(tmp_path / "a.db"), "SELECT eval_run FROM requests")} == {result.run}

    # two repeats: a split is a tie, and a tie fails
    upstream.judged.clear()
    tied = await evaluate(cases, registry, current_registry=None, db=str(tmp_path / "b.db"), options=Options(repeats=2))
    assert [(c.id, c.passed, c.repeats_passed) for c in tied.candidate.cases] == [
        ("c1", True, 2), ("c2", False, 1), ("c3", False, 1)
    ]  # fmt: skip
    assert tied.candidate.flipped == ("c2", "c3")


async def test_a_rerun_reuses_stored_answers_unless_fresh(
    tmp_path: Path, registry: Registry, upstream: Upstream, db: str, fake_url: str
) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    candidate = candidates.with_tier(registry, "title", "small")
    first = await evaluate(cases, candidate, current_registry=registry, db=db)
    assert len(upstream.chat()) == 10

    again = await evaluate(cases, candidate, current_registry=registry, db=db)
    assert len(upstream.chat()) == 10  # no upstream call
    assert again.to_json()["cases"] == first.to_json()["cases"]
    assert again.to_json()["current"]["cases"] == first.to_json()["current"]["cases"]
    assert (again.candidate.reused, again.candidate.cost_usd, again.current and again.current.cost_usd) == (5, 0.0, 0.0)
    assert again.candidate.p50_ms == first.candidate.p50_ms  # a reused answer keeps its call's latency
    assert len(_rows(db, "SELECT id FROM requests")) == 10  # and no ledger row

    fresh = await evaluate(cases, candidate, current_registry=registry, db=db, options=Options(fresh=True))
    assert len(upstream.chat()) == 20 and fresh.candidate.reused == 0
    assert fresh.candidate.cost_usd == first.candidate.cost_usd

    # another prompt is another request: only the changed tier's answers are made again
    moved = rules.loads(
        RULES.replace("small:\n", "small:\n    prompt: {name: terse, append_to_last_user: Be brief.}\n"),
        environ={"FAKE_URL": fake_url},
        source="rules.yaml",
    )
    changed = await evaluate(cases, candidates.with_tier(moved, "title", "small"), current_registry=moved, db=db)
    assert len(upstream.chat()) == 25 and changed.candidate.reused == 0
    assert changed.current is not None and changed.current.reused == 5


async def test_the_same_model_at_another_endpoint_is_another_target(
    tmp_path: Path, registry: Registry, upstream: Upstream, db: str
) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    await evaluate(cases, registry, current_registry=None, db=db)
    other = Upstream()
    async with serve(other) as url:
        elsewhere = rules.loads(RULES, environ={"FAKE_URL": url}, source="rules.yaml")
        result = await evaluate(cases, elsewhere, current_registry=None, db=db)
    assert result.candidate.reused == 0 and len(other.chat()) == 5


async def test_only_the_first_hops_answers_are_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    upstream = Upstream(fail=lambda model, case: model == "small-model" and case == "c1")
    async with serve(upstream) as url:
        registry = rules.loads(RULES, environ={"FAKE_URL": url}, source="rules.yaml")
        candidate = candidates.with_tier(registry, "title", "small")
        cases = golden.load(write_golden(tmp_path / "evals"))
        first = await evaluate(cases, candidate, current_registry=None, db=db)
        assert first.candidate.case("c1").passed  # the backup model answered it right
        assert len(upstream.chat("backup-model")) == 1
        again = await evaluate(cases, candidate, current_registry=None, db=db)
    assert again.candidate.reused == 4  # c1's answer came from the fallback: not the small model's
    assert len(upstream.chat("backup-model")) == 2 and len(upstream.chat("small-model")) == 6


async def test_an_unanswered_case_fails_with_tiergates_error(tmp_path: Path, db: str) -> None:
    upstream = Upstream(fail=lambda model, case: case == "c2")
    async with serve(upstream) as url:
        registry = rules.loads(RULES, environ={"FAKE_URL": url}, source="rules.yaml")
        cases = golden.load(write_golden(tmp_path / "evals"))
        result = await evaluate(cases, registry, current_registry=registry, db=db)
    c2 = result.candidate.case("c2")
    assert not c2.passed and c2.answer == ""
    assert c2.reason.startswith("tiergate answered 503 ")


# --- the ledger and the audit -------------------------------------------------------------------


async def test_eval_traffic_is_left_out_of_the_audit(
    tmp_path: Path, registry: Registry, upstream: Upstream, start_proxy: ProxyFactory, db: str
) -> None:
    cases = golden.load(write_golden(tmp_path / "evals"))
    await evaluate(cases, registry, current_registry=registry, db=db)
    # a production tiergate does not honour the header: a client cannot hide its calls from the audit
    async with start_proxy(registry, db=db) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            body = {"model": "auto", "messages": [{"role": "user", "content": "case c1: hello"}]}
            response = await http.post(
                "/v1/chat/completions", json=body, headers={"X-Task-Type": "title", "X-Tiergate-Eval": "hide-me"}
            )
            assert response.status_code == 200
    assert _rows(db, "SELECT count(*) AS n, count(eval_run) AS evals FROM requests") == [{"n": 6, "evals": 5}]
    assert audit.summarize(db, "task").total.calls == 1
    assert audit.summarize(db, "task", audit.Scope(include_eval=True)).total.calls == 6

    table = report.report(db)
    assert table.startswith("Workload by task: 1 calls")
    assert table.endswith("\n5 eval calls left out (tiergate eval's traffic; --include-eval counts them).\n")
    assert report.report(db, include_eval=True).startswith("Workload by task: 6 calls")
    assert json.loads(report.report(db, fmt="json"))["eval_calls_left_out"] == 5
    assert main(["audit", "--db", db, "--include-eval", "--format", "json"]) == 0


def test_a_v3_ledger_is_migrated_and_an_unmigrated_one_still_audits(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO requests (id, ts, task, task_source, status, stream, usage_source, attempts, fallback) "
        "VALUES ('r1', '2026-11-01T00:00:00.000Z', 'title', 'header', 200, 0, 'none', 1, 0)"
    )
    conn.commit()
    conn.close()
    summary = audit.summarize(str(path), "task")  # read-only: not migrated, no eval_run (nor later) columns
    assert (summary.total.calls, summary.first_ts, [g.key for g in summary.groups]) == (
        1,
        "2026-11-01T00:00:00.000Z",
        ["title"],
    )
    open_ledger(str(path)).close()
    assert _rows(str(path), "SELECT id, eval_run FROM requests") == [{"id": "r1", "eval_run": None}]
    assert _rows(str(path), "SELECT count(*) AS n FROM eval_runs") == [{"n": 0}]


def test_the_registry_content_hash() -> None:
    a = rules.loads(RULES, environ={}, source="a.yaml")
    assert a.content_hash == rules.loads(RULES, environ={"FAKE_URL": "http://x"}, source="b.yaml").content_hash
    assert a.content_hash != rules.loads(RULES + "\n# a comment\n", environ={}).content_hash
    doc = {
        "providers": {"p": {"type": "openai", "base_url": "http://x"}},
        "tiers": {"t": {"targets": ["p::m"]}},
        "tasks": {"x": "t"},
    }
    built = rules.build(doc)
    assert len(built.content_hash) == 64 and built.content_hash == rules.build(dict(reversed(doc.items()))).content_hash
    assert candidates.with_tier(a, "title", "small").content_hash not in ("", a.content_hash)


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    write_golden(tmp_path / "evals")
    return tmp_path


def _cli(project: Path, *args: str) -> list[str]:
    return [
        "eval",
        *args,
        "--config",
        str(project / "rules.yaml"),
        "--evals",
        str(project / "evals"),
        "--db",
        str(project / "t.db"),
    ]


async def test_cli_json_is_one_object_of_the_documented_shape(
    project: Path, fake_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, _cli(project, "title", "--tier", "small", "--format", "json"))
    out = capsys.readouterr().out
    assert code == 1
    doc = json.loads(out)
    side = {
        "task", "candidate", "threshold", "max_regressions", "repeats", "passed", "total", "pass_rate", "ci95",
        "verdict", "regressions", "flipped", "cost_usd", "judge_cost_usd", "reused", "p50_ms", "p95_ms", "cases",
    }  # fmt: skip
    assert set(doc) == side | {"run", "current"}
    assert set(doc["current"]) == side
    assert doc["candidate"] == {"tier": "small", "targets": ["fake::small-model", "fake::backup-model"]}
    assert (doc["task"], doc["threshold"], doc["passed"], doc["total"], doc["pass_rate"]) == ("title", 0.8, 3, 5, 0.6)
    assert doc["ci95"] == list(wilson(3, 5)) and doc["verdict"] == "fail"
    assert doc["cases"][3] == {
        "id": "c4",
        "passed": False,
        "reason": "exact: expected 'right', got 'wrong'",
        "answer": "wrong",
    }
    assert doc["regressions"][0] == {
        "id": "c4", "reason": "exact: expected 'right', got 'wrong'", "answer": "wrong",
        "current_reason": "exact match", "current_answer": "right",
    }  # fmt: skip
    assert [r["id"] for r in doc["regressions"]] == ["c4", "c5"]
    assert (doc["current"]["candidate"]["tier"], doc["current"]["passed"], doc["current"]["verdict"]) == (
        "mid",
        5,
        "pass",
    )
    assert doc["current"]["regressions"] == []
    assert isinstance(doc["cost_usd"], float) and isinstance(doc["p50_ms"], float)

    # the current tier alone passes: exit 0, "current" is null
    assert await asyncio.to_thread(main, _cli(project, "title", "--format", "json")) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["current"] is None and alone["verdict"] == "pass" and alone["reused"] == 5


async def test_cli_table_shows_both_sides_and_the_regressions(
    project: Path, fake_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, _cli(project, "title", "--model", "fake::small-model")) == 1
    captured = capsys.readouterr()
    text = captured.out
    assert text.startswith(
        "tiergate eval title: candidate vs current, 5 cases x 1 repeat, threshold 80.0%, at most 1 regressions\n"
    )
    lines = text.splitlines()
    assert lines[2].split() == ["candidate", "current"]
    assert lines[3].split() == ["tier", "model:fake::small-model", "mid"]
    assert lines[5].split() == ["passed", "3/5", "(60.0%)", "5/5", "(100.0%)"]
    assert (
        "Regressions: 2 (at most 1 allowed)\n  c4: exact: expected 'right', got 'wrong'\n    candidate: 'wrong'\n    current:   'right'\n"
        in text
    )
    assert text.endswith("Verdict: FAIL (pass rate 60.0% < threshold 80.0%, 2 regressions > 1)\n")
    assert captured.err == ""  # no terminal: no progress bar


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["title", "--tier", "large"], "tiergate: --tier: 'large' is not a tier of "),
        (["title", "--model", "nope::x"], "tiergate: --model: 'nope' is not a provider of "),
        (["title", "--model", "small-model"], "tiergate: --model: expected provider::model"),
        (["title", "--tier", "small", "--model", "fake::x"], "tiergate: --tier and --model name two candidates"),
        (["title", "--repeats", "0"], "tiergate: --repeats: expected 1 or more, got 0"),
        (["title", "--repeats", "x"], "tiergate: eval: argument --repeats: invalid int value: 'x'"),
        (["title", "--format", "xml"], "tiergate: --format: expected one of table, json, got 'xml'"),
        (["summary"], "tiergate: 'summary' is not a task of "),
        (
            ["eval_judge"],
            "tiergate: {evals}/eval_judge: no golden set for 'eval_judge' (write eval.yaml and cases.jsonl)",
        ),
        ([], "tiergate: eval: name the TASK"),
    ],
)
def test_cli_mistakes_are_one_line_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(_cli(project, *args)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(message.format(evals=project / "evals")), err


def test_cli_bad_golden_set_is_one_line_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = project / "evals" / "title" / "cases.jsonl"
    cases.write_text(
        cases.read_text()
        + '{"id": "c9", "messages": [{"role": "user", "content": "x"}], "expect": {"answer": "y"}, "colour": 1}\n'
    )
    assert main(_cli(project, "title")) == 2
    assert (
        capsys.readouterr().err
        == f"tiergate: {cases}:6: colour: unknown key (a case has id, messages, expect, note, request params)\n"
    )


def test_cli_unusable_ledger_is_one_line_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(project, "title")
    args[args.index("--db") + 1] = str(project / "no-such-folder" / "t.db")
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"tiergate: --db: cannot use the ledger {project}/no-such-folder/t.db: unable to open database file\n"
    )


async def test_a_judge_task_the_registry_lacks_is_a_config_error(tmp_path: Path, registry: Registry, db: str) -> None:
    spec = JUDGED + "judge: {task: grader}\n"
    cases = golden.load(write_golden(tmp_path / "evals", spec=spec))
    with pytest.raises(ConfigError, match="judge.task: 'grader' is not a task of rules.yaml"):
        await evaluate(cases, registry, current_registry=None, db=db)
