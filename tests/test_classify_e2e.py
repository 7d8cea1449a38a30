"""Untagged calls through the official SDK land on the right task: header, then rules, then the learned
classifier, then the default; the decision is in the response headers and the ledger, and no prompt text
is in the ledger file unless rules.yaml opts in.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from proxy.classify.conditions import RequestView
from proxy.classify.features import decode, features
from proxy.classify.model import train
from proxy.registry import Registry
from proxy.rules import loads
from tests.conftest import RULES, ProxyFactory, sdk
from tests.test_ledger import rows

WORDS = "invoice refund export dashboard login crash queue deploy webhook billing seat plan sso report".split()
TEMPLATES: dict[str, tuple[str, list[str]]] = {
    "narrative": ("You write the weekly account story for a customer success manager.",
                  ["Write the story of {x}", "Tell the week of the account: {x}"]),
    "relevance": ("Answer yes or no: is the document relevant to the query?",
                  ["Query: {x}\nDocument: {x}", "Is this relevant? {x}"]),
    "ad_copy": ("You write punchy ad copy for a SaaS launch.", ["Three taglines for {x}", "Ad copy about {x}"]),
}  # fmt: skip


def _body(task: str, rng: random.Random) -> dict[str, Any]:
    system, users = TEMPLATES[task]
    filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": rng.choice(users).format(x=filler)},
        ]
    }


def _registry(upstream_url: str, classifier: dict[str, Any] | None = None) -> Registry:
    doc = yaml.safe_load(RULES.read_text())
    doc["policy"] = {"retries": 0}
    for tier in doc["tiers"].values():
        tier.pop("policy", None)
    if classifier is not None:
        doc["classifier"] = classifier
    env = {
        "OPENAI_BASE_URL": upstream_url + "/v1",
        "OPENAI_API_KEY": "sk-up",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
    }
    return loads(yaml.safe_dump(doc, sort_keys=False), environ=env)


def _model(tmp_path: Path) -> Path:
    rng = random.Random(7)
    examples = [(t, features(RequestView(_body(t, rng), {}), 0)) for t in TEMPLATES for _ in range(40)]
    model, evaluation = train(examples, 0)
    assert evaluation.accuracy >= 0.9
    path = tmp_path / "classifier.json"
    path.write_bytes(model.to_json())
    return path


async def test_rules_classify_untagged_calls_and_the_header_always_wins(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with start_proxy(_registry(upstream_url), db=str(db)) as url:
        client = sdk(url)
        summary = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Summarise: the deploy paused, nothing was lost"}]
        )
        ticket = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {"role": "system", "content": "Label each support ticket as bug, billing or feature."},
                {"role": "user", "content": "The export button does nothing"},
            ],
        )
        tagged = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "Summarise: but I am tagged"}],
            extra_headers={"X-Task-Type": "narrative"},
        )
        neither = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What should I cook tonight?"}]
        )
        await client.close()
    got = [
        (r.headers["x-tiergate-task"], r.headers["x-tiergate-task-source"]) for r in (summary, ticket, tagged, neither)
    ]
    assert got == [
        ("summary", "rule:summaries"),
        ("classification", "rule:ticket-labels"),
        ("narrative", "header"),
        ("agent", "default"),
    ]
    ledger = rows(db)
    assert [(r["task"], r["task_source"], r["task_confidence"]) for r in ledger] == [
        ("summary", "rule:summaries", None),
        ("classification", "rule:ticket-labels", None),
        ("narrative", "header", None),
        ("agent", "default", None),
    ]
    assert all(r["features"] and decode(r["features"]) == sorted(decode(r["features"])) for r in ledger)


async def test_the_learned_classifier_decides_when_sure_and_abstains_otherwise(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path
) -> None:
    path = _model(tmp_path)
    registry = _registry(upstream_url, {"model": str(path), "min_confidence": 0.8})
    db = tmp_path / "l.db"
    rng = random.Random(99)  # fresh fillers: these exact requests were never trained on
    async with start_proxy(registry, db=str(db)) as url:
        client = sdk(url)
        decided = []
        for task in TEMPLATES:
            raw = await client.chat.completions.with_raw_response.create(model="auto", **_body(task, rng))  # type: ignore[arg-type]
            decided.append((task, raw.headers["x-tiergate-task"], raw.headers["x-tiergate-task-source"]))
        unlike = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Translate 'good morning' into Basque, please"}]
        )
        shadow = await client.chat.completions.with_raw_response.create(
            model="auto",
            extra_headers={"X-Task-Type": "summary"},
            **_body("ad_copy", rng),  # type: ignore[arg-type]
        )
        await client.close()
    assert decided == [(t, t, "classifier") for t in TEMPLATES]
    assert (unlike.headers["x-tiergate-task"], unlike.headers["x-tiergate-task-source"]) == ("agent", "default")
    assert shadow.headers["x-tiergate-task-source"] == "header"
    ledger = rows(db)
    classified = [r for r in ledger if r["task_source"] == "classifier"]
    assert len(classified) == 3 and all(0.8 <= r["task_confidence"] <= 1 for r in classified)
    assert [r["task_predicted"] for r in classified] == list(TEMPLATES)
    # shadow mode: a tagged call keeps what the classifier would have chosen
    assert (ledger[-1]["task"], ledger[-1]["task_predicted"]) == ("summary", "ad_copy")
    assert ledger[3]["task_confidence"] is None  # the classifier abstained: no confidence recorded


async def test_no_prompt_text_in_the_ledger_file_unless_opted_in(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path
) -> None:
    secret = "Patient Zelda Quist, date of birth 1961-04-02"
    path = _model(tmp_path)
    for capture in (False, True):
        db = tmp_path / f"capture-{capture}.db"
        registry = _registry(upstream_url, {"model": str(path), "capture_text": capture})
        async with start_proxy(registry, db=str(db)) as url:
            client = sdk(url)
            await client.chat.completions.create(
                model="auto",
                messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": secret}],
            )
            await client.close()
        stored = b"".join(p.read_bytes() for p in tmp_path.glob(db.name + "*"))
        assert (secret.encode() in stored) is capture
        [row] = rows(db)
        assert (row["prompt_text"] is not None) is capture
