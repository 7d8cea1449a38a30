"""Micro-benchmark: what classifying one untagged request costs on the request path (not a test).

    python bench/classify.py [--calls 20000] [--core 0] [--json]
    python bench/classify.py --cold 15     # untagged minus tagged decide, caches thrashed between calls

``Classifier.decide`` on a typical request (load.py's: a system prompt and a user message, temperature,
max_tokens) with a registry of 20 ``classify:`` rules of which none matches, so every rule is tried and
the learned classifier then decides; its model is trained here, on generated traffic of seven call
sites' worth of tasks (``proxy.fakes.traffic`` plus load.py's own call site). Each call gets a body as
the server would have parsed it from JSON (fresh strings) with fresh user text (the template plus
filler), so what decide keeps per call site (``proxy.classify.sites``: the system prompt's and the
structure's features, the rules' conditions on them, the model's sums over them) is found as in
production, and the user message's part is worked out on every call. One core
(``os.sched_setaffinity``), a warm-up, then each call timed with ``perf_counter_ns``; p50/p90/p99/p99.9,
a breakdown by stage as decide runs them, and the same stages from scratch (a call site's first call).
The issue's budget: p99 under 100 µs.

``untagged_registry`` and ``train_model`` also serve bench/run.py's ``tiergate-untagged`` candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import load  # bench/load.py: the request the other benchmarks send
import orjson
import yaml

from proxy import rules
from proxy.classify.conditions import RequestView, matcher
from proxy.classify.decide import Classifier
from proxy.classify.features import features, seed_of, user_features
from proxy.classify.model import Model, train
from proxy.classify.sites import SiteRules, Sites
from proxy.fakes import traffic

BENCH_DIR = Path(__file__).resolve().parent
BUDGET_P99_US = 100.0
USER_TEMPLATE = "Summarise this ticket in two sentences: {filler}"
# load.py's call site: the summary task, with the body fields load.py sends.
SITE = traffic.CallSite("summary", load.SYSTEM_PROMPT, USER_TEMPLATE, {"temperature": 0.2, "max_tokens": 128})

# 20 rules of the kinds a team writes; none matches load.py's request, so each is evaluated every call.
RULES: list[dict[str, Any]] = [
    {"name": "titles", "task": "title_generation", "when": {"system": "(?i)conversation title"}},
    {"name": "extractor", "task": "extraction", "when": {"system": "(?i)^you are an? (json|structured data) extractor"}},
    {"name": "extract-verb", "task": "extraction", "when": {"last_user": "(?i)^extract\\b"}},
    {"name": "schema-out", "task": "extraction", "when": {"response_format": "json_schema"}},
    {"name": "tools", "task": "agent", "when": {"tools": True}},
    {"name": "inbox-app", "task": "title_generation", "when": {"header": {"user-agent": "^InboxApp/"}}},
    {"name": "title-feature", "task": "title_generation", "when": {"metadata": {"feature": "^(inbox|thread)-title$"}}},
    {"name": "relevance", "task": "relevance", "when": {"any_message": "(?i)\\brelevan(t|ce) to the query\\b"}},
    {"name": "tiny-answers", "task": "classification", "when": {"max_tokens": {"max": 16}}},
    {"name": "labels", "task": "classification", "when": {"system": "(?i)\\blabel\\b", "max_tokens": {"max": 64}}},
    {"name": "classify-verb", "task": "classification",
     "when": {"last_user": "(?i)^(classify|categori[sz]e|label) (this|the following)"}},
    {"name": "copywriter", "task": "ad_copy", "when": {"system": "(?i)copywriter|marketing copy"}},
    {"name": "taglines", "task": "ad_copy", "when": {"last_user": "(?i)\\b(tagline|headline variants?)\\b"}},
    {"name": "summary-feature", "task": "summary", "when": {"header": {"x-app-feature": "(?i)^digest"}}},
    {"name": "batch-job", "task": "summary", "when": {"metadata": {"job": "^nightly-"}}},
    {"name": "agentic", "task": "agent",
     "when": {"any": [{"system": "(?i)\\bagent\\b"}, {"last_user": "(?i)\\bcall the tools?\\b"}]}},
    {"name": "long-threads", "task": "agent", "when": {"messages": {"min": 12}}},
    {"name": "bare-title", "task": "title_generation",
     "when": {"all": [{"not": {"system": "."}}, {"last_user": "(?i)^title:"}]}},
    {"name": "invoices", "task": "extraction", "when": {"response_format": "json_object", "last_user": "(?i)invoice"}},
    {"name": "yes-no", "task": "relevance", "when": {"system": "(?i)\\byes or no\\b"}},
]  # fmt: skip

# bench/rules.yaml's tasks plus these: the tasks proxy.fakes.traffic has call sites for.
EXTRA_TASKS = {
    "extraction": {"tier": "small", "description": "fields from text as JSON"},
    "relevance": {"tier": "small", "description": "yes/no relevance"},
    "ad_copy": {"tier": "mid", "description": "marketing copy"},
}


def untagged_registry(model: Path) -> str:
    """bench/rules.yaml with the traffic's tasks, the 20 rules and ``model`` as its classifier."""
    doc = yaml.safe_load((BENCH_DIR / "rules.yaml").read_text())
    doc["tasks"].update(EXTRA_TASKS)
    doc["classify"] = RULES
    doc["classifier"] = {"model": str(model), "min_confidence": 0.7}
    return "# generated by bench/classify.py: bench/rules.yaml + 20 classify rules + a classifier\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


def train_model(out: Path, seed: int = 0, calls: int = 1200) -> Model:
    """Train on generated traffic (every call site of proxy.fakes.traffic and load.py's); write ``out``."""
    sites = (*traffic.SITES, SITE)
    examples = [(task, features(RequestView(body, {}), seed)) for task, body in traffic.calls(calls, 1, sites=sites)]
    model, evaluation = train(examples, seed)
    out.write_bytes(model.to_json())
    return model


def fresh_bodies(n: int, seed: int = 2) -> list[dict[str, Any]]:
    """``n`` of load.py's request with fresh user text, each as the server parses it (its own strings)."""
    rng = random.Random(seed)
    return [orjson.loads(orjson.dumps(traffic.body(SITE, rng))) for _ in range(n)]


def _timed(call: Callable[[dict[str, Any]], object], bodies: Sequence[dict[str, Any]]) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for body in bodies:
        started = clock()
        call(body)
        out.append((clock() - started) / 1000.0)
    return out


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "mean_us": statistics.fmean(samples),
    }


def run(calls: int, core: int | None) -> dict[str, Any]:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    seed = seed_of("")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "classifier.json"
        model = train_model(model_path, seed)
        registry = rules.loads(untagged_registry(model_path), environ={}, source=str(Path(tmp) / "rules.yaml"))
        classifier = Classifier(registry, seed)
        headers: dict[str, str] = {}  # untagged
        warm, measured = fresh_bodies(2000, seed=1), fresh_bodies(calls, seed=2)
        probe = classifier.decide(headers, measured[0])
        if probe.source != "classifier" or probe.task != "summary":
            raise SystemExit(f"the benchmark request was not decided by the classifier: {probe.source} {probe.task}")

        def decide(body: dict[str, Any]) -> object:
            return classifier.decide(headers, body)

        # The stages as decide runs them: what the call site fixes (looked up; worked out on its first
        # call), then the call's own part. Each on fresh bodies, each body seen through a fresh view.
        sites = Sites(SiteRules(registry.classify), seed, model)
        site = sites(RequestView(measured[0], headers))

        def stage_site(body: dict[str, Any]) -> object:
            return sites(RequestView(body, headers))

        def stage_features(body: dict[str, Any]) -> object:
            own = set(user_features(RequestView(body, headers), seed)).difference(site.ids)
            return tuple(sorted([*site.ids, *own]))

        def stage_rules(body: dict[str, Any]) -> object:
            return site.match(RequestView(body, headers))

        # ... and the same work from scratch, as for a call site seen for the first time
        match = matcher(registry.classify)

        def scratch_features(body: dict[str, Any]) -> object:
            return features(RequestView(body, headers), seed)

        def scratch_rules(body: dict[str, Any]) -> object:
            return match(RequestView(body, headers))

        owns = [
            set(user_features(RequestView(b, headers), seed)).difference(site.ids) for b in fresh_bodies(calls, seed=3)
        ]
        ids = [features(RequestView(b, headers), seed) for b in fresh_bodies(calls, seed=3)]
        _timed(decide, warm)
        total = _timed(decide, measured)
        stages = {
            "site": _percentiles(_timed(stage_site, fresh_bodies(calls, seed=4))),
            "features": _percentiles(_timed(stage_features, fresh_bodies(calls, seed=4))),
            "rules": _percentiles(_timed(stage_rules, fresh_bodies(calls, seed=5))),
            "predict": _percentiles(_timed(lambda own: model.posterior(own, site.base), owns)),  # type: ignore[arg-type]
        }
        scratch = {
            "features": _percentiles(_timed(scratch_features, fresh_bodies(calls, seed=4))),
            "rules": _percentiles(_timed(scratch_rules, fresh_bodies(calls, seed=5))),
            "predict": _percentiles(_timed(lambda i: model.posterior(i), ids)),  # type: ignore[arg-type]
        }
    return {
        "calls": calls,
        "core": core,
        "rules": len(RULES),
        "tasks": len(model.tasks),
        "model_features": len(model.known),
        "request_features": len(probe.features),
        "decide": _percentiles(total),
        "stages": stages,
        "from_scratch": scratch,
        "budget_p99_us": BUDGET_P99_US,
        "python": sys.version.split()[0],
    }


def human(report: dict[str, Any]) -> str:
    def row(name: str, p: dict[str, float]) -> str:
        cells = (p["p50_us"], p["p90_us"], p["p99_us"], p["p999_us"], p["mean_us"])
        return f"{name:<10}" + "".join(f"{c:>10.1f}" for c in cells)

    d = report["decide"]
    verdict = "pass" if d["p99_us"] < report["budget_p99_us"] else "FAIL"
    lines = [
        f"Classifier.decide, untagged, {report['rules']} rules (none matching) + a model of {report['tasks']} tasks "
        f"({report['model_features']:,} features); {report['calls']:,} calls on core {report['core']}, "
        f"Python {report['python']}; request: {report['request_features']} features",
        "",
        f"{'µs':<10}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}{'mean':>10}",
        row("decide", d),
        *(row(f"  {name}", p) for name, p in report["stages"].items()),
        "from scratch (a call site's first call; not cached):",
        *(row(f"  {name}", p) for name, p in report["from_scratch"].items()),
        "",
        f"p99 {d['p99_us']:.1f} µs against a budget of {report['budget_p99_us']:g} µs: {verdict}",
    ]
    return "\n".join(lines)


def cold(rounds: int, core: int | None) -> dict[str, Any]:
    """What an untagged call adds over a tagged one, with the caches as cold as in a busy server.

    Between requests a server runs a lot of other code, which evicts the classifier's from the CPU's
    caches; timed back to back, as ``run`` does, the same work looks cheaper than it is there. Here the
    caches are thrashed (a few MB written, a few thousand objects read) before every call, on load.py's
    own body parsed afresh, and three deciders alternate: untagged on this registry, tagged on the
    same (shadow mode: the model runs, the rules do not), and tagged on bench/rules.yaml (what
    bench/run.py's ``tiergate`` runs). Per round the median of each; the minimum over rounds, which a
    busy machine disturbs least.
    """
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    seed = seed_of("")
    raw = load.chat_body("gpt-4o-mini", False)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "classifier.json"
        train_model(model_path, seed)
        untagged = Classifier(rules.loads(untagged_registry(model_path), environ={}, source=tmp + "/rules.yaml"), seed)
        tagged = Classifier(rules.load(str(BENCH_DIR / "rules.yaml"), environ={}), seed)
        header = {"x-task-type": "summary"}
        deciders = {"untagged": (untagged, {}), "shadow": (untagged, header), "tagged": (tagged, header)}
        junk, objects = bytearray(4 << 20), [str(i) * 3 for i in range(30000)]
        best = dict.fromkeys(deciders, float("inf"))
        clock = time.perf_counter_ns
        for _ in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name in deciders}
            for _ in range(300):
                for name, (classifier, headers) in deciders.items():
                    body = orjson.loads(raw)
                    junk[::64] = bytes(len(junk) // 64)
                    sum(map(len, objects[::3]))
                    started = clock()
                    classifier.decide(headers, body)
                    samples[name].append((clock() - started) / 1000.0)
            for name, values in samples.items():
                best[name] = min(best[name], statistics.median(values))
    return {"rounds": rounds, "core": core, "median_us": best, "untagged_extra_us": best["untagged"] - best["tagged"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="timed calls (default 20000)")
    parser.add_argument("--core", type=int, default=0, help="the one core to run on (default 0); -1: do not pin")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--cold", type=int, metavar="ROUNDS", help="instead: untagged vs tagged decide with cold caches (see cold())"
    )
    args = parser.parse_args(argv)
    core = None if args.core < 0 else args.core
    if args.cold:
        result = cold(args.cold, core)
        m = result["median_us"]
        text = (
            f"decide with cold caches, min over {args.cold} rounds of per-round medians: untagged {m['untagged']:.1f} µs, "
            f"shadow {m['shadow']:.1f} µs, tagged (bench/rules.yaml) {m['tagged']:.1f} µs; "
            f"untagged - tagged {result['untagged_extra_us']:.1f} µs"
        )
        print(json.dumps(result, indent=2) if args.json else text)
        return 0
    report = run(args.calls, core)
    print(json.dumps(report, indent=2) if args.json else human(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
