"""The request path's classification is written for speed (bench/classify.py); these tests hold it to the
straightforward versions it replaced, kept here as the reference: the same features, the same scores to
the last bit (the model's predictions, summed in fixed-point lanes, to 1e-9), the same rule verdicts, over
generated inputs that include the awkward cases (non-ASCII text, Unicode digits and case folding, inline
regex flags, branches). What ``Classifier.decide`` works out once per call site (proxy.classify.sites,
and the gate that rules a site's remaining rules out together) is held to the reference decision made
from scratch, over calls that share sites and differ in everything else; its probabilities to 1e-9."""

from __future__ import annotations

import json
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy import rules
from proxy.classify import features as F
from proxy.classify import model as M
from proxy.classify.conditions import RequestView, matcher, parse_condition, predicate, required_literals
from proxy.classify.decide import Classifier, Decision
from proxy.classify.gate import Gate, needs
from proxy.classify.model import Model, softmax, train
from proxy.classify.sites import SiteRules, Sites, site_key
from proxy.fakes import traffic
from proxy.registry import ClassifyRule, Condition, Registry
from tests.conftest import RULES, FakeClock

# --- the reference implementations --------------------------------------------------------------


def ref_text_features(field: str, value: str, seed: int) -> tuple[int, ...]:
    words = re.findall(r"\w+", re.sub(r"\d", "0", value[: F.WORDS * 16].lower()))[: F.WORDS]
    grams = [f"{field}:{w}" for w in words]
    grams += [f"{field}:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return tuple(zlib.crc32(g.encode(), seed) & (F.BUCKETS - 1) for g in grams)


def ref_features(view: RequestView, seed: int) -> tuple[int, ...]:
    def bucket(n: int) -> int:
        return n if n < 3 else 1 << (n - 1).bit_length()

    ids = set(ref_text_features("s", view.system, seed))
    ids.update(ref_text_features("u", view.last_user, seed))
    structure = [f"m:{bucket(len(view.messages))}", f"f:{view.response_format}"]
    if view.has_tools:
        structure.append("t:tools")
        structure.extend(f"t:{name}" for name in sorted(view.tool_names))
    if view.max_tokens is not None:
        structure.append(f"k:{bucket(view.max_tokens)}")
    ids.update(zlib.crc32(g.encode(), seed) & (F.BUCKETS - 1) for g in structure)
    return tuple(sorted(ids))


def ref_predict(model: Model, ids: Sequence[int]) -> tuple[list[float], list[tuple[str, float]], float]:
    n = len(ids)
    scores = [
        prior + n * default + sum(map(w.get, ids, repeat(0.0)))
        for prior, default, w in zip(model.priors, model.defaults, model.weights, strict=True)
    ]
    ranked = sorted(zip(model.tasks, softmax(scores, model.temperature), strict=True), key=lambda tp: -tp[1])
    coverage = sum(1 for i in ids if i in model.known) / len(ids) if ids else 0.0
    return scores, ranked, coverage


def ref_holds(condition: Condition, view: RequestView) -> bool:
    kind = condition.kind

    def search(value: str) -> bool:
        assert condition.pattern is not None
        return condition.pattern.search(value) is not None

    def within(value: int | None) -> bool:
        low, high = condition.low, condition.high
        return value is not None and (low is None or value >= low) and (high is None or value <= high)

    if kind == "always":
        return True
    if kind == "all":
        return all(ref_holds(c, view) for c in condition.children)
    if kind == "any":
        return any(ref_holds(c, view) for c in condition.children)
    if kind == "not":
        return not ref_holds(condition.children[0], view)
    if kind == "system":
        return search(view.system)
    if kind == "last_user":
        return search(view.last_user)
    if kind == "any_message":
        return any(search(t) for t in view.texts)
    if kind == "tools":
        if not condition.values:
            return view.has_tools is condition.present
        return not view.tool_names.isdisjoint(condition.values)
    if kind == "response_format":
        return view.response_format in condition.values
    if kind == "max_tokens":
        return within(view.max_tokens)
    if kind == "messages":
        return within(len(view.messages))
    if kind == "metadata":
        metadata = view.body.get("metadata")
        value = metadata.get(condition.key) if isinstance(metadata, dict) else None
        return isinstance(value, str) and search(value)
    value = view.headers.get(condition.key or "")
    return value is not None and search(value)


# --- generated inputs ---------------------------------------------------------------------------

# ASCII and not: Unicode digits (٣), letters whose case folding is not str.lower's (ſ folds to s, the
# Kelvin sign to k, İ lowers to two characters), CJK, punctuation.
ALPHABET = "abcdeiklnorstxyz ABCKLST 0123456789 _-.,;:!?'\n\t İıſKéß日本٣٤"
WORDS = ["extract", "title", "Invoice", "KELVIN", "ſummary", "conversation", "label", "yes", "no", "the", "ok"]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40)))
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 1500)))


def random_body(rng: random.Random) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(rng.randint(0, 5)):
        role = rng.choice(["system", "developer", "user", "assistant", "tool"])
        content: Any = random_text(rng)
        if rng.random() < 0.2:
            content = [{"type": "text", "text": random_text(rng)}, {"type": "image_url"}]
        messages.append({"role": role, "content": content})
    body: dict[str, Any] = {"model": "auto", "messages": messages}
    if rng.random() < 0.3:
        body["tools"] = [{"type": "function", "function": {"name": rng.choice(["a", "lookup", "b"])}}]
    if rng.random() < 0.3:
        body["response_format"] = {"type": rng.choice(["text", "json_object", "json_schema"])}
    if rng.random() < 0.5:
        body[rng.choice(["max_tokens", "max_completion_tokens"])] = rng.randint(0, 5000)
    if rng.random() < 0.3:
        body["metadata"] = {"feature": random_text(rng)[:30]}
    return body


REGEXES = [
    "(?i)conversation title", "(?i)^extract\\b", "(?i)\\b(label|title)s?\\b", "(?i)invoice|receipt",
    "(?i)kelvin", "(?i)summary", "(?i)ſummary", "(?i)señor", "Invoice", "^yes$", "(?i:title) ok", "(?i)(?-i:KEL)vin",
    "(?i)t[iı]tle", "ok|(?i:conversation)", "(?m)^no", "(?x) ext  ract", "(?i)\\bthe (label|conversation)\\b",
    "[0-9]{3}", ".", "(?i)yes(?= no)", "(?i)(extract)+", "é", "(?i)日本",
]  # fmt: skip


def random_when(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kinds = ["system", "last_user", "any_message", "tools", "response_format", "max_tokens", "messages"]
    kinds += ["metadata", "header"] + (["all", "any", "not"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind in ("system", "last_user", "any_message"):
        return {kind: rng.choice(REGEXES)}
    if kind == "tools":
        return {kind: rng.choice([True, False, ["lookup"], ["x", "a"]])}
    if kind == "response_format":
        return {kind: rng.choice(["text", ["json_object", "json_schema"]])}
    if kind in ("max_tokens", "messages"):
        return {kind: rng.choice([{"min": 2}, {"max": 100}, {"min": 1, "max": 3000}])}
    if kind in ("metadata", "header"):
        return {kind: {"feature" if kind == "metadata" else "user-agent": rng.choice(REGEXES)}}
    if kind == "not":
        return {kind: random_when(rng, depth + 1)}
    return {kind: [random_when(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


# --- the tests ------------------------------------------------------------------------------------


def test_text_features_are_the_reference_ones() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        value, seed = random_text(rng), rng.choice([0, 1, 12345, 2**32 - 1])
        assert F._text_features("u", value, seed) == ref_text_features("u", value, seed), value


def test_request_features_are_the_reference_ones() -> None:
    rng = random.Random(2)
    for _ in range(1500):
        body, seed = random_body(rng), rng.choice([0, 99])
        assert F.features(RequestView(body, {}), seed) == ref_features(RequestView(body, {}), seed)


@pytest.fixture(scope="module")
def model() -> Model:
    calls = traffic.calls(300, seed=5)
    trained, _ = train([(task, F.features(RequestView(body, {}), 0)) for task, body in calls], 0)
    return trained


def assert_same_ranking(got: Sequence[tuple[str, float]], expected: Sequence[tuple[str, float]]) -> None:
    """Probabilities to 1e-9, rank by rank; a task may stand elsewhere only when it ties to that tolerance."""
    assert len(got) == len(expected)
    reference = dict(expected)
    for (task, p), (_, q) in zip(got, expected, strict=True):
        assert math.isclose(p, q, rel_tol=0, abs_tol=1e-9)
        assert math.isclose(reference.get(task, -1.0), q, rel_tol=0, abs_tol=1e-9), (task, got, expected)


def test_scores_are_the_reference_ones_to_the_bit_and_predictions_to_1e_9(model: Model) -> None:
    rng = random.Random(3)
    known = sorted(model.known)
    cases: list[Sequence[int]] = [F.features(RequestView(body, {}), 0) for _, body in traffic.calls(200, seed=6)]
    # unknown features, duplicates, nothing at all
    cases += [
        [rng.choice(known) if rng.random() < 0.5 else rng.randrange(F.BUCKETS) for _ in range(rng.randint(0, 90))]
        for _ in range(300)
    ]
    for ids in cases:
        scores, ranked, coverage = ref_predict(model, ids)
        assert model.scores(ids) == scores
        got, got_coverage = model.predict(ids)
        assert got_coverage == coverage
        assert_same_ranking(got, ranked)
    assert all(math.isfinite(s) for s in model.scores([]))


def test_the_lanes_hold_extreme_weights_and_many_features() -> None:
    rng = random.Random(13)
    tasks = ("a", "b", "c")
    weights = tuple({f: rng.uniform(-M.MAX_WEIGHT, M.MAX_WEIGHT) * 0.999 for f in range(k, 2000, 3)} for k in range(3))
    known = frozenset(f for w in weights for f in w)
    # a temperature of the weights' size: probabilities then move by about the scores' rounding
    model = Model(tasks, 0, (-1.0, -2.0, -3.0), (-5.0, -6.0, -7.0), weights, known, temperature=1e9)
    for _ in range(40):
        ids = [rng.randrange(3000) for _ in range(rng.randint(0, 5000))]
        _, ranked, coverage = ref_predict(model, ids)
        got, got_coverage = model.predict(ids)
        assert got_coverage == coverage
        assert_same_ranking(got, ranked)


@pytest.mark.parametrize("weights", [{"1": 2.0**21}, {str(F.BUCKETS): 1.0}, {"-1": 1.0}])
def test_a_model_the_lanes_cannot_hold_is_refused_as_corrupt(weights: dict[str, float], tmp_path: Path) -> None:
    doc = {"format": M.FORMAT, "tasks": ["a", "b"], "seed": 0, "priors": [-1.0, -1.0], "defaults": [-9.0, -9.0]}
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**doc, "weights": [weights, {}]}))
    with pytest.raises(M.ModelError, match="is a corrupt classifier model .*out of range"):
        M.load(path)


def test_rule_verdicts_are_the_reference_ones() -> None:
    rng = random.Random(4)
    conditions = [parse_condition(random_when(rng), "when") for _ in range(400)]
    compiled = [predicate(c) for c in conditions]
    for _ in range(300):
        body = random_body(rng)
        headers = {"user-agent": random_text(rng)[:40]} if rng.random() < 0.5 else {}
        expected = [ref_holds(c, RequestView(body, headers)) for c in conditions]
        view = RequestView(body, headers)  # one view for every rule, as the request path has
        assert [test(view) for test in compiled] == expected


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("(?i)kelvin", "\u212aelvin"),  # the Kelvin sign folds to k: no ASCII prefilter may rule it out
        ("(?i)summary", "ſummary"),  # so does the long s to s
        ("(?i)(?-i:KEL)vin", "KELVIN"),  # a group with its own flags is not the pattern's literal
        ("(?x) ext  ract", "extract"),  # verbose: the spaces are not part of the literal
        ("(?i)\\bthe (label|conversation)\\b", "THE Conversation"),
    ],
)
def test_the_prefilter_never_rules_out_a_match(pattern: str, value: str) -> None:
    condition = parse_condition({"last_user": pattern}, "when")
    view = RequestView({"messages": [{"role": "user", "content": value}]}, {})
    assert predicate(condition)(view) and ref_holds(condition, view)


def test_the_matcher_keeps_first_match_order() -> None:
    rules = [
        ClassifyRule("a", "x", parse_condition({"last_user": "(?i)invoice"}, "w")),
        ClassifyRule("b", "y", parse_condition({}, "w")),
    ]
    match = matcher(rules)
    invoice = {"messages": [{"role": "user", "content": "the INVOICE"}]}
    assert match(RequestView(invoice, {})) is rules[0]
    assert match(RequestView({"messages": []}, {})) is rules[1]
    assert matcher([])(RequestView(invoice, {})) is None


def test_ascii_lower_is_computed_once_per_text() -> None:
    view = RequestView({"messages": [{"role": "user", "content": "Hello"}]}, {})
    assert view.ascii_lower("Hello") == "hello" and view.ascii_lower("日本") is None
    assert view.ascii_lower("Hello") is view.ascii_lower("Hello")


# --- per call site ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefDecision:
    task: str | None
    source: str
    confidence: float | None
    predicted: str | None
    top: tuple[tuple[str, float], ...]
    coverage: float | None
    features: tuple[int, ...]


def ref_decide(
    registry: Registry, model: Model | None, headers: dict[str, str], body: dict[str, Any], seed: int
) -> RefDecision:
    """``Classifier.decide`` made from scratch, with the reference features, rules and model."""
    view = RequestView(body, headers)
    ids = ref_features(view, seed)
    ranked: list[tuple[str, float]] = []
    coverage = None
    if model is not None:
        _, ranked, coverage = ref_predict(model, ids if model.seed == seed else ref_features(view, model.seed))
    predicted, top = (ranked[0][0] if ranked else None), tuple(ranked[:3])
    if headers.get("x-task-type"):
        return RefDecision(headers["x-task-type"].strip(), "header", None, predicted, top, coverage, ids)
    rule = next((r for r in registry.classify if ref_holds(r.when, view)), None)
    if rule is not None:
        return RefDecision(rule.task, f"rule:{rule.name}", None, predicted, top, coverage, ids)
    settings = registry.classifier
    if model is not None and settings is not None and ranked and coverage is not None:
        if ranked[0][1] >= settings.min_confidence and coverage >= model.min_coverage:
            return RefDecision(ranked[0][0], "classifier", ranked[0][1], predicted, top, coverage, ids)
    return RefDecision(None, "default", None, predicted, top, coverage, ids)


def assert_same_decision(got: Decision, expected: RefDecision) -> None:
    assert (got.task, got.source, got.predicted) == (expected.task, expected.source, expected.predicted)
    assert (got.features, got.coverage) == (expected.features, expected.coverage)
    assert_same_ranking(got.top, expected.top)
    assert (got.confidence is None) == (expected.confidence is None)
    if got.confidence is not None and expected.confidence is not None:
        assert math.isclose(got.confidence, expected.confidence, rel_tol=0, abs_tol=1e-9)


def same_site(body: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], dict[str, str]]:
    """Another call of ``body``'s site: every message but the system/developer ones says something else,
    and the metadata and headers change; the message count, roles, tools, response_format and max_tokens
    stay."""
    messages = []
    for message in body["messages"]:
        if message["role"] not in ("system", "developer"):
            content = random_text(rng) if rng.random() < 0.8 else [{"type": "text", "text": random_text(rng)}]
            message = {**message, "content": content}
        messages.append(message)
    other = {**body, "messages": messages}
    other.pop("metadata", None)
    if rng.random() < 0.3:
        other["metadata"] = {"feature": random_text(rng)[:30]}
    headers = {"user-agent": random_text(rng)[:40]} if rng.random() < 0.5 else {}
    if rng.random() < 0.1:
        headers["x-task-type"] = " summary"
    return other, headers


def registry_with(classify: list[dict[str, Any]], model_path: Path | None) -> Registry:
    doc = yaml.safe_load(RULES.read_text())
    doc["classify"] = classify
    doc.pop("classifier", None)
    if model_path is not None:
        doc["classifier"] = {"model": str(model_path), "min_confidence": 0.6}
    return rules.loads(yaml.safe_dump(doc), environ={}, source=str(RULES))


def test_a_call_sites_partial_sums_predict_as_the_reference(model: Model) -> None:
    rng = random.Random(7)
    known = sorted(model.known)
    for _ in range(500):
        ids = {rng.choice(known) if rng.random() < 0.7 else rng.randrange(F.BUCKETS) for _ in range(rng.randint(0, 90))}
        shared = {i for i in ids if rng.random() < 0.5}
        ranked, coverage = model.predict(ids - shared, model.partial(shared))
        _, expected, expected_coverage = ref_predict(model, sorted(ids))
        assert coverage == expected_coverage
        assert_same_ranking(ranked, expected)


def test_site_and_user_features_make_the_features() -> None:
    rng = random.Random(8)
    for _ in range(1000):
        view, seed = RequestView(random_body(rng), {}), rng.choice([0, 99])
        together = F.site_features(view, seed).union(F.user_features(view, seed))
        assert tuple(sorted(together)) == F.features(view, seed) == ref_features(view, seed)


# Regexes with a literal every match needs (the prefilter's and the gate's needles), and rules made of
# them over a call's own parts, mixed with site conditions: sites whose rules are all gated.
LITERAL_REGEXES = [r for r in REGEXES if required_literals(re.compile(r)) is not None]


def gated_when(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["last_user", "any_message", "metadata", "header", "all", "any"])
    if kind in ("last_user", "any_message"):
        return {kind: rng.choice(LITERAL_REGEXES)}
    if kind in ("metadata", "header"):
        return {kind: {"feature" if kind == "metadata" else "user-agent": rng.choice(REGEXES)}}
    site = random_when(rng, depth=2)  # a site condition, or a per-call one without needles
    return {kind: [gated_when(rng), site] if kind == "all" else [gated_when(rng), gated_when(rng)]}


@pytest.mark.parametrize("when", [random_when, gated_when])
def test_rules_settled_per_site_give_the_first_matchs_verdict(when: Any) -> None:
    rng = random.Random(9)
    outcomes: Counter[bool] = Counter()
    for _ in range(60):
        rule_list = [ClassifyRule(f"r{i}", "t", parse_condition(when(rng), "when")) for i in range(rng.randint(1, 12))]
        site_rules = SiteRules(rule_list)
        for _ in range(10):
            body = random_body(rng)
            settled = site_rules.settle(RequestView(body, {}))
            gate = next((c.cell_contents for c in settled.__closure__ or () if isinstance(c.cell_contents, Gate)), None)
            for _ in range(10):
                other, headers = same_site(body, rng)
                view = RequestView(other, headers)
                assert site_key(view) == site_key(RequestView(body, {}))
                expected = next((r for r in rule_list if ref_holds(r.when, RequestView(other, headers))), None)
                assert settled(view) is expected
                if gate is not None:
                    outcomes[gate(RequestView(other, headers))] += 1
    if when is gated_when:  # the gate both ruled calls out and let them through
        assert outcomes[False] > 100 and outcomes[True] > 100, outcomes


def test_a_gate_never_rules_out_a_call_a_condition_holds_for() -> None:
    rng = random.Random(14)
    kinds = ["last_user", "any_message", "metadata", "header"]
    conditions = [parse_condition({k: {"feature" if k == "metadata" else "user-agent": r} if k in kinds[2:] else r}, "w")
                  for k in kinds for r in REGEXES]  # fmt: skip
    held = 0
    for _ in range(300):
        chosen = rng.sample(conditions, rng.randint(1, 4))
        wanted = [needs(c) for c in chosen]
        if any(w is None for w in wanted):
            continue
        gate = Gate(frozenset().union(*(w for w in wanted if w is not None)))
        for _ in range(10):
            body, headers = same_site(random_body(rng), rng)
            if rng.random() < 0.3:
                body["metadata"] = {"feature": rng.choice(WORDS) + " " + random_text(rng)[:20]}
            if any(ref_holds(c, RequestView(body, headers)) for c in chosen):
                held += 1
                assert gate(RequestView(body, headers)), (chosen, body, headers)
    assert held > 100


def test_the_classifier_decides_as_the_reference_over_calls_sharing_sites(model: Model, tmp_path: Path) -> None:
    model_path = tmp_path / "model.json"
    model_path.write_bytes(model.to_json())
    rng = random.Random(10)
    tasks = ["summary", "title_generation", "extraction", "agent"]
    for n in range(12):
        classify = [{"name": f"r{i}", "task": rng.choice(tasks), "when": random_when(rng)} for i in range(n)]
        registry = registry_with(classify, model_path if n % 4 else None)
        seed = 99 if n % 3 == 0 else 0  # 99: the model (seed 0) sees the request its own way
        classifier = Classifier(registry, seed)
        sites = [random_body(rng) for _ in range(6)] + [body for _, body in traffic.calls(12, seed=n)]
        for _ in range(250):
            body, headers = same_site(rng.choice(sites), rng)
            if rng.random() < 0.3:  # a realistic call: a template's system prompt, fresh user text
                body, headers = rng.choice(traffic.calls(16, seed=rng.randrange(10**6)))[1], {}
            expected = ref_decide(registry, classifier.model, headers, body, seed)
            assert_same_decision(classifier.decide(headers, body), expected)


def test_sites_keep_the_most_recently_used() -> None:
    site_rules = SiteRules([])
    sites = Sites(site_rules, 0, None, size=2)

    def call(system: str) -> RequestView:
        return RequestView({"messages": [{"role": "system", "content": system}]}, {})

    a, b = sites(call("a")), sites(call("b"))
    assert sites(call("a")) is a  # a is now the most recent: c evicts b
    sites(call("c"))
    assert sites(call("a")) is a and sites(call("b")) is not b


def test_a_reloaded_model_is_not_summed_with_the_old_ones_sums(model: Model, tmp_path: Path) -> None:
    model_path = tmp_path / "model.json"
    model_path.write_bytes(model.to_json())
    clock = FakeClock()
    registry = registry_with([], model_path)
    classifier = Classifier(registry, 0, clock=clock)
    calls = [body for _, body in traffic.calls(40, seed=11)]
    for body in calls:
        assert_same_decision(classifier.decide({}, body), ref_decide(registry, model, {}, body, 0))
    other, _ = train([(task, F.features(RequestView(body, {}), 0)) for task, body in traffic.calls(90, seed=12)], 0)
    model_path.write_bytes(other.to_json())
    clock.advance(5.0)
    for body in calls:
        assert_same_decision(classifier.decide({}, body), ref_decide(registry, classifier.model, {}, body, 0))
    assert classifier.model is not None and classifier.model.examples == other.examples != model.examples
