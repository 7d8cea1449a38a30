"""Which task runs a call, and why: header, then rules, then the learned classifier, then the default.

``Classifier`` is one process's decider, built once from the registry; ``decide`` is the request path's
one call. It also scores header-tagged calls (shadow mode: what the classifier would have chosen goes to
the ledger as ``task_predicted``, so its live agreement is known before anyone relies on it), and returns
the request's features for the ledger. The model file is re-read when it changes on disk (looked at
most once a second), so a retrained model takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.classify.conditions import RequestView, matcher
from proxy.classify.features import Template, features, parts
from proxy.classify.model import Model, ModelError, load
from proxy.registry import ClassifierSettings, Registry

log = logging.getLogger("tiergate.classify")
_RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    task: str | None  # None: the registry's default task
    source: str  # "header" | "rule:<name>" | "classifier" | "default"
    confidence: float | None = None  # the classifier's probability, when it decided
    predicted: str | None = None  # the classifier's own top task (decided or not): shadow mode
    top: tuple[tuple[str, float], ...] = ()  # the classifier's tasks with probabilities, most likely first
    coverage: float | None = None  # the share of the request's features the model saw in training
    features: tuple[int, ...] = ()  # hashed (see classify.features): what the model reads
    template: Template | None = None  # the ledger keeps ``features`` as this call site's template ...
    call: tuple[int, ...] = ()  # ... and these, the features only this call's user message adds


class Classifier:
    def __init__(self, registry: Registry, seed: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._match = matcher(registry.classify)  # every rule's test built once
        self._settings: ClassifierSettings | None = registry.classifier
        self._tasks = list(registry.tasks)
        self._seed = seed  # the ledger's: the features it stores are computed with it
        self._clock = clock
        self._model: Model | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = -_RECHECK_S
        if self._settings is not None:
            self._reload()

    @property
    def model(self) -> Model | None:
        return self._model

    def decide(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Decision:
        view = RequestView(body, headers)
        split = parts(view, self._seed)
        ids = split.ids
        ranked, coverage = self._predict(view, ids)

        def decision(task: str | None, source: str, confidence: float | None = None) -> Decision:
            predicted = ranked[0][0] if ranked else None
            top = tuple(ranked[:3])
            return Decision(task, source, confidence, predicted, top, coverage, ids, split.template, split.call)

        tagged = headers.get("x-task-type")
        if tagged:
            return decision(tagged.strip(), "header")
        rule = self._match(view)
        if rule is not None:
            return decision(rule.task, f"rule:{rule.name}")
        model, settings = self._model, self._settings
        if model is not None and settings is not None and ranked and coverage is not None:
            task, probability = ranked[0]
            if probability >= settings.min_confidence and coverage >= model.min_coverage:
                return decision(task, "classifier", probability)
        return decision(None, "default")

    def _predict(self, view: RequestView, ids: tuple[int, ...]) -> tuple[list[tuple[str, float]], float | None]:
        model = self._model_now()
        if model is None:
            return [], None
        # A model trained on another ledger's features (another seed) sees the request its own way.
        own = ids if model.seed == self._seed else features(view, model.seed)
        return model.predict(own)

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
        except ModelError as exc:
            log.error("classifier model %s could not be reloaded, keeping the one loaded: %s", path, exc)
            return
        finally:
            self._stamp = stamp
        log.info(
            "classifier model %s loaded: %d tasks, %d examples", path, len(self._model.tasks), self._model.examples
        )
