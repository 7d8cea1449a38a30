"""What writing the ledger costs the serving process: CPU per row, and how long it stalls the event loop.

    python bench/ledger_cost.py                   # 2,000 rows/s for 10 s, one core, about 30 s in all
    python bench/ledger_cost.py --rate 4000 --seconds 5 --json

One process pinned to one core (as bench/run.py pins tiergate), an event loop that submits realistic
finished requests (bench/ledger_size.py's traffic, built before the measured phase) to a real
``LedgerWriter`` at a steady rate, one submit per request as the request path does, spread over 1 ms
ticks. Two phases of the same length and rate: without a ledger (the records are dropped), then
with one. The difference is the ledger's:

- **CPU per row**: the process's CPU time (every thread: the loop's settling, the writer's thread,
  SQLite) over the rows, minus the phase without a ledger;
- **loop stalls**: a 1 ms timer on the loop measures how late it runs (p50, p99, p99.9, max): a
  thread holding the GIL, or work on the loop, delays every request's next step by that much (a
  stream's first byte, a response). The writer's file gets ``--rows-before`` rows first (default
  200,000) so the indexes are as deep as a ledger in use.

bench/run.py's tiergate vs tiergate-noledger comparison is the figure of record; this one is steadier
(no HTTP, no other process) and says where the cost is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ledger_size  # noqa: E402  (bench/ledger_size.py: the realistic traffic)

from proxy import pricing  # noqa: E402
from proxy.ledger.records import RequestRecord  # noqa: E402
from proxy.ledger.writer import LedgerWriter  # noqa: E402

TICK_S = 0.001


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _phase(records: list[RequestRecord], rate: float, writer: LedgerWriter | None) -> dict[str, Any]:
    """Submit ``records`` at ``rate`` per second; return CPU and the ticker's lateness."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()

    def tick(expected: float) -> None:
        now = loop.time()
        late.append(now - expected)
        if not done.is_set():
            loop.call_at(now + TICK_S, tick, now + TICK_S)

    start_cpu, start = _cpu(), loop.time()
    loop.call_at(start + TICK_S, tick, start + TICK_S)
    sent = 0
    while sent < len(records):
        due = min(int((loop.time() - start) * rate) + 1, len(records))
        for record in records[sent:due]:
            if writer is not None:
                writer.submit(record)
        sent = due
        await asyncio.sleep(TICK_S)
    if writer is not None:
        while writer.health()["queued"]:
            await asyncio.sleep(TICK_S)
    done.set()
    elapsed = loop.time() - start
    cpu = _cpu() - start_cpu
    late_ms = sorted(x * 1000 for x in late)

    def at(p: float) -> float:
        return late_ms[min(int(p * len(late_ms)), len(late_ms) - 1)]

    return {
        "rows": len(records),
        "seconds": elapsed,
        "cpu_s": cpu,
        "late_p50_ms": at(0.50),
        "late_p99_ms": at(0.99),
        "late_p999_ms": at(0.999),
        "late_max_ms": late_ms[-1],
        "late_mean_ms": statistics.fmean(late_ms),
    }


async def run(args: argparse.Namespace, db: str) -> dict[str, Any]:
    registry = ledger_size._registry()
    pricing.warm_up()
    traffic = ledger_size.Traffic(registry, args.seed)
    pricer = pricing.Pricer(registry.prices, pricing.price_ids(registry))
    n = int(args.rate * args.seconds)
    now = time.time()
    before = list(traffic.records(args.rows_before, now - 86400, now - 60)) if args.rows_before else []
    null_records = list(traffic.records(n, now - 60, now))
    records = list(traffic.records(n, now - 60, now))
    writer = LedgerWriter(db, pricer)
    await writer.start()
    for i in range(0, len(before), 2000):
        for record in before[i : i + 2000]:
            writer.submit(record)
        while writer.health()["queued"] > 2000:
            await asyncio.sleep(0.005)
    while writer.health()["queued"]:
        await asyncio.sleep(0.005)
    del before
    # estimates load a tokenizer table once (~0.5 s): not a per-row cost
    await asyncio.sleep(0.5)
    print("measuring without a ledger", file=sys.stderr, flush=True)
    without = await _phase(null_records, args.rate, None)
    print("measuring with the ledger", file=sys.stderr, flush=True)
    with_ledger = await _phase(records, args.rate, writer)
    await writer.close()
    health = writer.health()
    extra = with_ledger["cpu_s"] - without["cpu_s"] * with_ledger["seconds"] / without["seconds"]
    return {
        "rate": args.rate,
        "rows": n,
        "written": health["written"],
        "dropped": health["dropped"],
        "without": without,
        "with": with_ledger,
        "ledger_cpu_us_per_row": extra / n * 1e6,
    }


def render(result: dict[str, Any]) -> str:
    w, o = result["with"], result["without"]
    lines = [
        f"{result['rows']:,} rows at {result['rate']:,.0f}/s (written {result['written']:,}, "
        f"dropped {result['dropped']})",
        f"ledger CPU per row: {result['ledger_cpu_us_per_row']:.1f} µs "
        f"(process CPU {w['cpu_s']:.3f} s with the ledger, {o['cpu_s']:.3f} s without)",
        "loop lateness of a 1 ms timer, ms:       p50     p99   p99.9     max    mean",
    ]
    for name, phase in (("without a ledger", o), ("with the ledger", w)):
        lines.append(
            f"  {name:<36} {phase['late_p50_ms']:7.3f} {phase['late_p99_ms']:7.3f} {phase['late_p999_ms']:7.3f} "
            f"{phase['late_max_ms']:7.3f} {phase['late_mean_ms']:7.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="rows per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rows-before", type=int, default=200_000, help="rows written before measuring")
    parser.add_argument("--core", type=int, default=0, help="the one core to run on (-1: any)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory(prefix="tiergate-ledger-cost-") as folder:
        result = asyncio.run(run(args, os.path.join(folder, "ledger.db")))
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
