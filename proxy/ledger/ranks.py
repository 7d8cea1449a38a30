"""Nearest-rank latency percentiles of groups of runs: exact where that is cheap, else estimated.

The p-th percentile of n latencies is the value at rank k = ceil(p/100 * n) of the sorted values. A
group is a set of runs (``proxy.ledger.runs``). The ledger keeps no index by latency (it would cost
every write a page of WAL, see ``runs``), so the values are read by a pass over the rows:

- when the scope holds at most ``EXACT_ROWS`` latencies, every latency is read: every percentile is
  exact (what a ledger up to half a million calls gets, and what the tests compare with the reference);
- past that, a group with at most ``SMALL`` latencies is still read whole (its runs only: one more pass,
  only when there is such a group), and a larger one's percentiles are the nearest ranks of the 1-in-16
  sample its scan carried (``runs.SAMPLE_EVERY``): at 3,000 calls that is ~190 values, whose p50 and
  p95 sit within about 2% of rank of the true ones, at 100,000 within a few tenths. Those are flagged
  (``estimated``), and the report says so.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from proxy.ledger.runs import Run, Scope, latencies
from proxy.ledger.snapshot import Snapshot

K = TypeVar("K", bound=Hashable)
SMALL = 3_000  # a group with at most this many latencies is read whole
EXACT_ROWS = 500_000  # a scope with at most this many latencies is read whole


def nearest_rank(p: int, n: int) -> int:
    """The 1-based rank of the p-th percentile of n values, nearest rank: ceil(p/100 * n), at least 1."""
    return max(-(-p * n // 100), 1)


@dataclass(frozen=True)
class Percentiles:
    values: tuple[float | None, ...]  # ms, in the order asked; None for a group without latencies
    estimated: bool = False  # from the group's sample, not from all of its latencies


def percentiles(
    snap: Snapshot,
    scope: Scope,
    groups: Mapping[K, Sequence[Run]],
    ps: Sequence[int] = (50, 95),
    *,
    exact_rows: int = EXACT_ROWS,
    small: int = SMALL,
) -> dict[K, Percentiles]:
    """Per group, its nearest-rank percentiles ``ps`` of ``latency_ms`` (see the module docstring). A run
    may be in several groups (a line and the TOTAL)."""
    sizes = {key: sum(run.latencies for run in members) for key, members in groups.items()}
    everything = {run.key: run for members in groups.values() for run in members}
    whole = sum(run.latencies for run in everything.values()) <= exact_rows
    read = {key for key, n in sizes.items() if whole or n <= small}
    wanted = None if whole else {run.key for key in read for run in groups[key]}
    values = latencies(snap, scope, wanted) if read and (wanted is None or wanted) else {}
    out: dict[K, Percentiles] = {}
    for key, members in groups.items():
        if key in read:
            found = sorted(v for run in members for v in values.get(run.key, ()))
            estimated = False
        else:
            found = sorted(int(v) for run in members if run.sample for v in run.sample.split(","))
            estimated = True
        # Read in whole µs (the table's); shown in ms, as the view divides them.
        picked = tuple(found[nearest_rank(p, len(found)) - 1] / 1000.0 if found else None for p in ps)
        out[key] = Percentiles(picked, estimated and bool(found))
    return out
