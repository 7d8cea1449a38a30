"""``tiergate demo``: the whole product on loopback, with no API keys and no network.

It starts embedded fake upstreams (OpenAI-compatible and Anthropic) and tiergate itself on 127.0.0.1.
First a simulated week of an app's header-tagged traffic (``proxy.fakes.traffic``) runs through it, and
the classifier is trained on that ledger (``tiergate classifier train``). Then, with the classifier
loaded, a small workload goes through the official ``openai`` SDK exactly as an app would send it
(tagged calls for several task types, untagged calls that a rule or the classifier places, one that
nothing recognises, one stream, a ticket the local lookup table labels, and one call made during a
simulated OpenAI outage, which falls over to Anthropic) and it prints what ran where. Then a dashboard
narrative is precomputed, served from the store, made stale by new data and regenerated in the
background, and a repeated summary is answered by the exact cache (``proxy.demo.precompute``). Then the
evals, the workload audit of the demo's own ledger (``tiergate audit --by task``), read once tiergate
has shut down and its ledger writer drained, and the classifier's shadow agreement (``audit
--classifier``). Last, the bill (``proxy.demo.bill``): ``calls`` generated calls shaped like a real app's
(``proxy.demo.generator``) on a ledger of their own, and their audit by tier and by task.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from proxy import rules
from proxy.app import create_app
from proxy.classify import agreement
from proxy.classify import report as classify_report
from proxy.demo import bill, precompute
from proxy.demo.learn import MIN_CONFIDENCE, learn
from proxy.demo.workload import WORKLOAD, call, outage, print_rows, upstream_environ
from proxy.evals import candidates, golden
from proxy.evals.recommend import recommend
from proxy.evals.recommend import render as render_recommendations
from proxy.evals.report import headline
from proxy.evals.runner import evaluate
from proxy.fakes.anthropic import FakeAnthropic
from proxy.fakes.openai import FakeOpenAI
from proxy.fakes.oracle import Oracle, chain
from proxy.ledger.report import report as audit_report
from proxy.loopback import serve
from proxy.registry import ClassifierSettings, Registry
from proxy.settings import Settings

__all__ = ["WORKLOAD", "run_demo"]


async def run_demo(config: str, out: TextIO, evals: str = "evals", calls: int = bill.DEFAULT_CALLS) -> int:
    """Run the sample workload, print one line per call, then the audit, then the bill of ``calls``
    generated calls (0: none); 0 when every generated call succeeded."""
    from openai import AsyncOpenAI  # the demo's client is the official SDK, as in a real app

    evals_dir = Path(evals)
    oracle = Oracle.load(evals_dir, rules.load(config, environ={})) if evals_dir.is_dir() else None
    fake = FakeOpenAI(choose=chain(outage, precompute.slow_model, oracle.choose if oracle else None))
    async with serve(fake) as upstream_url, serve(FakeAnthropic()) as anthropic_url:
        registry = rules.load(config, environ=upstream_environ(upstream_url, anthropic_url))
        with tempfile.TemporaryDirectory(prefix="tiergate-demo-") as tmp:
            settings = Settings(config=config, db=str(Path(tmp) / "demo.db"))
            model = await learn(registry, settings, Path(tmp), out)
            classified = replace(registry, classifier=ClassifierSettings(model, min_confidence=MIN_CONFIDENCE))
            async with serve(create_app(settings, precompute.with_exact_cache(classified))) as proxy_url:
                print(
                    f"\ntiergate on {proxy_url}  ->  fake OpenAI on {upstream_url}, fake Anthropic on {anthropic_url}\n",
                    file=out,
                )
                client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
                rows = [await call(client, c) for c in WORKLOAD]
                await client.close()
                print_rows(rows, out)
                await precompute.tour(proxy_url, out)
            if oracle is not None:
                await _evals(registry, evals_dir, settings.db, out)
            # The proxy has stopped: its lifespan closed the ledger writer, so every row is on disk.
            print(f"\n$ tiergate audit --by task\n{audit_report(settings.db, by='task')}", end="", file=out)
            if oracle is not None:
                found = recommend(settings.db, registry)
                print(f"\n$ tiergate audit --recommend\n{render_recommendations(found, 'table')}", end="", file=out)
            shadow = classify_report.agreement(agreement.summarize(settings.db), "table")
            print(f"\n$ tiergate audit --classifier\n{shadow}", end="", file=out)
            failed = await bill.run_bill(config, calls, str(Path(tmp) / "bill.db"), out) if calls else 0
    return 1 if failed else 0


# (task, candidate tier): one re-tiering its golden set supports, one it does not
EVALS = (("summary", "small"), ("narrative", "small"))


async def _evals(registry: Registry, evals_dir: Path, db: str, out: TextIO) -> None:
    """Each of ``EVALS`` as ``tiergate eval TASK --tier T`` runs it: the golden set, side by side."""
    print("\nThe fake models are a simulation of different skill (proxy/fakes/oracle.py), not a measurement:", file=out)
    for task, tier in EVALS:
        cases = golden.load(evals_dir / task)
        candidate = candidates.with_tier(registry, task, tier)
        result = await evaluate(cases, candidate, current_registry=registry, db=db)
        print(f"$ tiergate eval {task} --tier {tier}\n{headline(result)}", file=out)
