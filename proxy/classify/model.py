"""The learned classifier: multinomial naive Bayes over hashed features, trained on header-tagged traffic.

Naive Bayes because it trains by counting (seconds for a million rows, in plain Python) and serves as
one sum of per-feature weights per task (done for every task at once, see ``_POINT``), which keeps
classification in tens of microseconds. Two
things make its answer usable for "decide or abstain":

- **calibration**: naive Bayes is over-confident on long inputs, so scores are divided by a temperature
  fitted on the k-fold predictions (the one that minimises their log loss); its probabilities then mean
  what ``min_confidence`` assumes;
- **coverage**: a request most of whose features the model never saw in training is unlike any task,
  whatever the probabilities say; below ``min_coverage`` the classifier abstains.

The model file is JSON (``tiergate classifier train --out``): tasks, the feature seed, the calibration,
and per task the features' log-likelihoods in excess of an unseen feature's.
"""

from __future__ import annotations

import math
import operator
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from proxy.classify.features import BUCKETS

FORMAT = "tiergate-classifier/1"
ALPHA = 0.1  # Laplace smoothing
MIN_COVERAGE = 0.5
_PROBABILITY = operator.itemgetter(1)  # of a (task, probability) pair


class ModelError(ValueError):
    """A model file that cannot be used: one line saying why."""


Example = tuple[str, Sequence[int]]  # (task, feature ids)


# Serving sums every task's weights over a request's features. Per task and feature that is a lookup, a
# tuple and six float objects per feature, which in a busy server are mostly cache misses; instead each
# feature's weights are packed as fixed-point numbers into the lanes of one Python int, with a last lane
# counting it as known, so one C-level ``sum()`` adds every task at once, and the ints sit in a list
# indexed by feature id. A weight is rounded to a multiple of 2^-_POINT (~9e-16, finer than a float's
# own rounding at these magnitudes), so probabilities match the float sums' to ~1e-13; the integer sums
# themselves are exact, in any order. Training (``scores``) keeps the float sums.
_POINT = 50
_SCALE = 2.0**-_POINT
_LANE = 128  # bits per lane: a lane holds < 2^73 per feature, so no request's sum carries into the next
_MASK = (1 << _LANE) - 1
_BIAS = 1 << 72  # added to every weight so that lanes hold non-negative numbers
MAX_WEIGHT = 2.0**20  # |weight| bound for the lanes (trained weights are log-likelihood ratios, under ~30)


@dataclass(frozen=True, slots=True)
class Partial:
    """A model's sums over a set of features, kept so that requests sharing them need not add them again."""

    ids: frozenset[int]
    packed: int  # the sum of their packed weights (see _POINT)


@dataclass(frozen=True)
class Model:
    tasks: tuple[str, ...]
    seed: int
    priors: tuple[float, ...]  # log prior per task
    defaults: tuple[float, ...]  # log-likelihood of a feature the task never showed
    weights: tuple[Mapping[int, float], ...]  # per task: feature -> its log-likelihood minus the default
    known: frozenset[int]  # every feature seen in training
    temperature: float = 1.0
    min_coverage: float = MIN_COVERAGE
    examples: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Derived from ``weights``, not part of the model's value. ``_table``: feature -> its weight for each
    # task (0.0 where a task never showed it), one lookup per feature instead of one per feature and
    # task. ``_packed``: per feature id (every bucket), its weights packed into lanes (see _POINT); a
    # tuple, not a list: the collector stops tracking a tuple of ints, and a list of 2^18 would be
    # walked by every full collection of the server's heap.
    _table: Mapping[int, tuple[float, ...]] = field(init=False, repr=False, compare=False)
    _packed: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = [(w, w.get) for w in self.weights]
        table = {f: tuple([get(f, 0.0) for _, get in columns]) for f in self.known}
        object.__setattr__(self, "_table", table)
        lanes = len(self.tasks)
        unknown = sum(_BIAS << (_LANE * t) for t in range(lanes))  # weight 0 everywhere, not known
        packed = [unknown] * BUCKETS
        for f, row in table.items():
            if not 0 <= f < BUCKETS or not all(abs(w) < MAX_WEIGHT for w in row):
                raise ValueError(f"feature {f}: its id or a weight is out of range")
            lane = [(round(w * (1 << _POINT)) + _BIAS) << (_LANE * t) for t, w in enumerate(row)]
            packed[f] = sum(lane, 1 << (_LANE * lanes))
        object.__setattr__(self, "_packed", tuple(packed))

    def scores(self, ids: Sequence[int]) -> list[float]:
        """Per task, log prior + the features' log-likelihoods: ``prior + n * default + sum(w.get(i, 0.0)
        for i in ids)``, added in that order (the features no task showed add 0.0 to every sum: skipped)."""
        n = len(ids)
        rows = [row for row in map(self._table.get, ids) if row is not None]
        sums: Iterable[float] = map(sum, zip(*rows, strict=True)) if rows else [0.0] * len(self.tasks)
        return [prior + n * default + s for prior, default, s in zip(self.priors, self.defaults, sums, strict=True)]

    def partial(self, ids: Iterable[int]) -> Partial:
        """The sums over ``ids`` (a call site's features, which its calls all share), for ``predict``'s ``base``."""
        unique = frozenset(ids)
        return Partial(unique, self._total(unique, 0))

    def predict(self, ids: Collection[int], base: Partial | None = None) -> tuple[list[tuple[str, float]], float]:
        """Tasks with calibrated probabilities, most likely first, and the request's coverage (0..1)."""
        probabilities, coverage = self.posterior(ids, base)
        return ranked(self.tasks, probabilities), coverage

    def posterior(self, ids: Collection[int], base: Partial | None = None) -> tuple[list[float], float]:
        """Each task's calibrated probability, in ``tasks``' order, and the request's coverage (0..1).

        ``scores`` then ``softmax``, summed in lanes (see _POINT): the same probabilities to ~1e-13.
        ``base`` (``partial`` of a call site's features) saves summing them again: ``ids`` are then the
        request's other features, none of them in ``base.ids``, each once.
        """
        n = len(ids)
        total = self._total(ids, base.packed if base is not None else 0)
        if base is not None:
            n += len(base.ids)
        bias = n * _BIAS
        scores = [
            prior + n * default + (((total >> (_LANE * t)) & _MASK) - bias) * _SCALE
            for t, (prior, default) in enumerate(zip(self.priors, self.defaults, strict=True))
        ]
        return softmax(scores, self.temperature), (total >> (_LANE * len(self.tasks))) / n if n else 0.0

    def _total(self, ids: Collection[int], start: int) -> int:
        """``start`` plus the packed weights of ``ids``. ``itemgetter`` fetches them all in one call (the
        quickest way to index a tuple with many keys; with one key it returns the item, not a tuple)."""
        if len(ids) > 1:
            packed: tuple[int, ...] = operator.itemgetter(*ids)(self._packed)
            return sum(packed, start)
        return sum([self._packed[i] for i in ids], start)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "tasks": self.tasks,
                "seed": self.seed,
                "priors": self.priors,
                "defaults": self.defaults,
                "weights": [{str(k): v for k, v in w.items()} for w in self.weights],
                "temperature": self.temperature,
                "min_coverage": self.min_coverage,
                "examples": self.examples,
                "meta": dict(self.meta),
            }
        )


def ranked(tasks: Sequence[str], probabilities: Sequence[float]) -> list[tuple[str, float]]:
    """``(task, probability)`` pairs, most likely first (ties in ``tasks``' order)."""
    return sorted(zip(tasks, probabilities, strict=True), key=_PROBABILITY, reverse=True)


def softmax(scores: Sequence[float], temperature: float = 1.0) -> list[float]:
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def fit(examples: Sequence[Example], seed: int, *, tasks: Sequence[str] | None = None) -> Model:
    """Count ``examples`` into a model (uncalibrated: ``temperature`` 1)."""
    names = tuple(tasks) if tasks is not None else tuple(sorted({task for task, _ in examples}))
    index = {t: i for i, t in enumerate(names)}
    counts: list[Counter[int]] = [Counter() for _ in names]
    docs = [0] * len(names)
    for task, ids in examples:
        i = index[task]
        docs[i] += 1
        counts[i].update(ids)
    total_docs = sum(docs)
    priors, defaults, weights = [], [], []
    for i in range(len(names)):
        mass = sum(counts[i].values()) + ALPHA * BUCKETS
        default = math.log(ALPHA / mass)
        priors.append(math.log((docs[i] + 1) / (total_docs + len(names))))
        defaults.append(default)
        weights.append({f: math.log((c + ALPHA) / mass) - default for f, c in counts[i].items()})
    known = frozenset(f for c in counts for f in c)
    return Model(names, seed, tuple(priors), tuple(defaults), tuple(weights), known, examples=total_docs)


@dataclass(frozen=True)
class Evaluation:
    """k-fold cross-validation of the training set."""

    folds: int
    accuracy: float
    per_task: Mapping[str, Mapping[str, float]]  # task -> examples, precision, recall
    confusion: Mapping[str, Mapping[str, int]]  # true task -> predicted task -> count
    temperature: float


def train(examples: Sequence[Example], seed: int, *, folds: int = 5, shuffle_seed: int = 0) -> tuple[Model, Evaluation]:
    """Cross-validate, fit the calibration on the held-out scores, then fit the final model on everything."""
    tasks = tuple(sorted({task for task, _ in examples}))
    if len(tasks) < 2:
        raise ModelError("training needs examples of at least two tasks")
    order = list(range(len(examples)))
    random.Random(shuffle_seed).shuffle(order)
    folds = max(2, min(folds, len(examples)))
    held: list[tuple[str, list[float]]] = []  # true task, scores
    for k in range(folds):
        test = set(order[k::folds])
        model = fit([e for i, e in enumerate(examples) if i not in test], seed, tasks=tasks)
        held += [(examples[i][0], model.scores(examples[i][1])) for i in sorted(test)]
    temperature = _calibrate(held, tasks)
    confusion: dict[str, Counter[str]] = {t: Counter() for t in tasks}
    for truth, scores in held:
        confusion[truth][tasks[max(range(len(tasks)), key=scores.__getitem__)]] += 1
    correct = sum(confusion[t][t] for t in tasks)
    per_task = {}
    for t in tasks:
        predicted = sum(confusion[o][t] for o in tasks)
        actual = sum(confusion[t].values())
        per_task[t] = {
            "examples": actual,
            "precision": confusion[t][t] / predicted if predicted else 0.0,
            "recall": confusion[t][t] / actual if actual else 0.0,
        }
    evaluation = Evaluation(
        folds=folds,
        accuracy=correct / len(held),
        per_task=per_task,
        confusion={t: dict(c) for t, c in confusion.items()},
        temperature=temperature,
    )
    final = fit(examples, seed, tasks=tasks)
    return Model(
        final.tasks, seed, final.priors, final.defaults, final.weights, final.known,
        temperature=temperature, examples=final.examples,
    ), evaluation  # fmt: skip


def _calibrate(held: Sequence[tuple[str, list[float]]], tasks: Sequence[str]) -> float:
    """The temperature that minimises the held-out log loss (a coarse-to-fine 1-D search)."""
    index = {t: i for i, t in enumerate(tasks)}

    def loss(temperature: float) -> float:
        total = 0.0
        for truth, scores in held:
            total -= math.log(max(softmax(scores, temperature)[index[truth]], 1e-12))
        return total

    best = min((2.0**e for e in range(-2, 12)), key=loss)
    return min((best * f for f in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 1.8)), key=loss)


def load(path: str | Path, tasks: Sequence[str] | None = None) -> Model:
    """A model file; ``ModelError`` when it is missing, corrupt, or names a task not in ``tasks``."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise ModelError(f"{path} is not a classifier model (not JSON)") from None
    try:
        if raw.get("format") != FORMAT:
            raise ModelError(f"{path} is not a {FORMAT} model")
        names = tuple(str(t) for t in raw["tasks"])
        weights = tuple({int(k): float(v) for k, v in w.items()} for w in raw["weights"])
        model = Model(
            tasks=names,
            seed=int(raw["seed"]),
            priors=tuple(float(p) for p in raw["priors"]),
            defaults=tuple(float(d) for d in raw["defaults"]),
            weights=weights,
            known=frozenset(f for w in weights for f in w),
            temperature=float(raw.get("temperature", 1.0)),
            min_coverage=float(raw.get("min_coverage", MIN_COVERAGE)),
            examples=int(raw.get("examples", 0)),
            meta=raw.get("meta") or {},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"{path} is a corrupt classifier model ({type(exc).__name__}: {exc})") from None
    if (
        not (len(model.tasks) == len(model.priors) == len(model.defaults) == len(model.weights))
        or model.temperature <= 0
    ):
        raise ModelError(f"{path} is a corrupt classifier model (its parts disagree)")
    if tasks is not None:
        missing = [t for t in model.tasks if t not in tasks]
        if missing:
            raise ModelError(
                f"{path} was trained for tasks the registry no longer has: {', '.join(missing)} (retrain it)"
            )
    return model
