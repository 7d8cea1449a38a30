"""Exact nearest-rank latency percentiles of groups of runs, without sorting or loading the groups.

The p-th percentile of n latencies is the value at rank k = ceil(p/100 * n) of the sorted values. A
group is a set of runs (``proxy.ledger.runs``), and the index holds each run's latencies sorted, so:

1. a sample of the group's latencies gives a window [lo, hi] that very likely holds the value at rank k
   (the sample's quantiles a few standard errors either side of k/n);
2. counting each run's latencies below lo, and reading those inside the window, are index range reads:
   ``below`` latencies are under the window and ``inside`` in it;
3. if ``below < k <= below + len(inside)``, the answer is ``sorted(inside)[k - below - 1]``: exact. If the
   window missed (a sample is a sample), it is widened and tried again, and the last try is the whole
   group, so the answer is always exact; only the time it takes depends on the sample.

A small group is read whole at once. Every window that touches a run (its group's and the TOTAL's, for
each percentile) is served by a few reads of that run: one count walking up from its fastest latency
to the highest lower bound of the windows below its middle (going by the run's own sample), one
walking down from its slowest for the others (a p95 walks about a twentieth of the run), and one read
per stretch the windows cover. A run wholly below or above a window costs two short reads: a count
from its far end finds nothing to walk, and so does the read of the window.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.ledger.runs import LATENCY, Run, Scope, where

K = TypeVar("K", bound=Hashable)
SMALL = 20_000  # a group with at most this many latencies is read whole: no window, no sample needed
_Z = 3.5  # standard errors of the sample quantile either side of the target rank (a miss widens it)
_WIDER = 6.0  # how much wider the next window is after a miss


def nearest_rank(p: int, n: int) -> int:
    """The 1-based rank of the p-th percentile of n values, nearest rank: ceil(p/100 * n), at least 1."""
    return max(-(-p * n // 100), 1)


@dataclass
class _Window:
    """Where one group's p-th percentile is looked for, and what the runs said about it."""

    rank: int
    lo: float
    hi: float
    upper: bool  # in the upper half: count from the slow end of a run with no sample of its own
    below: int = 0
    inside: list[float] = field(default_factory=list)

    def found(self) -> float | None:
        if self.below < self.rank <= self.below + len(self.inside):
            self.inside.sort()
            return self.inside[self.rank - self.below - 1]
        return None


def percentiles(
    conn: sqlite3.Connection,
    scope: Scope,
    groups: Mapping[K, Sequence[Run]],
    samples: Mapping[K, Sequence[float]],
    ps: Sequence[int] = (50, 95),
) -> dict[K, tuple[float | None, ...]]:
    """Per group, its nearest-rank percentiles ``ps`` of ``latency_ms`` (read as ``latency_us``) (None for a group without any).

    ``samples``: per group, some of its latencies, drawn at random (any number, even none: they only
    guide where to look). A run may be in several groups (a line and the TOTAL).
    """
    out: dict[K, list[float | None]] = {key: [None] * len(ps) for key in groups}
    todo: dict[tuple[K, int], _Window] = {}
    for key, members in groups.items():
        n = sum(run.latencies for run in members)
        sample = sorted(samples.get(key, ()))
        for i, p in enumerate(ps):
            if n:
                todo[key, i] = _window(nearest_rank(p, n), n, p, sample, 0)
    reader = _Reader(conn, scope)
    widen = 0
    while todo:
        reader.read({key: groups[key[0]] for key in todo}, todo)
        widen += 1
        missed: dict[tuple[K, int], _Window] = {}
        for (key, i), window in todo.items():
            value = window.found()
            if value is not None:
                out[key][i] = value
            elif window.lo == -math.inf and window.hi == math.inf:
                # The whole group holds rank k, unless its rows changed between reads (the caller reads
                # them all in one transaction, so that they cannot).
                raise AssertionError(f"rank {window.rank} of a group's latencies not found")
            else:
                n = sum(run.latencies for run in groups[key])
                missed[key, i] = _window(window.rank, n, ps[i], sorted(samples.get(key, ())), widen)
        todo = missed
    # Read in whole µs (the table's); shown in ms, as the view divides them.
    return {key: tuple(None if v is None else v / 1000.0 for v in values) for key, values in out.items()}


def _window(rank: int, n: int, p: int, sample: Sequence[float], widen: int) -> _Window:
    """The sample's quantiles around rank/n; the whole range for a small group, a thin sample or a
    second miss."""
    m = len(sample)
    if n <= SMALL or m < 20 or widen > 1:
        return _Window(rank, -math.inf, math.inf, p > 50)
    q = rank / n
    spread = _Z * _WIDER**widen * math.sqrt(q * (1 - q) / m) + 2 / m
    first, last = math.floor((q - spread) * m), math.ceil((q + spread) * m)
    lo = sample[first] if first >= 0 else -math.inf
    hi = sample[last] if last < m else math.inf
    return _Window(rank, lo, hi, p > 50)


class _Reader:
    """The index reads of the windows, run by run."""

    def __init__(self, conn: sqlite3.Connection, scope: Scope) -> None:
        self._conn, self._scope = conn, scope
        self._samples: dict[tuple[Any, ...], list[float]] = {}

    def read(self, groups: Mapping[Any, Sequence[Run]], windows: Mapping[Any, _Window]) -> None:
        """Add to each window its runs' counts below it and values in it."""
        touching: dict[tuple[Any, ...], tuple[Run, list[_Window]]] = {}
        for key, window in windows.items():
            for run in groups[key]:
                if run.latencies:
                    touching.setdefault(run.key, (run, []))[1].append(window)
        for run, these in touching.values():
            self._run(run, these)

    def _run(self, run: Run, windows: list[_Window]) -> None:
        sql, params = where(run, self._scope)
        counted = [w for w in windows if w.lo > -math.inf]
        up = [w for w in counted if self._from_below(run, w)]
        down = [w for w in counted if not self._from_below(run, w)]
        if up:  # walk up from the fastest latency to the highest of these bounds, counting below each
            counts = ", ".join(f"count(*) FILTER (WHERE {LATENCY} < ?)" for _ in up)
            found = self._one(f"SELECT {counts} FROM {sql} AND {LATENCY} < ?",
                              [*(w.lo for w in up), *params, max(w.lo for w in up)])  # fmt: skip
            for window, below in zip(up, found, strict=True):
                window.below += int(below)
        if down:  # walk down from the slowest: below = all - those at or above the bound
            counts = ", ".join(f"count(*) FILTER (WHERE {LATENCY} >= ?)" for _ in down)
            found = self._one(f"SELECT {counts} FROM {sql} AND {LATENCY} >= ?",
                              [*(w.lo for w in down), *params, min(w.lo for w in down)])  # fmt: skip
            for window, above in zip(down, found, strict=True):
                window.below += run.latencies - int(above)
        values: list[float] = []
        cursor = self._conn.cursor()
        cursor.row_factory = None
        # One read per stretch of the run the windows cover (an OR of ranges would walk the whole run).
        for lo, hi in _union([(w.lo, w.hi) for w in windows]):
            bounds = [b for b in (lo, hi) if math.isfinite(b)]
            stretch = (f" AND {LATENCY} >= ?" if math.isfinite(lo) else f" AND {LATENCY} IS NOT NULL") + (
                f" AND {LATENCY} <= ?" if math.isfinite(hi) else ""
            )
            values += [float(v) for (v,) in cursor.execute(f"SELECT {LATENCY} FROM {sql}{stretch}",
                                                           [*params, *bounds])]  # fmt: skip
        for window in windows:
            window.inside += [v for v in values if window.lo <= v <= window.hi] if len(windows) > 1 else values

    def _from_below(self, run: Run, window: _Window) -> bool:
        """Whether fewer of the run's latencies are below the window than at or above it, going by the
        run's own sample (else by the percentile): the side a count walks from."""
        sample = self._samples.get(run.key)
        if sample is None:
            sample = self._samples[run.key] = sorted(float(v) for v in run.sample.split(",")) if run.sample else []
        if not sample:
            return not window.upper
        return bisect.bisect_left(sample, window.lo) <= len(sample) / 2

    def _one(self, sql: str, params: list[Any]) -> tuple[Any, ...]:
        row = self._conn.execute(sql, params).fetchone()
        return tuple(row)


def _union(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The closed intervals ``ranges`` cover, merged where they overlap."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged
