"""The learned classifier's commands against a real ledger written by tiergate itself.

One module-wide ledger: an app's header-tagged calls (several call sites per task, varied fillers; see
``proxy.fakes.traffic``) sent with the official SDK through tiergate on loopback in front of the fake
upstream; failed calls and eval traffic among them. Then, per test: ``tiergate classifier train`` on it,
``tiergate classify`` with the model it wrote, and a second server with that model in shadow mode for
``tiergate audit --classifier``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from proxy import rules
from proxy.app import create_app
from proxy.classify.conditions import RequestView
from proxy.classify.features import features
from proxy.classify.model import load
from proxy.cli import main
from proxy.fakes import traffic
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.settings import Settings
from tests import ledgers
from tests.conftest import CLOSED_URL, RULES, UPSTREAM_KEY, sdk

TASKS = ("summary", "title_generation", "extraction", "relevance", "ad_copy")
PER_TASK = {"summary": 40, "title_generation": 40, "extraction": 40, "relevance": 25, "ad_copy": 40}
FAILING = "fails-upstream"  # the ``user`` of calls the fake upstream fails (every target, every tier)
EVAL_CALLS = 10


def registry_text(*, drop: tuple[str, ...] = (), classifier: dict[str, Any] | None = None, **extra: Any) -> str:
    """The shipped rules.yaml without ``drop``'s tasks, with this test's classify:/classifier: only."""
    doc = yaml.safe_load(RULES.read_text())
    doc.pop("classify", None)
    doc.pop("classifier", None)
    for task in drop:
        del doc["tasks"][task]
    if classifier is not None:
        doc["classifier"] = classifier
    doc.update(extra)
    return yaml.safe_dump(doc, sort_keys=False)


def serving(text: str, upstream: str) -> Registry:
    environ = {"OPENAI_BASE_URL": upstream + "/v1", "OPENAI_API_KEY": UPSTREAM_KEY, "ANTHROPIC_BASE_URL": CLOSED_URL}
    return rules.loads(text, environ=environ, source=str(RULES))


def choose(body: dict[str, Any]) -> Behavior | None:
    return Behavior(status=500) if body.get("user") == FAILING else None


@asynccontextmanager
async def tiergate(db: Path, text: str, **settings: Any) -> AsyncIterator[str]:
    """The fake upstream and tiergate in front of it (``text`` as its registry), both on loopback."""
    async with serve(FakeOpenAI(choose=choose)) as upstream:
        app = create_app(Settings(db=str(db), **settings), serving(text, upstream))
        async with serve(app) as url:
            yield url
    # both servers have stopped: the ledger writer has drained


async def send(url: str, calls: list[tuple[str | None, dict[str, Any]]], **headers: str) -> int:
    """Each (task header or None, body) through the SDK, 16 at a time; the number that failed."""
    client = sdk(url, headers)
    gate = asyncio.Semaphore(16)

    async def one(task: str | None, body: dict[str, Any]) -> bool:
        extra = {"X-Task-Type": task} if task else {}
        async with gate:
            try:
                await client.chat.completions.create(**body, extra_headers=extra)
                return False
            except openai.APIStatusError:
                return True

    try:
        return sum(await asyncio.gather(*(one(t, b) for t, b in calls)))
    finally:
        await client.close()


def tagged_calls() -> list[tuple[str | None, dict[str, Any]]]:
    out: list[tuple[str | None, dict[str, Any]]] = []
    for i, task in enumerate(TASKS):
        out += traffic.calls(PER_TASK[task], seed=100 + i, tasks=[task])  # type: ignore[arg-type]
    for _, body in out[::37]:  # failed calls are labelled examples too: the label is the header's
        body["user"] = FAILING
    return out


@dataclass(frozen=True)
class Ledger:
    db: Path
    tagged: int
    failed: int


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    db = tmp_path_factory.mktemp("ledger") / "tiergate.db"
    calls = tagged_calls()
    evals = [("ad_copy", b) for _, b in traffic.calls(EVAL_CALLS, seed=7, tasks=["title_generation"])]

    async def write() -> int:
        async with tiergate(db, registry_text(), eval_traffic=True) as url:
            failed = await send(url, calls)
            await send(url, evals, **{"X-Tiergate-Eval": "run-1"})  # eval traffic: never training data
            await send(url, [(None, b) for _, b in traffic.calls(5, seed=8)])  # untagged: no label
        return failed

    failed = asyncio.run(write())
    assert failed == len(calls[::37]) > 0
    return Ledger(db, len(calls), failed)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_file(ledger: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "classifier.json"
    config = tmp_path_factory.mktemp("config") / "rules.yaml"
    config.write_text(registry_text())
    assert main(["classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(out)]) == 0
    return out


def held_out_accuracy(model_path: Path, n: int = 300) -> float:
    """The model's accuracy on calls generated after training (new fillers, same call sites)."""
    model = load(model_path)
    calls = traffic.calls(n, seed=4242, tasks=list(model.tasks))
    right = sum(model.predict(features(RequestView(body, {}), 0))[0][0][0] == task for task, body in calls)
    return right / n


def test_train_reports_k_fold_accuracy_and_writes_a_model_that_generalises(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text())
    out = tmp_path / "classifier.json"
    code, text, err = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(out),
        "--format", "json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    report = json.loads(text)
    assert report["examples"] == ledger.tagged  # failed calls included, eval and untagged ones not
    assert report["tasks"] == sorted(TASKS)
    assert report["accuracy"] >= 0.9
    assert {t: v["examples"] for t, v in report["per_task"].items()} == PER_TASK
    assert all(v["precision"] >= 0.8 and v["recall"] >= 0.8 for v in report["per_task"].values())
    assert sum(sum(row.values()) for row in report["confusion"].values()) == ledger.tagged
    assert report["out"] == str(out) and report["left_out"] == {} and report["foreign_key_rows"] == 0
    assert "agent" in report["untrained"]
    model = load(out)
    assert model.tasks == tuple(sorted(TASKS)) and model.examples == ledger.tagged
    assert model.meta["registry_hash"] == rules.load(config).content_hash and model.meta["rows"] == ledger.tagged
    assert held_out_accuracy(out) >= 0.9


def test_train_as_a_table(ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text())
    code, text, _ = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out",
        str(tmp_path / "m.json"), "--folds", "3",
    )  # fmt: skip
    assert code == 0
    assert text.startswith(f"Trained on {ledger.tagged} header-tagged calls of 5 tasks")
    assert "3-fold accuracy" in text and "Confusion" in text and "true \\ predicted" in text
    row = next(line for line in text.splitlines() if line.startswith("relevance "))
    assert row.split()[1] == "25"


def test_tasks_the_registry_lacks_are_left_out_and_said(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(drop=("ad_copy",)))
    code, text, _ = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out",
        str(tmp_path / "m.json"), "--format", "json",
    )  # fmt: skip
    report = json.loads(text)
    assert code == 0 and "ad_copy" not in report["tasks"]
    assert report["left_out"] == {"ad_copy": PER_TASK["ad_copy"]}
    assert report["examples"] == ledger.tagged - PER_TASK["ad_copy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--min-examples", "30"],
            "tiergate: too few header-tagged examples to train (--min-examples 30): relevance has 25; tag more",
        ),
        (["--min-examples", "41"], "(--min-examples 41): relevance has 25, ad_copy has 40, extraction has 40,"),
        (["--since", "2999-01-01"], "tiergate: no header-tagged calls with features in the ledger for that period"),
        (["--folds", "1"], "tiergate: --folds: expected 2 or more, got 1"),
        (["--since", "yesterday"], "tiergate: --since: expected 24h, 90m, 7d"),
        (["--format", "csv"], "tiergate: --format: expected table or json, got 'csv'"),
    ],
)
def test_train_refuses_in_one_line(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text())
    out = tmp_path / "m.json"
    code, text, err = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(out), *argv
    )
    assert (code, text) == (2, "")
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_fewer_than_two_tasks_is_refused(ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(drop=("title_generation", "extraction", "relevance", "ad_copy")))
    code, _, err = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(tmp_path / "m")
    )
    assert code == 2
    assert (
        err
        == "tiergate: training needs header-tagged calls of at least two tasks; the ledger has 40 of one (summary)\n"
    )


def test_a_changed_feature_key_is_refused(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text())
    monkeypatch.setenv("TIERGATE_FEATURE_KEY", "a key the server never used")
    code, _, err = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(tmp_path / "m")
    )
    assert code == 2
    assert err.startswith(f"tiergate: none of the ledger's {ledger.tagged} header-tagged calls was hashed with this")


def test_retraining_when_the_old_model_names_a_dropped_task(
    ledger: Ledger, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry dropped a task the model knows: the server refuses the model, training replaces it."""
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(drop=("ad_copy",), classifier={"model": str(model_file)}))
    code, _, err = run(capsys, "check", str(config), "--evals", str(tmp_path))
    assert code == 2 and "classifier.model" in err and "no longer has: ad_copy (retrain it)" in err
    out = tmp_path / "new.json"
    code, text, _ = run(
        capsys, "classifier", "train", "--db", str(ledger.db), "--config", str(config), "--out", str(out),
        "--format", "json",
    )  # fmt: skip
    assert code == 0 and json.loads(text)["left_out"] == {"ad_copy": 40}
    assert load(out).meta["registry_hash"] == hashlib.sha256(config.read_bytes()).hexdigest()
    registry = rules.loads(registry_text(drop=("ad_copy",)))
    assert load(out, list(registry.tasks)).tasks == tuple(sorted(set(TASKS) - {"ad_copy"}))  # now it loads


# --- tiergate classify --------------------------------------------------------------------------


def classify(capsys: pytest.CaptureFixture[str], config: Path, body: dict[str, Any], *argv: str) -> dict[str, Any]:
    request = config.with_name("request.json")
    request.write_text(json.dumps(body))
    code, text, err = run(capsys, "classify", str(request), "--config", str(config), "--format", "json", *argv)
    assert (code, err) == (0, "")
    result: dict[str, Any] = json.loads(text)
    return result


def test_classify_an_untagged_request_with_the_trained_model(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(classifier={"model": str(model_file), "min_confidence": 0.7}))
    [(task, body)] = traffic.calls(1, seed=31337, tasks=["extraction"])
    result = classify(capsys, config, body)
    assert (result["task"], result["source"], result["tier"]) == ("extraction", "classifier", "small")
    assert result["confidence"] >= 0.7 and result["confidence"] == result["top"][0][1]
    assert result["top"][0][0] == "extraction" and len(result["top"]) == 3
    assert result["abstained"] is False and result["coverage"] >= 0.5
    registry = rules.load(config)
    assert result["targets"][:2] == [t.key for t in registry.tiers["small"].targets]
    code, text, _ = run(capsys, "classify", str(config.with_name("request.json")), "--config", str(config))
    assert code == 0
    assert "source:  classifier (extraction at" in text and "targets: openai::gpt-5.4-nano" in text
    assert f"classifier {model_file} (min_confidence 0.7)" in text


def test_classify_abstains_on_a_request_unlike_any_task(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(classifier={"model": str(model_file)}))
    default = rules.load(config).default_task
    result = classify(capsys, config, traffic.unlike_any(seed=5))
    assert (result["task"], result["source"], result["confidence"], result["abstained"]) == (
        default,
        "default",
        None,
        True,
    )
    assert result["coverage"] < 0.5
    assert any("coverage" in reason and "unlike the traffic" in reason for reason in result["reasons"])


def test_classify_abstains_below_min_confidence(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(classifier={"model": str(model_file), "min_confidence": 0.95}))
    rng = random.Random(8)
    # no call site's wording, only words every task's users type: the model has seen them all, it cannot tell
    body = {"model": "auto", "messages": [{"role": "user", "content": traffic.filler(rng, rng.randint(3, 40))}]}
    result = classify(capsys, config, body)
    (task, p), coverage = result["top"][0], result["coverage"]
    assert p < 0.95 and coverage >= 0.5
    assert (result["source"], result["abstained"]) == ("default", True)
    assert result["reasons"] == [f"{task} at {p:.2f} is below min_confidence 0.95"]


def test_classify_explains_header_and_rule_decisions(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = {"name": "json-out", "task": "extraction", "when": {"response_format": "json_object"}}
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(classifier={"model": str(model_file)}, classify=[rule]))
    [(_, body)] = traffic.calls(1, seed=9, tasks=["extraction"])
    assert body["response_format"] == {"type": "json_object"}
    result = classify(capsys, config, body)
    assert (result["task"], result["source"], result["rule"], result["abstained"]) == (
        "extraction",
        "rule:json-out",
        "json-out",
        None,
    )
    assert result["top"][0][0] == "extraction"  # what shadow mode logs
    result = classify(capsys, config, body, "--header", "X-Task-Type: summary")
    assert (result["task"], result["source"], result["tier"]) == ("summary", "header", "mid")
    code, text, _ = run(capsys, "classify", str(config.with_name("request.json")), "--config", str(config))
    assert "source:  rule:json-out (the first classify rule that matched: json-out -> extraction)" in text
    assert "shadow mode" in text


@pytest.mark.parametrize(
    ("argv", "body", "message"),
    [
        (["--header", "X-Task-Type: nope"], None, "tiergate: Unknown X-Task-Type 'nope'."),
        (["--header", "no-colon"], None, "tiergate: --header: expected K:V, got 'no-colon'"),
        ([], {"messages": []}, "not a chat request the server accepts: Missing required parameter: 'model'."),
    ],
)
def test_classify_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], body: Any, message: str
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text())
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body or traffic.calls(1)[0][1]))
    code, text, err = run(capsys, "classify", str(request), "--config", str(config), *argv)
    assert (code, text) == (2, "")
    assert message in err and err.count("\n") == 1


def test_a_model_trained_for_a_task_the_registry_lacks_is_refused_at_load(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(registry_text(drop=("relevance",), classifier={"model": str(model_file)}))
    request = tmp_path / "request.json"
    request.write_text(json.dumps(traffic.calls(1)[0][1]))
    code, _, err = run(capsys, "classify", str(request), "--config", str(config))
    assert code == 2
    assert err == (
        f"tiergate: classifier.model: {model_file} was trained for tasks the registry no longer has: relevance "
        "(retrain it)\n"
    )


# --- tiergate audit --classifier ----------------------------------------------------------------


async def test_audit_counts_shadow_agreement_exactly(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = {"name": "json-out", "task": "extraction", "when": {"response_format": "json_object"}}
    text = registry_text(classifier={"model": str(model_file)}, classify=[rule])
    tagged: list[tuple[str | None, dict[str, Any]]] = list(traffic.calls(60, seed=555, tasks=TASKS))
    # a call site that changed: still tagged summary, but it now sends the title prompt
    tagged += [("summary", body) for _, body in traffic.calls(6, seed=556, tasks=["title_generation"])]
    untagged: list[tuple[str | None, dict[str, Any]]] = [(None, b) for _, b in traffic.calls(15, seed=557, tasks=TASKS)]
    untagged += [(None, traffic.unlike_any(seed=1)), (None, traffic.unlike_any(seed=2))]
    db = tmp_path / "shadow.db"
    async with tiergate(db, text) as url:
        assert await send(url, tagged + untagged) == 0

    # what the server must have logged, decided the way it decides (the ledger's counting is under test)
    from proxy.classify.decide import Classifier

    classifier = Classifier(rules.loads(text, environ={}, source=str(RULES)), 0)
    predicted = [classifier.decide({}, body).predicted for _, body in tagged]
    decisions = [classifier.decide({}, body) for _, body in untagged]
    sources = Counter(d.source for d in decisions) + Counter({"header": len(tagged)})
    assert {"rule:json-out", "classifier", "default"} <= set(sources)
    confidences = [d.confidence for d in decisions if d.source == "classifier"]

    code, out, err = run(capsys, "audit", "--classifier", "--db", str(db), "--format", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["calls"] == len(tagged) + len(untagged) and report["tagged"] == len(tagged)
    per_task = {t["task"]: t for t in report["tasks"]}
    for task in TASKS:
        mine = [(p, t) for p, (t, _) in zip(predicted, tagged, strict=True) if t == task]
        wrong = Counter(p for p, t in mine if p != t)
        assert per_task[task]["scored"] == len(mine)
        assert per_task[task]["agreed"] == sum(1 for p, t in mine if p == t)
        assert (per_task[task]["miss"], per_task[task]["miss_calls"]) == (
            wrong.most_common(1)[0] if wrong else (None, 0)
        )
    assert per_task["summary"]["miss"] == "title_generation" and per_task["summary"]["miss_calls"] >= 6
    total = report["total"]
    assert total["scored"] == len(tagged) and total["agreed"] == sum(
        p == t for p, (t, _) in zip(predicted, tagged, strict=True)
    )
    got = {s["source"]: s for s in report["sources"]}
    assert {s: v["calls"] for s, v in got.items()} == dict(sources)
    assert got["classifier"]["mean_confidence"] == pytest.approx(sum(confidences) / len(confidences))  # type: ignore[arg-type]
    assert sum(p["scored"] for p in report["periods"]) == len(tagged)

    code, out, _ = run(capsys, "audit", "--classifier", "--db", str(db))
    assert code == 0 and "How calls were decided" in out and "Drift: agreement by day" in out
    summary_line = next(line for line in out.splitlines() if line.startswith("summary "))
    assert summary_line.endswith(f"title_generation ({per_task['summary']['miss_calls']})")


def _row(ts: str, task: str, predicted: str | None, source: str = "header") -> dict[str, Any]:
    return {"ts": ts, "task": task, "task_source": source, "task_predicted": predicted, "task_confidence": None}


def test_drift_shows_a_call_site_that_changed(tmp_path: Path) -> None:
    from proxy.classify.agreement import summarize

    rows = [_row("2026-11-02T10:00:00.000Z", "summary", "summary") for _ in range(9)]
    rows += [_row("2026-11-02T11:00:00.000Z", "summary", "narrative")]
    rows += [_row("2026-11-09T10:00:00.000Z", "summary", "title_generation") for _ in range(3)]
    rows += [_row("2026-11-10T10:00:00.000Z", "summary", "summary")]
    rows += [_row("2026-11-10T10:00:00.000Z", "agent", None)]  # not scored: no model then
    rows += [_row("2026-11-10T12:00:00.000Z", "summary", "summary", "rule:titles")]
    db = tmp_path / "drift.db"
    ledgers.write(db, [{"id": f"r{i}", **row} for i, row in enumerate(rows)])
    by_day = summarize(str(db), by="day")
    assert [(p.period, p.scored, p.agreement) for p in by_day.periods] == [
        ("2026-11-02", 10, 0.9), ("2026-11-09", 3, 0.0), ("2026-11-10", 1, 1.0)
    ]  # fmt: skip
    by_week = summarize(str(db), by="week")  # 2026-11-02 and 2026-11-09 are Mondays
    assert [(p.period, p.scored, p.tasks) for p in by_week.periods] == [
        ("2026-11-02", 10, {"summary": (9, 10)}), ("2026-11-09", 4, {"summary": (1, 4)})
    ]  # fmt: skip
    [summary] = by_day.tasks
    assert (summary.scored, summary.agreed, summary.miss, summary.miss_calls) == (14, 10, "title_generation", 3)
    assert by_day.tagged == 15 and [(s.source, s.calls) for s in by_day.sources] == [("header", 15), ("rule:titles", 1)]


def test_audit_classifier_on_a_ledger_without_a_model(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "--classifier", "--db", str(ledger.db))
    assert code == 0
    assert f"none of the {ledger.tagged} header-tagged calls was scored" in out
    code, _, err = run(capsys, "audit", "--classifier", "--db", str(ledger.db), "--by", "model")
    assert (code, err) == (2, "tiergate: --by: with --classifier, expected day or week, got 'model'\n")


def test_since_keeps_the_rows_from_that_millisecond_on(ledger: Ledger) -> None:
    from proxy.classify.training import read_labelled
    from proxy.ledger.audit import parse_since

    every = read_labelled(str(ledger.db), 0, TASKS)
    sql = "SELECT ts FROM requests WHERE task_source = 'header' AND features IS NOT NULL AND eval_run IS NULL"
    conn = sqlite3.connect(ledger.db)
    try:
        stamps = sorted(ts for (ts,) in conn.execute(sql))
    finally:
        conn.close()
    middle = stamps[len(stamps) // 2]
    later = read_labelled(str(ledger.db), 0, TASKS, parse_since(middle))
    assert every.rows == len(stamps) and (every.first_ts, every.last_ts) == (stamps[0], stamps[-1])
    assert later.rows == sum(ts >= middle for ts in stamps) and later.first_ts == middle
