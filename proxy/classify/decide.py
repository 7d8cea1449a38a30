"""Which task runs a call, and why: header, then rules, then the learned classifier, then the default.

``Classifier`` is one process's decider, built once from the registry; ``decide`` is the request path's
one call. It also scores header-tagged calls (shadow mode: what the classifier would have chosen goes to
the ledger as ``task_predicted``, so its live agreement is known before anyone relies on it), and returns
the request's features for the ledger. What a call's template fixes is worked out once per call site
(proxy.classify.sites), so a call pays for its own part only. The model file is re-read when it changes
on disk (looked at most once a second), so a retrained model takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.classify.conditions import RequestView
from proxy.classify.features import Template, features, user_features
from proxy.classify.model import Model, ModelError, load, ranked
from proxy.classify.sites import Site, SiteRules, Sites
from proxy.registry import ClassifierSettings, Registry

log = logging.getLogger("tiergate.classify")
_RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    task: str | None  # None: the registry's default task
    source: str  # "header" | "rule:<name>" | "classifier" | "default"
    confidence: float | None = None  # the classifier's probability, when it decided
    predicted: str | None = None  # the classifier's own top task (decided or not): shadow mode
    coverage: float | None = None  # the share of the request's features the model saw in training
    features: tuple[int, ...] = ()  # hashed (see classify.features): what the model reads
    tasks: tuple[str, ...] = ()  # the model's tasks, and their probabilities in that order
    probabilities: Sequence[float] = ()
    template: Template | None = None  # the ledger keeps ``features`` as this call site's template ...
    call: tuple[int, ...] = ()  # ... and these, the features only this call's user message adds

    @property
    def top(self) -> list[tuple[str, float]]:
        """The classifier's three likeliest tasks with their probabilities, most likely first (ranked only
        when asked: the request path needs the first alone)."""
        return ranked(self.tasks, self.probabilities)[:3]


class Classifier:
    def __init__(self, registry: Registry, seed: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rules = SiteRules(registry.classify)  # every rule's test built once
        self._settings: ClassifierSettings | None = registry.classifier
        self._tasks = list(registry.tasks)
        self._seed = seed  # the ledger's: the features it stores are computed with it
        self._clock = clock
        self._model: Model | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = -_RECHECK_S
        self._sites = Sites(self._rules, seed, None)
        if self._settings is not None:
            self._reload()

    @property
    def model(self) -> Model | None:
        return self._model

    def decide(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Decision:
        view = RequestView(body, headers)
        model = self._model_now()
        site = self._sites(view)  # what the call's template fixes, worked out once per template
        own = set(user_features(view, self._seed)).difference(site.ids)
        call = tuple(sorted(own))
        ids = tuple(sorted([*site.ids, *call]))
        tasks: tuple[str, ...] = ()
        probabilities: list[float] = []
        coverage = predicted = best = None
        if model is not None:
            probabilities, coverage = self._posterior(model, view, site, own)
            tasks = model.tasks
            best = max(range(len(tasks)), key=probabilities.__getitem__)  # the first of equals, as ranked
            predicted = tasks[best]

        def decision(task: str | None, source: str, confidence: float | None = None) -> Decision:
            return Decision(
                task, source, confidence, predicted, coverage, ids, tasks, probabilities, site.template, call
            )

        tagged = headers.get("x-task-type")
        if tagged:
            return decision(tagged.strip(), "header")
        rule = site.match(view)
        if rule is not None:
            return decision(rule.task, f"rule:{rule.name}")
        settings = self._settings
        if model is not None and settings is not None and best is not None and coverage is not None:
            probability = probabilities[best]
            if probability >= settings.min_confidence and coverage >= model.min_coverage:
                return decision(predicted, "classifier", probability)
        return decision(None, "default")

    def _posterior(self, model: Model, view: RequestView, site: Site, own: set[int]) -> tuple[list[float], float]:
        if site.base is not None:
            return model.posterior(own, site.base)
        # A model trained on another ledger's features (another seed) sees the request its own way.
        return model.posterior(features(view, model.seed))

    def _model_now(self) -> Model | None:
        if self._settings is not None and self._clock() - self._checked >= _RECHECK_S:
            self._reload()
        return self._model

    def _reload(self) -> None:
        assert self._settings is not None
        self._checked = self._clock()
        path = self._settings.model
        try:
            info = os.stat(path)
        except OSError as exc:
            if self._model is not None:
                log.error("classifier model %s is gone (%s): keeping the one loaded", path, exc.strerror)
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        try:
            self._model = load(path, self._tasks)
            self._sites = Sites(self._rules, self._seed, self._model)  # the sums kept are the old model's
        except ModelError as exc:
            log.error("classifier model %s could not be reloaded, keeping the one loaded: %s", path, exc)
            return
        finally:
            self._stamp = stamp
        log.info(
            "classifier model %s loaded: %d tasks, %d examples", path, len(self._model.tasks), self._model.examples
        )
