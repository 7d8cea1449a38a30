"""A paired comparison of two candidates: ``python bench/run.py --paired A,B``.

On a shared machine the speed drifts by several percent from one second to the next, so two candidates
measured one after the other, as bench/run.py's cells are, differ by more than a 3% effect. Here both run
at once, pinned to the proxy core like any proxy of run.py, each on its own port and ledger; only one is
loaded at a time, and the idle one costs next to nothing. After a warm-up slice each, short slices of
run.py's non-streaming c=64 load alternate A B B A A B B A ...: each pair of adjacent slices (A B or B A)
gives a ratio RPS(A) / RPS(B) of two measurements a few seconds apart, and a drift that is linear over
four slices cancels between an A B pair and the B A pair after it. The report is the median ratio over
pairs, its quartiles and range, each side's median RPS and CPU per request, and the errors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import run  # bench/run.py: the candidates, the processes and the load generator's invocation

CELL_KEY = "ns-c64"  # the cell of run.py whose load each slice repeats
SLICE_WARMUP_S = 0.5  # each slice's own warm-up: reconnecting 64 keep-alive connections
GOAL = 0.97  # issue's target: the ledger costs at most 3% of tiergate's non-streaming c=64 throughput
LEVEL = 0.95  # the least coverage of the interval given for a median
MIN_PAIRS = 6  # fewer values' whole range covers their median with less than LEVEL (1 - 2 / 2**n)


# --------------------------------------------------------------------------- the method (pure)


def abba(slices: int) -> list[int]:
    """Which side each slice loads, 0 for A and 1 for B: A B B A, repeated."""
    return [(i + 1) // 2 % 2 for i in range(slices)]


@dataclass(frozen=True)
class Slice:
    """One measured slice of load on one side."""

    side: int
    rps: float
    cpu_ms_per_req: float | None
    requests: int
    errors: int
    other_share: float  # CPU used by processes outside the benchmark, as a share of one core
    # The idle side's CPU during this slice, per request of it: work the other side left over (a ledger
    # flush after its slice) would be charged to this slice's throughput.
    idle_cpu_ms_per_req: float = 0.0


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and range of one figure over the pairs."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int
    ci: tuple[float, float]  # an interval holding the true median with probability >= LEVEL (see median_interval)


def spread(values: Sequence[float]) -> Spread:
    """The median, the quartiles (inclusive method: within the range), the range of ``values`` and an interval
    for their median."""
    if not values:
        raise ValueError("no values to summarise")
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return Spread(statistics.median(values), q1, q3, min(values), max(values), len(values), median_interval(values))


def median_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics x(k) and x(n+1-k), with k as large as
    keeps the coverage, 1 - 2 P(Binomial(n, 1/2) < k), at least ``level`` (the whole range when n is too small
    for that). The pairs' ratios are not normal (a slow second makes one pair an outlier), hence no t-interval."""
    ordered = sorted(values)
    n, k = len(ordered), 1
    while k < (n + 1) // 2 and 2 * math.fsum(math.comb(n, i) for i in range(k + 1)) / 2**n <= 1 - level:
        k += 1
    return ordered[k - 1], ordered[n - k]


def pairs(slices: Sequence[Slice]) -> list[tuple[Slice, Slice]]:
    """Slices two by two as they ran, each pair put as (A's slice, B's slice) whichever ran first."""
    paired = []
    for first, second in zip(slices[::2], slices[1::2], strict=False):
        if first.side == second.side:
            raise ValueError("adjacent slices of one pair loaded the same side")
        paired.append((first, second) if first.side == 0 else (second, first))
    return paired


@dataclass(frozen=True)
class Comparison:
    """What the paired slices say: ratios per pair, and each side's own medians and totals."""

    ratio: Spread  # RPS(A) / RPS(B) per pair
    cpu_delta_us: Spread | None  # CPU(A) - CPU(B) per request, µs, per pair; None without CPU figures
    rps: tuple[float, float]  # median over each side's slices
    cpu_ms: tuple[float | None, float | None]
    requests: tuple[int, int]
    errors: tuple[int, int]
    other: Spread  # other processes' share of a core over all slices
    idle_cpu_ms: tuple[float, float]  # median over each side's slices of the other (idle) side's CPU per request


def compare(slices: Sequence[Slice]) -> Comparison:
    """Summarise measured slices (warm-ups left out) in ABBA order."""
    together = pairs(slices)
    deltas = [
        (a.cpu_ms_per_req - b.cpu_ms_per_req) * 1000.0
        for a, b in together
        if a.cpu_ms_per_req is not None and b.cpu_ms_per_req is not None
    ]
    sides = [[s for s in slices if s.side == side] for side in (0, 1)]
    cpus = [[s.cpu_ms_per_req for s in one if s.cpu_ms_per_req is not None] for one in sides]
    return Comparison(
        ratio=spread([a.rps / b.rps if b.rps else 0.0 for a, b in together]),
        cpu_delta_us=spread(deltas) if deltas else None,
        rps=(statistics.median(s.rps for s in sides[0]), statistics.median(s.rps for s in sides[1])),
        cpu_ms=(statistics.median(cpus[0]) if cpus[0] else None, statistics.median(cpus[1]) if cpus[1] else None),
        requests=(sum(s.requests for s in sides[0]), sum(s.requests for s in sides[1])),
        errors=(sum(s.errors for s in sides[0]), sum(s.errors for s in sides[1])),
        other=spread([s.other_share for s in slices]),
        idle_cpu_ms=(
            statistics.median(s.idle_cpu_ms_per_req for s in sides[0]),
            statistics.median(s.idle_cpu_ms_per_req for s in sides[1]),
        ),
    )


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Side:
    """One of the two running candidates."""

    candidate: run.Candidate
    port: int
    groups: dict[str, int]  # role -> process group: "proxy" and its sidecars'


def candidates(spec: str, slices: int) -> tuple[run.Candidate, run.Candidate]:
    """The two candidates of ``--paired A,B`` (the same name twice is an A/A test); exit on a mistake in them
    or in ``--slices``."""
    if slices < 2 or slices % 2:
        raise SystemExit(f"--slices must be even and at least 2 (a multiple of 4 balances ABBA): got {slices}")
    names = [name.strip() for name in spec.split(",")]
    by_name = {c.name: c for c in run.CANDIDATES}
    if len(names) != 2 or not all(names):
        raise SystemExit(f"--paired takes exactly two candidate names, A,B: got {spec!r}")
    for name in names:
        candidate = by_name.get(name)
        if candidate is None:
            raise SystemExit(f"--paired: unknown candidate {name!r}; one of {', '.join(by_name)}")
        if candidate.launch is None or candidate.shared:
            raise SystemExit(f"--paired: {name} is not a proxy pinned to the proxy core; pair two that are")
    return by_name[names[0]], by_name[names[1]]


def start_side(ctx: run.Context, candidate: run.Candidate, index: int, stack: contextlib.ExitStack) -> Side:
    """Start one side, pinned to the proxy core as run.py pins a proxy; ``index`` keeps A's and B's logs apart."""
    groups: dict[str, int] = {}
    port, service, _ = run.start_candidate(ctx, candidate, stack, index, groups)
    return Side(candidate, port, {**groups, "proxy": service.pid})


def measure_slice(settings: run.Settings, upstream_pid: int, loaded: Side, idle: Side, index: int) -> Slice:
    """One slice of run.py's non-streaming c=64 load on ``loaded``."""
    # The idle side's groups are charged to the benchmark, not counted as other processes' CPU.
    idle_groups = {f"idle-{role}": pid for role, pid in idle.groups.items()}
    pgids = {"upstream": upstream_pid, **loaded.groups, **idle_groups}
    cell = next(c for c in run.CELLS if c.key == CELL_KEY)
    report = run.run_cell(settings, cell, loaded.port, pgids, loaded.candidate.load_args)
    idle_cpu_s = sum(float(report["cpu_s"][str(pid)]) for pid in idle_groups.values())
    return Slice(
        side=index,
        rps=float(report["rps"]),
        cpu_ms_per_req=run.cpu_per_request(report),
        requests=int(report["requests"]),
        errors=int(report["errors"]),
        other_share=run.other_share(report),
        idle_cpu_ms_per_req=idle_cpu_s * 1000.0 / max(1, int(report["requests"])),
    )


def measure(settings: run.Settings, sides: Sequence[Side], upstream_pid: int, slices: int) -> list[Slice]:
    """A warm-up slice for each side (discarded), then ``slices`` slices in ABBA order."""
    for index, side in enumerate(sides):
        measure_slice(settings, upstream_pid, side, sides[1 - index], index)
    measured = []
    for number, index in enumerate(abba(slices), start=1):
        one = measure_slice(settings, upstream_pid, sides[index], sides[1 - index], index)
        measured.append(one)
        cpu = "—" if one.cpu_ms_per_req is None else f"{one.cpu_ms_per_req:.3f}"
        print(
            f"  slice {number:>2}/{slices} {'AB'[index]} {sides[index].candidate.name:<18} rps={one.rps:.0f} "
            f"cpu={cpu}ms/req errors={one.errors} other={one.other_share:.0%}",
            flush=True,
        )
    return measured


# --------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _us(value: float) -> str:
    return f"{value:+.0f} µs"


def _cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def target(names: tuple[str, str], summary: Comparison) -> run.Target:
    """The issue's target on this comparison: A's throughput at least 97% of B's, and no errors."""
    label = f"{names[0]} / {names[1]} throughput, non-stream c=64"
    ratio = summary.ratio
    value = f"{_pct(ratio.median)} ({LEVEL:.0%} CI {_pct(ratio.ci[0])}–{_pct(ratio.ci[1])}, {ratio.n} pairs)"
    goal = f"≥ {GOAL:.0%}"
    if sum(summary.errors):
        return run.Target(label, value, goal, f"n/a: {sum(summary.errors)} errors")
    # The median alone would pass or fail on noise: only an interval wholly on one side of the goal decides.
    if ratio.n < MIN_PAIRS:
        return run.Target(label, value, goal, f"unresolved (fewer than {MIN_PAIRS} pairs)")
    if ratio.ci[0] >= GOAL:
        return run.Target(label, value, goal, "pass")
    if ratio.ci[1] < GOAL:
        return run.Target(label, value, goal, "FAIL")
    return run.Target(label, value, goal, f"unresolved (median {'≥' if ratio.median >= GOAL else '<'} goal)")


def paired_table(names: tuple[str, str], summary: Comparison) -> list[str]:
    """The 'paired' section: each side's medians and totals, then the figures taken pair by pair."""
    ratio, delta, other = summary.ratio, summary.cpu_delta_us, summary.other
    rows = [
        ("median RPS over its slices", f"{summary.rps[0]:.0f}", f"{summary.rps[1]:.0f}"),
        ("median CPU ms/req", _cpu(summary.cpu_ms[0]), _cpu(summary.cpu_ms[1])),
        ("the idle side's CPU during its slices, ms/req", _cpu(summary.idle_cpu_ms[0]), _cpu(summary.idle_cpu_ms[1])),
        ("requests measured", str(summary.requests[0]), str(summary.requests[1])),
        ("errors", str(summary.errors[0]), str(summary.errors[1])),
    ]
    lines = [
        "## paired",
        "",
        f"| | A: `{names[0]}` | B: `{names[1]}` |",
        "|---|---|---|",
        *(f"| {label} | {a} | {b} |" for label, a, b in rows),
        "",
        f"| per pair (A and B slices side by side) | median | {LEVEL:.0%} CI of the median | IQR | min – max |",
        "|---|---|---|---|---|",
        _spread_row(f"RPS(A) / RPS(B), {ratio.n} pairs", ratio, _pct),
    ]
    if delta is not None:
        lines.append(_spread_row("CPU(A) − CPU(B) per request", delta, _us))
    lines.append(_spread_row("other processes' CPU, % of a core, per slice", other, lambda v: f"{v:.0%}"))
    return lines + [""]


def _spread_row(label: str, one: Spread, fmt: Callable[[float], str]) -> str:
    cells = [fmt(one.median), f"{fmt(one.ci[0])} – {fmt(one.ci[1])}"]
    cells += [f"{fmt(one.q1)} – {fmt(one.q3)}", f"{fmt(one.low)} – {fmt(one.high)}"]
    return f"| {label} | " + " | ".join(cells) + " |"


def pairs_table(slices: Sequence[Slice]) -> list[str]:
    """Every pair as measured, for reading the drift."""
    lines = [
        "## pairs",
        "",
        "| pair | order | A RPS | B RPS | A / B | A CPU ms/req | B CPU ms/req | other CPU % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, (a, b) in enumerate(pairs(slices), start=1):
        order = "A B" if slices[2 * number - 2].side == 0 else "B A"
        other = max(a.other_share, b.other_share)
        lines.append(
            f"| {number} | {order} | {a.rps:.0f} | {b.rps:.0f} | {_pct(a.rps / b.rps if b.rps else 0.0)} "
            f"| {_cpu(a.cpu_ms_per_req)} | {_cpu(b.cpu_ms_per_req)} | {other:.0%} |"
        )
    return lines + [""]


def render(
    settings: run.Settings,
    sides: Sequence[Side],
    slices: Sequence[Slice],
    started: dt.datetime,
    elapsed_s: float,
) -> str:
    """The whole paired report."""
    names = (sides[0].candidate.name, sides[1].candidate.name)
    summary = compare(slices)
    lines = [
        "# tiergate paired benchmark",
        "",
        *run.machine_facts(settings, started, elapsed_s),
        f"- pinning: {run.pinning()}; both proxies on core {run.PROXY_CORE} (one loaded at a time), "
        f"upstream + load generator on core {run.LOAD_CORE}",
        f"- slices: a warm-up slice each, then {len(slices)} slices in the order A B B A A B B A ...; each is "
        f"bench/run.py's non-streaming c=64 cell with {settings.warmup_s:g} s warm-up and "
        f"min({settings.max_requests} requests, {settings.duration_s:g} s)",
        *(f"- {'AB'[i]}: `{side.candidate.name}`, {side.candidate.description}" for i, side in enumerate(sides)),
        "",
        *paired_table(names, summary),
        "## target",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
        *run.target_rows([target(names, summary)]),
        "",
        *pairs_table(slices),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(settings: run.Settings, pair: tuple[run.Candidate, run.Candidate], slices: int, slice_s: float) -> int:
    """Run the paired comparison of ``pair`` (see :func:`candidates`), write its report; return the exit code."""
    settings = replace(settings, only=tuple(c.name for c in pair), duration_s=slice_s, warmup_s=SLICE_WARMUP_S)
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    print(f"raw output: {settings.raw_dir}", flush=True)
    try:
        with run.upstream_service(settings) as (upstream, port), contextlib.ExitStack() as stack:
            ctx = run.Context(settings, port)
            sides = [start_side(ctx, candidate, index, stack) for index, candidate in enumerate(pair)]
            measured = measure(settings, sides, upstream.pid, slices)
    except KeyboardInterrupt:
        print("interrupted; all processes stopped", file=sys.stderr)
        return 130
    except (run.Skip, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"paired run failed: {exc}", file=sys.stderr)
        return 1
    markdown = render(settings, sides, measured, started, time.monotonic() - clock)
    raw: dict[str, Any] = {"candidates": [s.candidate.name for s in sides], "slices": [asdict(s) for s in measured]}
    (settings.raw_dir / "paired.json").write_text(json.dumps(raw, indent=1))
    settings.output.write_text(markdown)
    print("\n" + markdown)
    return 0
