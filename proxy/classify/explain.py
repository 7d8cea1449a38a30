"""``tiergate classify REQUEST.json``: one request's decision explained, as the server would make it.

The same ``Classifier`` and ``Router`` the request path uses, over a body read from a file (or stdin):
which of header, rule, classifier or default decided and why, the classifier's top tasks with their
probabilities and its coverage (also when it had no say: what shadow mode would log), why it abstained
when it did, and the tier and targets the call would run on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import wire
from proxy.classify.decide import Classifier, Decision
from proxy.errors import TiergateError
from proxy.registry import ClassifyRule, Registry
from proxy.router import Router


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    task: str  # the task that runs: the decided one, else the registry's default
    tier: str
    targets: tuple[str, ...]  # provider::model in the order they are tried, fallback tiers' included
    rule: ClassifyRule | None  # the rule that decided
    model: str | None  # the classifier's model file, when one is configured
    min_confidence: float | None
    min_coverage: float | None
    abstained: bool | None  # None: the classifier had no say (a header or a rule decided, or no model)
    reasons: tuple[str, ...]  # why it abstained

    @property
    def source(self) -> str:
        return self.decision.source


def read_request(path: str) -> dict[str, Any]:
    """The chat request body in ``path`` (``-``: stdin), checked as the server checks it."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return wire.parse_chat_request(raw)
    except TiergateError as exc:
        raise ValueError(
            f"{'stdin' if path == '-' else path}: not a chat request the server accepts: {exc.message}"
        ) from None


def parse_headers(pairs: list[str]) -> dict[str, str]:
    """``K:V`` strings -> request headers (names lower-cased, as the server sees them)."""
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header: expected K:V, got {pair!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def explain(registry: Registry, body: Mapping[str, Any], headers: Mapping[str, str], seed: int) -> Explanation:
    """How the server, with ``registry`` and the feature ``seed``, decides ``body`` sent with ``headers``.

    An ``X-Task-Type`` the registry does not know raises ``UnknownTaskType``, as the server answers 400.
    """
    classifier = Classifier(registry, seed)
    decision = classifier.decide(headers, body)
    route = Router(registry).resolve(decision.task, str(body.get("model", "auto")), decision.source)
    rule = next((r for r in registry.classify if f"rule:{r.name}" == decision.source), None)
    model, settings = classifier.model, registry.classifier
    abstained: bool | None = None
    reasons: list[str] = []
    if model is not None and settings is not None and decision.source in ("classifier", "default"):
        abstained = decision.source == "default"
        if abstained and decision.top:
            task, p = decision.top[0]
            if p < settings.min_confidence:
                reasons.append(f"{task} at {p:.2f} is below min_confidence {settings.min_confidence:g}")
            if decision.coverage is not None and decision.coverage < model.min_coverage:
                reasons.append(
                    f"coverage {decision.coverage:.2f} is below the model's floor {model.min_coverage:g}: "
                    "the request is unlike the traffic it was trained on"
                )
    return Explanation(
        decision=decision,
        task=route.task.name,
        tier=route.tier.name,
        targets=tuple(hop.target.key for hop in route.hops),
        rule=rule,
        model=settings.model if settings is not None else None,
        min_confidence=settings.min_confidence if settings is not None else None,
        min_coverage=model.min_coverage if model is not None else None,
        abstained=abstained,
        reasons=tuple(reasons),
    )
