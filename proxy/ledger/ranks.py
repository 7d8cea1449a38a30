"""Exact nearest-rank latency percentiles of groups of runs, without sorting or loading the group.

The p-th percentile of n latencies is the value at rank k = ceil(p/100 * n) of the sorted values. A
group is a set of runs (``proxy.ledger.runs``), and the index holds each run's latencies sorted, so:

1. a random sample of the ledger's latencies gives, per group, a window [lo, hi] that very likely holds
   the value at rank k (the sample's quantiles a few standard errors either side of k/n);
2. counting each run's latencies below lo, and reading those inside the window, are index range reads:
   ``below`` latencies are under the window and ``inside`` in it;
3. if ``below < k <= below + len(inside)``, the answer is ``sorted(inside)[k - below - 1]``: exact. If the
   window missed (a sample is a sample), it is widened and tried again, and the last try is the whole
   group, so the answer is always exact; only the time it takes depends on the sample.

A run entirely below or above a window (its fastest and slowest latency are known from the scan) costs
no query. A count below lo walks the run from its fast end, or from its slow end when k is in the upper
half, so the p95 of a run costs a twentieth of its rows.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from proxy.ledger.runs import Run, Scope, where

K = TypeVar("K", bound=Hashable)
SMALL = 4096  # a group with at most this many latencies is read whole: one window, no sample needed
_Z = 4.5  # standard errors of the sample quantile either side of the target rank
_TRIES = 3  # windows tried, the last being the whole group


def nearest_rank(p: int, n: int) -> int:
    """The 1-based rank of the p-th percentile of n values, nearest rank: ceil(p/100 * n), at least 1."""
    return max(-(-p * n // 100), 1)


def percentiles(
    conn: sqlite3.Connection,
    scope: Scope,
    groups: Mapping[K, Sequence[Run]],
    samples: Mapping[K, Sequence[float]],
    ps: Sequence[int] = (50, 95),
) -> dict[K, tuple[float | None, ...]]:
    """Per group, its nearest-rank percentiles ``ps`` of ``latency_ms`` (None for a group without any).

    ``samples``: per group, latencies drawn at random from it (any number, even none: they only guide
    where to look).
    """
    out: dict[K, tuple[float | None, ...]] = {}
    for key, runs in groups.items():
        n = sum(run.latencies for run in runs)
        sample = sorted(samples.get(key, ()))
        out[key] = tuple(_percentile(conn, scope, runs, n, p, sample) for p in ps) if n else (None,) * len(ps)
    return out


def _percentile(
    conn: sqlite3.Connection, scope: Scope, runs: Sequence[Run], n: int, p: int, sample: Sequence[float]
) -> float:
    k = nearest_rank(p, n)
    guided = n > SMALL and len(sample) >= 20
    windows = [_window(sample, k / n, widen) for widen in range(_TRIES - 1)] if guided else []
    for lo, hi in [*windows, (-math.inf, math.inf)]:
        below, inside = 0, []
        for run in runs:
            b, values = _read(conn, scope, run, lo, hi, upper=p > 50)
            below += b
            inside += values
        if below < k <= below + len(inside):
            inside.sort()
            return inside[k - below - 1]
    # The whole group holds rank k by construction, unless its rows changed between reads (the caller
    # reads them all in one transaction so that they cannot).
    raise AssertionError(f"rank {k} of {n} latencies not found")


def _window(sample: Sequence[float], q: float, widen: int) -> tuple[float, float]:
    """Sample quantiles around ``q``: ``_Z`` standard errors (times 4 when ``widen``) and two values more."""
    m = len(sample)
    spread = _Z * 4**widen * math.sqrt(q * (1 - q) / m) + 2 / m
    first, last = math.floor((q - spread) * m), math.ceil((q + spread) * m)
    return (sample[first] if first >= 0 else -math.inf), (sample[last] if last < m else math.inf)


def _read(
    conn: sqlite3.Connection, scope: Scope, run: Run, lo: float, hi: float, *, upper: bool
) -> tuple[int, list[float]]:
    """How many of ``run``'s latencies are below ``lo``, and those in [lo, hi]."""
    if not run.latencies:
        return 0, []
    assert run.fastest is not None and run.slowest is not None
    if run.slowest < lo:
        return run.latencies, []
    if run.fastest > hi:
        return 0, []
    sql, params = where(run, scope)
    if lo <= run.fastest:
        below = 0
    elif upper:  # count from the slow end: fewer rows to walk past
        (above,) = conn.execute(
            f"SELECT count(*) FROM requests WHERE {sql} AND latency_ms >= ?", [*params, lo]
        ).fetchone()
        below = run.latencies - int(above)
    else:
        (below,) = conn.execute(
            f"SELECT count(*) FROM requests WHERE {sql} AND latency_ms < ?", [*params, lo]
        ).fetchone()
    window = " AND latency_ms IS NOT NULL"
    if lo > run.fastest:
        window += " AND latency_ms >= ?"
        params.append(lo)
    if hi < run.slowest:
        window += " AND latency_ms <= ?"
        params.append(hi)
    cursor = conn.cursor()
    cursor.row_factory = None
    values = [float(v) for (v,) in cursor.execute(f"SELECT latency_ms FROM requests WHERE {sql}{window}", params)]
    return int(below), values
