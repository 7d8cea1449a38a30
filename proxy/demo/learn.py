"""The demo's first act: a simulated week of an app's tagged traffic, and the classifier trained on it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TextIO

from proxy.app import create_app
from proxy.classify import report as classify_report
from proxy.classify.features import seed_of
from proxy.classify.training import train_from_ledger
from proxy.fakes import traffic
from proxy.loopback import serve
from proxy.registry import Registry
from proxy.settings import Settings

# A simulated week of the app's header-tagged traffic: what the classifier learns from.
APP_TRAFFIC_CALLS = 12 * len(traffic.SITES)  # 12 calls per call site: 24 or more per task
MIN_CONFIDENCE = 0.7


async def learn(registry: Registry, settings: Settings, tmp: Path, out: TextIO) -> str:
    """Run the app's simulated tagged traffic through tiergate into its own ledger, train the classifier on
    it as ``tiergate classifier train`` does, print the training report; the model file's path."""
    from openai import AsyncOpenAI

    week = replace(settings, db=str(tmp / "app-week.db"))
    async with serve(create_app(week, registry)) as proxy_url:
        client = AsyncOpenAI(base_url=proxy_url + "/v1", api_key="sk-demo-client", max_retries=0)
        for task, body in traffic.calls(APP_TRAFFIC_CALLS, seed=1):
            await client.chat.completions.create(**body, extra_headers={"X-Task-Type": task})
        await client.close()
    model = str(tmp / "classifier.json")
    trained = train_from_ledger(week.db, registry, seed_of(settings.feature_key), model)
    print(
        f"A simulated week of an app's tagged traffic: {APP_TRAFFIC_CALLS} calls from "
        f"{len(traffic.SITES)} call sites, through tiergate\n"
        f"$ tiergate classifier train --db app-week.db\n{classify_report.training(trained, 'table')}",
        end="",
        file=out,
    )
    return model
